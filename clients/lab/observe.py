"""Watching a lab from outside the daemons: which node holds an address when (`ip monitor` in
each node namespace), and what a client's prober was answered by whom. Benchmarks and tests
judge "never two owners" with these, never with the daemons' opinion of themselves."""
from __future__ import annotations

import datetime
import re
import signal
import time
from typing import NamedTuple
from collections.abc import Sequence

from .cluster import LabNode
from .demo import DEMO_VIP

__all__ = [
    "AddressMonitor",
    "Interleaving",
    "Overlap",
    "holder_intervals",
    "interleaved_answers",
    "overlap_spans",
    "overlaps",
]

_LINE = re.compile(r"^\[(?P<ts>[0-9T:.-]+)\] (?P<deleted>Deleted )?\d+: (?P<nic>\S+)\s+inet "
                   r"(?P<ip>[0-9.]+)/")


class AddressMonitor:
    """`ip -ts monitor address` in a node, logged to a file. The addresses the node already had
    when the monitor started count as added then (a monitor started after the service is not
    blind to the first holder)."""

    def __init__(self, node: LabNode, tag: str) -> None:
        self.node = node
        self.name = f"addrmon{tag}"
        self.log = node.lab.root / f"addrmon-{node.key}-{tag}.log"
        node.spawn(["ip", "-ts", "monitor", "address"], name=self.name, log_path=self.log)
        self.started_ns = time.time_ns()
        listed = node.run(["ip", "-o", "-4", "addr", "show"], timeout=10).stdout
        self.present_at_start = set(re.findall(r" inet ([0-9.]+)/", listed))

    def events(self, ip: str = DEMO_VIP) -> list[tuple[int, bool]]:
        """(time ns, added?) for `ip`, in order."""
        found = [(self.started_ns, True)] if ip in self.present_at_start else []
        if not self.log.exists():
            return found
        for line in self.log.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if match and match["ip"] == ip:
                stamp = datetime.datetime.fromisoformat(match["ts"]).timestamp()
                found.append((int(stamp * 1e9), not match["deleted"]))
        return found

    def first_add_after(self, t0_ns: int, ip: str = DEMO_VIP) -> int | None:
        return next((t for t, added in self.events(ip) if added and t >= t0_ns), None)

    def first_delete_after(self, t0_ns: int, ip: str = DEMO_VIP) -> int | None:
        return next((t for t, added in self.events(ip) if not added and t >= t0_ns), None)

    def stop(self) -> None:
        if self.node.find(self.name):
            self.node.kill(self.name, signal.SIGTERM, wait=5)


def holder_intervals(monitors: list[AddressMonitor], ends: dict[str, list[int]],
                     ip: str = DEMO_VIP) -> dict[str, list[tuple[int, int]]]:
    """Per node: the intervals during which it held `ip` (a crash ends an interval)."""
    result_: dict[str, list[tuple[int, int]]] = {}
    for monitor in monitors:
        key = monitor.node.key
        events = sorted(monitor.events(ip) + [(t, False) for t in ends.get(key, [])])
        start = None
        for t, added in events:
            if added and start is None:
                start = t
            elif not added and start is not None:
                result_.setdefault(key, []).append((start, t))
                start = None
        if start is not None:
            result_.setdefault(key, []).append((start, time.time_ns()))
    return result_


class Overlap(NamedTuple):
    """Two nodes holding the floating IP at once."""

    start_ns: int
    end_ns: int
    nodes: tuple[str, str]

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def __str__(self) -> str:
        return (f"{self.nodes[0]} and {self.nodes[1]} both held the floating IP for "
                f"{self.ms:.1f} ms from {self.start_ns}")


def overlap_spans(intervals: dict[str, list[tuple[int, int]]]) -> list[Overlap]:
    """Every time two nodes' holding intervals overlap, in time order."""
    flat = [(s, e, k) for k, spans in intervals.items() for s, e in spans]
    found = []
    for i, (s1, e1, k1) in enumerate(flat):
        for s2, e2, k2 in flat[i + 1:]:
            if k1 != k2 and s1 < e2 and s2 < e1:
                found.append(Overlap(max(s1, s2), min(e1, e2), (min(k1, k2), max(k1, k2))))
    return sorted(found)


def overlaps(intervals: dict[str, list[tuple[int, int]]]) -> list[str]:
    """Every time two nodes' holding intervals overlap, described."""
    return [str(overlap) for overlap in overlap_spans(intervals)]


class Interleaving(NamedTuple):
    """The client answered by a server after another one had answered in its place."""

    old: str  # the answer ("n1 token 7") of the server that had been replaced
    new: str
    replaced_ns: int  # end of the new server's first answer
    late_ns: int  # end of the old server's last answer after that

    @property
    def ms(self) -> float:
        return (self.late_ns - self.replaced_ns) / 1e6

    def __str__(self) -> str:
        return (f"the client got {self.old!r} at {self.late_ns}, {self.ms:.1f} ms after "
                f"{self.new!r} had answered")


def interleaved_answers(attempts: Sequence[tuple[int, int, bool, str]], start_ns: int,
                        end_ns: int) -> list[Interleaving]:
    """Answers from a replaced server among the prober's attempts started in [start_ns,
    end_ns): A answered, then B, then A again (the last answer before start_ns counts as the
    first one). A server is its answer, node and fencing token: a node that took the service
    back under a new token is a move, not a replaced server answering. One per replaced server,
    with its last late answer."""
    answers = [(start, end, data) for start, end, ok, data in attempts
               if ok and data and start < end_ns]
    before = [a for a in answers if a[0] < start_ns]
    window = before[-1:] + [a for a in answers if a[0] >= start_ns]
    replaced: dict[str, tuple[str, int]] = {}  # old server -> (new server, its first answer)
    late: dict[str, Interleaving] = {}
    current = None
    for _, end, server in window:
        if server in replaced:
            new, replaced_ns = replaced[server]
            late[server] = Interleaving(server, new, replaced_ns, end)
        elif current is not None and server != current and current not in replaced:
            replaced[current] = (server, end)
        current = server
    return sorted(late.values(), key=lambda i: i.replaced_ns)
