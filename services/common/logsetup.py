"""Daemon logging with the seed's switches: `-t console|syslog|bus|all` and
`-l LOG_EMERG..LOG_DEBUG`.

Python's logging has no NOTICE, ALERT or EMERG; they are added here so the eight syslog levels map
one to one, and the syslog handler sends the matching priority.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import ClassVar

from skyge.services.common.paths import NodePaths
from skyge.services.common.publisher import LocalBusPublisher

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

    _PRIORITIES: ClassVar[dict[str, str]] = {
        "EMERG": "emerg", "ALERT": "alert", "CRITICAL": "crit", "ERROR": "err",
        "WARNING": "warning", "NOTICE": "notice", "INFO": "info", "DEBUG": "debug"}

    def mapPriority(self, levelName: str) -> str:
        return self._PRIORITIES.get(levelName, "warning")


#: the log bus of each daemon, on its own node (created by the bus daemon at start)
LOG_BUSES = {"heartbeat": "log.jiluos.skyge.com", "bus": "log.messagebus.skyge.com",
             "lock": "log.buluos.skyge.com", "ha": "log.ha.skyge.com", "emon": "log.emon.skyge.com"}


class BusLogHandler(logging.Handler):
    """Ships log records to the daemon's log bus on the local bus daemon (`-t bus|all`).

    Never blocks and never raises into the caller: `emit` turns the record into JSON and offers
    it to a `LocalBusPublisher` (bounded queue, a worker thread, see `publisher.py`). When the
    queue is full the newest record is dropped and counted (`dropped`); while the bus daemon is
    unreachable the queued records wait (up to `QUEUE_LIMIT`) and are shipped once it is back.
    Records the bus refuses are dropped and counted. After drops, the next batch that gets
    through carries a WARNING record saying how many were lost. Records of the worker thread
    itself and of gRPC's loggers are not shipped (no feedback loops).
    """

    QUEUE_LIMIT = 1000
    BATCH = 256
    RETRY_S = 1.0
    TIMEOUT_S = 2.0
    MAX_MESSAGE = 16 << 10  # characters of a record's text shipped (the rest is cut)

    def __init__(self, daemon: str, socket_path: Path, bus: str | None = None) -> None:
        super().__init__()
        self.daemon, self.socket_path = daemon, socket_path
        self.bus = bus or LOG_BUSES.get(daemon, f"log.{daemon}.skyge.com")
        self.publisher = LocalBusPublisher(
            socket_path, name="log-bus", limit=self.QUEUE_LIMIT, batch=self.BATCH,
            timeout_s=self.TIMEOUT_S, retry_s=self.RETRY_S, keep="oldest", notice=self._notice)

    @property
    def dropped(self) -> int:
        return self.publisher.dropped

    @property
    def sent(self) -> int:
        return self.publisher.sent

    def record_data(self, record: logging.LogRecord) -> bytes:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if len(text) > self.MAX_MESSAGE:
            text = text[:self.MAX_MESSAGE] + " [cut]"
        return json.dumps({"time_unix_ns": int(record.created * 1e9), "daemon": self.daemon,
                           "level": record.levelname, "logger": record.name,
                           "pid": record.process, "message": text}).encode()

    def emit(self, record: logging.LogRecord) -> None:
        if self.publisher.in_worker() or record.name.startswith("grpc"):
            return
        try:
            data = self.record_data(record)
        except Exception:
            self.publisher.lose(1)
            return
        self.publisher.offer(self.bus, data)

    def _notice(self, lost: int) -> bytes:
        return json.dumps({"time_unix_ns": time.time_ns(), "daemon": self.daemon,
                           "level": "WARNING", "logger": "skyge.logsetup", "pid": os.getpid(),
                           "message": f"{lost} log records were dropped (bus unreachable, queue "
                                      f"full or refused)"}).encode()

    def close(self) -> None:
        """Ship what is queued (bounded by TIMEOUT_S), then stop the worker."""
        self.publisher.close()
        super().close()


def setup_logging(daemon: str, log_type: str, level_name: str, *,
                  console_file: Path | None = None, node_root: Path | str | None = None
                  ) -> logging.Logger:
    """Configure the root logger for a daemon and return its logger.

    `console_file` replaces the terminal when the daemon runs in the background (`-d`), so console
    records are not lost to /dev/null. `node_root` is the node root (default: $SKYGE_ROOT, else
    /): log type `bus` ships records to the bus daemon's socket under it.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
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
        where = node_root if node_root is not None else os.environ.get("SKYGE_ROOT", "/")
        root.addHandler(BusLogHandler(daemon, NodePaths.at(where).socket("bus")))
    logger = logging.getLogger(program)
    for note in notes:
        logger.warning(note)
    return logger
