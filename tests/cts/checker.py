"""The checker: who ran the service when (from the record), and what the client saw (the prober).

Copies (`copies`): per node, the intervals during which the service ran there. An interval opens
at the script's ``start`` line (written before the server is launched) and ends at the first of:

- the ``died`` line of the server's watcher (the moment the server process exited);
- the script's ``stop`` line (written once the server is gone);
- the harness's ``crash nX`` (the power-off instant: the node's cables go down first, so its
  copy serves nobody afterwards, and every process is SIGKILLed within milliseconds);
- the harness's ``kill-server nX`` (written once the killed server is gone).

So an interval always covers the time the server process was alive. A frozen node (SIGSTOP of
all its processes) is the one case where "alive" and "running" differ: a frozen copy cannot act,
but it resumes at the thaw with its floating IP still up. The rule (`THAW_GRACE_NS`): when the
interval's end comes at most 1 s after the node's thaw (or while it is still frozen, or by a
crash while frozen), the interval is taken to end at the freeze; otherwise it runs to its real
end, and any takeover during the freeze overlaps it. 1 s is far more than a thawed node needs to
learn that its lock lease ran out (tens of ms) and stop its copy; a node that keeps running after
that is double active.

double_active (`overlaps`) is the number of pairs of intervals of two different nodes that
overlap in time. The client's view is checked on its own (`stale_answers`): an answer carrying a
lower fencing token than an answer the client already got means an old copy served after a newer
one did, which the interval rule for frozen nodes must not hide.

Availability (`availability`): successful probes / probes started while the service was expected
to be available: every probe of the measured span except those started inside an ``expect-down``
window of the harness, which marks only the times a scenario deliberately leaves no eligible node
(every node's daemons stopped, until a quorum of nodes runs again) and the harness's reset after a
failed scenario (the failure itself is reported). Failover times count as unavailability.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable, Sequence

from tests.cts.record import HARNESS, Event

__all__ = [
    "THAW_GRACE_NS",
    "Availability",
    "Interval",
    "Overlap",
    "Probe",
    "answer_node",
    "availability",
    "copies",
    "first_answer",
    "longest_gap",
    "overlaps",
    "running_nodes",
    "stale_answers",
]

#: a thawed node must stop its copy within this long after the thaw (see the module doc)
THAW_GRACE_NS = 1_000_000_000
#: a prober attempt: (start ns, end ns, answered?, answer or error name)
Probe = tuple[int, int, bool, str]


@dataclass(frozen=True)
class Interval:
    """The service ran on `node` (``n1``) from `start_ns` to `end_ns` with fencing `token`."""

    node: str
    start_ns: int
    end_ns: int
    token: str
    #: what ended it: died, stop, crash, kill-server, or "running" (still open at the end of the
    #: record)
    ended_by: str

    @property
    def running(self) -> bool:
        return self.ended_by == "running"


@dataclass(frozen=True)
class Overlap:
    first: Interval
    second: Interval

    @property
    def start_ns(self) -> int:
        return max(self.first.start_ns, self.second.start_ns)

    @property
    def end_ns(self) -> int:
        return min(self.first.end_ns, self.second.end_ns)

    def __str__(self) -> str:
        a, b = self.first, self.second
        return (f"{a.node} (token {a.token}, ended by {a.ended_by}) and {b.node} (token {b.token},"
                f" ended by {b.ended_by}) both ran it for {(self.end_ns - self.start_ns) / 1e6:.1f}"
                f" ms from {self.start_ns}")


@dataclass
class _Open:
    start_ns: int
    token: str
    frozen_ns: int | None = None
    thawed_ns: int | None = None


def copies(events: Iterable[Event], now_ns: int) -> list[Interval]:
    """The intervals of every node, in order of their start (see the module doc)."""
    running: dict[str, _Open] = {}
    done: list[Interval] = []

    def close(node: str, end_ns: int, ended_by: str) -> None:
        copy = running.pop(node)
        if copy.frozen_ns is not None and (copy.thawed_ns is None or
                                           end_ns <= copy.thawed_ns + THAW_GRACE_NS):
            end_ns = copy.frozen_ns
        done.append(Interval(node, copy.start_ns, end_ns, copy.token, ended_by))

    for event in sorted(events, key=lambda e: e.time_ns):
        node = event.subject
        if event.source != HARNESS:
            if event.kind == "start" and node not in running:
                running[node] = _Open(event.time_ns, event.args[0] if event.args else "?")
            elif event.kind in ("died", "stop") and node in running:
                close(node, event.time_ns, event.kind)
        elif node in running:
            if event.kind in ("crash", "kill-server"):
                close(node, event.time_ns, event.kind)
            elif event.kind == "freeze":
                running[node].frozen_ns, running[node].thawed_ns = event.time_ns, None
            elif event.kind == "thaw" and running[node].frozen_ns is not None:
                running[node].thawed_ns = event.time_ns
    for node in list(running):
        copy = running[node]
        still_frozen = copy.frozen_ns is not None and copy.thawed_ns is None
        done.append(Interval(node, copy.start_ns, copy.frozen_ns if still_frozen else now_ns,
                             copy.token, "running"))
    return sorted(done, key=lambda i: i.start_ns)


def running_nodes(intervals: Iterable[Interval]) -> set[str]:
    """Nodes whose copy is still running at the end of the record."""
    return {i.node for i in intervals if i.running}


def overlaps(intervals: Sequence[Interval]) -> list[Overlap]:
    """Every pair of intervals of two different nodes that overlap in time."""
    found = []
    for index, first in enumerate(intervals):
        for second in intervals[index + 1:]:
            if (first.node != second.node and first.start_ns < second.end_ns and
                    second.start_ns < first.end_ns):
                found.append(Overlap(first, second))
    return found


@dataclass(frozen=True)
class Availability:
    answered: int
    expected: int
    excluded: int

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.answered / self.expected, 3) if self.expected else None


def expect_down_windows(events: Iterable[Event], now_ns: int) -> list[tuple[int, int]]:
    """The harness's ``expect-down`` windows (an unclosed one runs to `now_ns`)."""
    windows, begun = [], None
    for event in events:
        if event.source == HARNESS and event.kind == "expect-down":
            if event.args[:1] == ("begin",) and begun is None:
                begun = event.time_ns
            elif event.args[:1] == ("end",) and begun is not None:
                windows.append((begun, event.time_ns))
                begun = None
    if begun is not None:
        windows.append((begun, now_ns))
    return windows


def availability(probes: Iterable[Probe], events: Iterable[Event], since_ns: int,
                 until_ns: int) -> Availability:
    """Probes started in [since, until): answered / expected (see the module doc)."""
    windows = expect_down_windows(events, until_ns)
    answered = expected = excluded = 0
    for start, _, ok, _ in probes:
        if not since_ns <= start < until_ns:
            continue
        if any(begin <= start < end for begin, end in windows):
            excluded += 1
        else:
            expected += 1
            answered += bool(ok)
    return Availability(answered, expected, excluded)


def _answer(data: str) -> tuple[str, int] | None:
    """("n2", 7) from the server's answer "n2 token 7"."""
    parts = data.split()
    if len(parts) == 3 and parts[1] == "token" and parts[2].isdigit():
        return parts[0], int(parts[2])
    return None


def answer_node(data: str) -> str | None:
    parsed = _answer(data)
    return parsed[0] if parsed else None


def stale_answers(probes: Iterable[Probe], since_ns: int, until_ns: int) -> list[str]:
    """Answers (in [since, until)) whose fencing token is lower than one answered before."""
    stale, highest, by = [], -1, ""
    for start, end, ok, data in probes:
        parsed = _answer(data) if ok else None
        if parsed is None:
            continue
        node, token = parsed
        if token < highest and since_ns <= start < until_ns:
            stale.append(f"at {end}: {node} answered with token {token} after {by} had answered "
                         f"with token {highest}")
        elif token > highest:
            highest, by = token, node
    return stale


def first_answer(probes: Iterable[Probe], since_ns: int,
                 nodes: Iterable[str]) -> tuple[int, str] | None:
    """(end ns, node) of the first answer from one of `nodes` to a probe started after since."""
    wanted = set(nodes)
    for start, end, ok, data in probes:
        if ok and start >= since_ns and answer_node(data) in wanted:
            return end, answer_node(data) or ""
    return None


def longest_gap(probes: Iterable[Probe], since_ns: int, until_ns: int) -> float:
    """Longest time (s) in [since, until] without an answer to the client."""
    last, gap = since_ns, 0
    for start, end, ok, _ in probes:
        if ok and since_ns <= start and end <= until_ns:
            gap, last = max(gap, end - last), end
    return max(gap, until_ns - last) / 1e9
