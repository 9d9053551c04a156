"""What the benchmarks share: lab names, percentiles, CPU hogs and CPU accounting, the RESULT line."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from typing import Any, Iterable, Sequence

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

    def __enter__(self) -> "Hog":
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
        self.percent = [100 * (self._cpu(p) - s) / elapsed for p, s in zip(self.procs, self._start)]
        return self.percent
