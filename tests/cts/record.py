"""The shared record: one line per thing that happened, from the service script and the harness.

The record is one file under the lab root, a host folder every node sees, and every namespace
reads the same wall clock, so lines from all nodes and from the harness order by time. Each line
is ``TIME_NS SOURCE KIND [ARGS...]``:

- SOURCE ``n1``..``nN``: the service's user script on that node (`tests.cts.service`):
  ``start TOKEN`` right before it launches the server, ``stop TOKEN`` once the server is gone,
  ``status TOKEN`` at each status check, ``isolated`` from the node's isolation script;
- SOURCE ``harness``: the faults and operations of the harness (`tests.cts.cluster`), e.g.
  ``crash n1``, ``freeze n2``, ``kill-server n1 PID``, ``kill n3 lock``, ``expect-down begin
  REASON``, ``scenario NAME begin``.

Lines are appended with O_APPEND in one short write each, so writers on several nodes never
interleave within a line.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HARNESS", "Event", "Record"]

#: the SOURCE of the harness's own lines
HARNESS = "harness"


@dataclass(frozen=True)
class Event:
    """One line of the record."""

    time_ns: int
    source: str
    kind: str
    args: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """The node a line is about: its source for a script line, its first argument for a
        harness line about a node (``crash n1``)."""
        if self.source != HARNESS:
            return self.source
        return self.args[0] if self.args else ""

    def __str__(self) -> str:
        return " ".join((str(self.time_ns), self.source, self.kind, *self.args))


def parse_line(line: str) -> Event | None:
    """An event, or None for a line that is not one."""
    parts = line.split()
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return Event(int(parts[0]), parts[1], parts[2], tuple(parts[3:]))


class Record:
    """The record file: the harness appends to it, the checker reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def note(self, kind: str, *args: object) -> int:
        """Append a harness line now; returns its time (ns since the epoch)."""
        stamp = time.time_ns()
        line = " ".join((str(stamp), HARNESS, kind, *map(str, args))) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return stamp

    def events(self, since_ns: int = 0) -> list[Event]:
        """Every event at or after `since_ns`, in time order."""
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        complete = text[:text.rfind("\n") + 1]  # a line without its newline is being written
        found = [e for e in map(parse_line, complete.splitlines()) if e and e.time_ns >= since_ns]
        return sorted(found, key=lambda e: e.time_ns)
