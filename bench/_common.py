"""What the benchmarks share: lab names, percentiles, CPU hogs and CPU accounting, moves of an
address between nodes, daemon log lines on a timeline, the RESULT line."""
from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Iterable, Mapping, Sequence

import psutil


def lab_name(prefix: str) -> str:
    """A unique lab name (bench labs start with "b", tests with "t")."""
    return f"b{prefix}{uuid.uuid4().hex[:6]}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def result(data: dict[str, Any]) -> None:
    """The benchmark's last line."""
    sys.stdout.flush()
    print("RESULT " + json.dumps(data, sort_keys=True), flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Hog:
    """One busy-looping process per CPU (normal priority): every core saturated.

    Separate interpreters (not fork: the benchmark holds gRPC channels, which do not survive
    a fork), killed on exit."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count or os.cpu_count() or 1
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Hog:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(5)


class CpuMeter:
    """CPU time of processes between `start()` and `stop()`, as percent of one core each."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self._start: list[float] = []
        self._t0 = 0.0
        self.percent: list[float] = []

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = [self._cpu(p) for p in self.procs]

    def stop(self) -> list[float]:
        elapsed = time.monotonic() - self._t0
        self.percent = [100 * (self._cpu(p) - s) / elapsed
                        for p, s in zip(self.procs, self._start, strict=True)]
        return self.percent


class Move(NamedTuple):
    """An address appearing on `target` while `source` was the last node that had it."""

    time_ns: int
    source: str
    target: str


def address_moves(events: Mapping[str, Iterable[tuple[int, bool]]],
                  holder: str | None = None) -> list[Move]:
    """The moves of one address, from each node's (time ns, added?) events (an AddressMonitor's).

    `holder` is the node that had it before the first event (None: the first add is no move).
    Only an add on another node is a move: a removal and a re-add on the same node is not."""
    merged = sorted((t, key) for key, node_events in events.items()
                    for t, added in node_events if added)
    moves = []
    for t, key in merged:
        if holder is not None and key != holder:
            moves.append(Move(t, holder, key))
        holder = key
    return moves


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_lines(path: Path, pattern: str, since_ns: int = 0) -> list[tuple[int, str]]:
    """(time ns, rest of the line) of the lines of a daemon log (local `asctime` first, as the
    daemons write it) that match the regular expression `pattern`, from `since_ns` on."""
    if not path.exists():
        return []
    wanted, found = re.compile(pattern), []
    for line in path.read_text(errors="replace").splitlines():
        stamp = _LOG_TIME.match(line)
        if stamp and wanted.search(line):
            moment = datetime.datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f")
            t = int(moment.timestamp() * 1e9)
            if t >= since_ns:
                found.append((t, line[stamp.end():]))
    return found


#: per daemon, its log lines that explain a change of owner: HA state changes, lock terms and
#: lost locks, heartbeat warnings (a member left)
OWNERSHIP_LOG_LINES = {"ha": r" -> |WARNING|ERROR",
                       "lock": r"term|lost|fenced|fencing|WARNING|ERROR",
                       "heartbeat": r"WARNING|ERROR|left"}


def ownership_log_lines(node_roots: Mapping[str, Path], since_ns: int,
                        until_ns: int | None = None) -> list[tuple[int, str, str]]:
    """(time ns, node, line) of the OWNERSHIP_LOG_LINES of lab nodes ({"n1": root}) in a window."""
    return [(t, key, line) for key, root in node_roots.items()
            for daemon, pattern in OWNERSHIP_LOG_LINES.items()
            for t, line in log_lines(root / "var" / "log" / f"skyge-{daemon}.log", pattern,
                                     since_ns)
            if until_ns is None or t <= until_ns]


def timeline(entries: Iterable[tuple[int, str, str]], t0_ns: int,
             limit: int | None = None) -> list[str]:
    """(time ns, where, what) entries in time order, as "+12.3 ms  n2  what" (relative to t0);
    past `limit` lines, the rest is counted in a last line."""
    lines = [f"{(t - t0_ns) / 1e6:+10.1f} ms  {where:<6} {what}"
             for t, where, what in sorted(entries)]
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"... {len(lines) - limit} more"]
    return lines
