"""Daemon logging with the seed's switches: `-t console|syslog|bus|all` and `-l LOG_EMERG..LOG_DEBUG`.

Python's logging has no NOTICE, ALERT or EMERG; they are added here so the eight syslog levels map
one to one, and the syslog handler sends the matching priority.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

# Syslog level name -> Python logging level (ordered like syslog: EMERG is the most severe).
SYSLOG_LEVELS = {
    "LOG_EMERG": 58,
    "LOG_ALERT": 55,
    "LOG_CRIT": logging.CRITICAL,
    "LOG_ERR": logging.ERROR,
    "LOG_WARNING": logging.WARNING,
    "LOG_NOTICE": 25,
    "LOG_INFO": logging.INFO,
    "LOG_DEBUG": logging.DEBUG,
}
NOTICE = SYSLOG_LEVELS["LOG_NOTICE"]
LOG_TYPES = ("console", "syslog", "bus", "all")
SYSLOG_SOCKET = "/dev/log"

for _name, _level in SYSLOG_LEVELS.items():
    if logging.getLevelName(_level).startswith("Level "):
        logging.addLevelName(_level, _name[4:])


class _SyslogHandler(logging.handlers.SysLogHandler):
    """Sends each record with the syslog priority of its level (NOTICE stays NOTICE, etc.)."""

    _PRIORITIES = {"EMERG": "emerg", "ALERT": "alert", "CRITICAL": "crit", "ERROR": "err",
                   "WARNING": "warning", "NOTICE": "notice", "INFO": "info", "DEBUG": "debug"}

    def mapPriority(self, levelName: str) -> str:  # noqa: N802 (logging's API name)
        return self._PRIORITIES.get(levelName, "warning")


def setup_logging(daemon: str, log_type: str, level_name: str, *,
                  console_file: Path | None = None) -> logging.Logger:
    """Configure the root logger for a daemon and return its logger.

    `console_file` replaces the terminal when the daemon runs in the background (`-d`), so console
    records are not lost to /dev/null.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(SYSLOG_LEVELS[level_name])
    program = f"skyge-{daemon}"
    fmt = logging.Formatter(f"%(asctime)s {program}[%(process)d] %(levelname)s: %(message)s")
    notes: list[str] = []

    if log_type in ("console", "all", "bus"):
        if console_file is not None:
            console_file.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(console_file)
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if log_type in ("syslog", "all"):
        if os.path.exists(SYSLOG_SOCKET):
            syslog = _SyslogHandler(address=SYSLOG_SOCKET,
                                    facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            syslog.setFormatter(logging.Formatter(f"{program}[%(process)d]: %(message)s"))
            root.addHandler(syslog)
        else:
            notes.append(f"no syslog socket at {SYSLOG_SOCKET}: syslog records are not written")
    if log_type in ("bus", "all"):
        notes.append("log type 'bus': the bus daemon does not collect logs yet; "
                     "records go to the console only")
    logger = logging.getLogger(program)
    for note in notes:
        logger.warning(note)
    return logger
