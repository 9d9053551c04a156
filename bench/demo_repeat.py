"""The README demo (`skyge demo`) many times in a row, judged from outside: does the service move
exactly once, after the crash, and how long is the client without it?

    python -m bench.demo_repeat --runs 30

Each run is the demo itself (`skyge.clients.lab.demo.run_demo`: the same lab, daemons, service
and steps as `skyge demo`) in a lab of its own, observed through its `DemoWatch` hooks:

- from the moment the lab is up (before any daemon starts), an `ip -ts monitor address` in every
  node (bench.failover's AddressMonitor) logs with timestamps every add and removal of the
  floating IP 192.168.1.100, and a prober of the bench's own in the client namespace (the demo's
  Prober under another name: a connection to 192.168.1.100:8080 every 5 ms) logs which node
  answered each attempt;
- t0 is the wall clock read right before the demo crashes the node it found active;
- once the demo has shown `ha status` on the survivor (or has failed), the bench keeps watching
  for `--settle` seconds, then reads the logs, before the demo stops its daemons.

A move is the floating IP added on a node other than the last one that had it (the first add
is none). `moves_before_crash` are those before t0, `moves_after_crash` those from t0 on; a run
"with one move" has none before and exactly one after. failover_ms = the end of the first
prober attempt answered by the node the address moved to (without a move: by any node but the
crashed one) minus t0.

A run is not clean when it errs or outlives `--timeout` (the error is recorded; the lab is
removed and the bench goes on), when it does not have exactly one move, after the crash, when
two nodes held the address at once (monitors; the crash ends the victim's holding), or when the
node answering the client changed other than once, at the crash. For each such run a timeline
goes to stderr: the monitors' adds and removals, the prober's answering node, and the daemons'
log lines that explain a change of owner (HA state changes, lock terms and lost locks, heartbeat
warnings).

Keys: runs, runs_with_one_move, failover_ms_p50, failover_ms_max, moves_before_crash_total,
moves_after_crash_total, not_clean (run number and what happened, for each run not clean).
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import time
from dataclasses import dataclass, field
from collections.abc import Iterator

from skyge.clients.lab import Lab, LabError, LabNode, destroy, known_labs
from skyge.clients.lab.demo import DEMO_VIP, DemoWatch, Prober, run_demo

from bench._common import (Move, address_moves, lab_name, note, ownership_log_lines, percentile,
                           result, rounded, timeline)
from skyge.clients.lab.observe import AddressMonitor, holder_intervals, overlaps

RUN_TIMEOUT_S = 180.0
SETTLE_S = 1.0
TIMELINE_LINES_MAX = 120


class RunTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """RunTimeout in this (main) thread after `seconds`, unless `disarm()`ed first."""
    def expire(*_: object) -> None:
        raise RunTimeout(f"the run took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        disarm()
        signal.signal(signal.SIGALRM, previous)


def disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


@dataclass
class Observation:
    """What the bench saw of one run, read before the lab went down."""

    start_ns: int = 0
    t0_ns: int | None = None  # the crash
    victim: str | None = None
    events: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)  # node -> monitor
    answers: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, node)
    logs: list[tuple[int, str, str]] = field(default_factory=list)  # (time, node, line)
    overlaps: list[str] = field(default_factory=list)  # two nodes holding the address at once
    error: str | None = None


class Observer(DemoWatch):
    """Address monitors and a prober from the moment the lab is up; the crash's time."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self.seen = Observation()
        self.monitors: list[AddressMonitor] = []
        self.prober: Prober | None = None

    def lab_up(self, lab: Lab) -> None:
        self.seen.start_ns = time.time_ns()
        self.monitors = [AddressMonitor(node, "bench") for node in lab.nodes]
        self.prober = Prober(lab, name="benchprober")

    def before_crash(self, lab: Lab, victim: LabNode) -> None:
        self.seen.victim = victim.key
        self.seen.t0_ns = time.time_ns()

    def before_shutdown(self, lab: Lab) -> None:
        disarm()  # the demo's own clean-up and the lab's removal must not be cut short
        try:
            if self.seen.t0_ns is not None:
                time.sleep(self.settle_s)
            self._read(lab)
        except Exception as error:
            self.seen.error = f"reading the observations: {type(error).__name__}: {error}"

    def _read(self, lab: Lab) -> None:
        if self.prober is not None:
            self.prober.stop()
            self.seen.answers = [(start, end, data.split()[0])
                                 for start, end, ok, data in self.prober.attempts()
                                 if ok and data]
        for monitor in self.monitors:
            if not monitor.node.crashed:
                monitor.stop()
            self.seen.events[monitor.node.key] = monitor.events(DEMO_VIP)
        crash = {self.seen.victim: [self.seen.t0_ns]} if self.seen.t0_ns is not None else {}
        self.seen.overlaps = overlaps(holder_intervals(self.monitors, crash))
        self.seen.logs = ownership_log_lines({n.key: n.root for n in lab.nodes},
                                             self.seen.start_ns)


def answer_changes(answers: list[tuple[int, int, str]]) -> list[tuple[int, str, str]]:
    """(time, previous node, node) each time the node answering the client changed."""
    changes, last = [], None
    for start, _, node in answers:
        if last is not None and node != last:
            changes.append((start, last, node))
        last = node
    return changes


def judge(run: int, seen: Observation, demo_error: str | None) -> dict:
    """The run's figures and, if it was not clean, what went wrong."""
    moves = address_moves(seen.events)
    t0 = seen.t0_ns
    before = [m for m in moves if t0 is None or m.time_ns < t0]
    after = [m for m in moves if t0 is not None and m.time_ns >= t0]
    problems = [e for e in (demo_error, seen.error) if e]
    if t0 is None:
        problems.append("no crash (the demo stopped before it)")
    if before:
        problems.append("moved before the crash: " + describe(before, t0 or seen.start_ns))
    if t0 is not None and len(after) != 1:
        problems.append(f"{len(after)} moves after the crash"
                        + (": " + describe(after, t0) if after else ""))
    problems += seen.overlaps
    switches = answer_changes(seen.answers)
    expected_switches = [c for c in switches if t0 is not None and c[0] >= t0][:1]
    if t0 is not None and (len(switches) != 1 or switches != expected_switches):
        problems.append("the client was answered by " + " -> ".join(
            [switches[0][1]] + [c[2] for c in switches] if switches else ["one node only"]))
    failover_ms = None
    if t0 is not None:
        new = after[0].target if after else None
        failover_ms = next(((end - t0) / 1e6 for start, end, node in seen.answers
                            if start >= t0 and node != seen.victim
                            and (new is None or node == new)), None)
        if failover_ms is None:
            problems.append(f"no answer from {new or 'another node'} after the crash")
    return {"run": run, "moves_before_crash": len(before), "moves_after_crash": len(after),
            "one_move": t0 is not None and not before and len(after) == 1,
            "failover_ms": rounded(failover_ms, 1), "problems": problems}


def describe(moves: list[Move], t0_ns: int) -> str:
    return ", ".join(f"{m.source}->{m.target} at {(m.time_ns - t0_ns) / 1e6:+.1f} ms"
                     for m in moves)


def print_timeline(run: int, seen: Observation) -> None:
    """What happened in a run that was not clean, relative to the crash (or the lab's start)."""
    t0 = seen.t0_ns or seen.start_ns
    entries = [(t, key, f"{DEMO_VIP} {'added' if added else 'removed'}")
               for key, events in seen.events.items() for t, added in events]
    entries += [(start, "client", f"answered by {new} (was {old})")
                for start, old, new in answer_changes(seen.answers)]
    if seen.answers:
        entries.append((seen.answers[0][0], "client", f"first answer, by {seen.answers[0][2]}"))
    if seen.t0_ns is not None:
        entries.append((seen.t0_ns, seen.victim or "?", "CRASHED by the demo"))
    entries += seen.logs
    lines = timeline(entries, t0, TIMELINE_LINES_MAX)
    note(f"run {run} timeline (ms from the {'crash' if seen.t0_ns else 'lab start'}):\n  "
         + "\n  ".join(lines))


def one_run(run: int, timeout_s: float, settle_s: float) -> dict:
    name = lab_name("dr")
    observer = Observer(settle_s)
    narration: list[str] = []
    error = None
    try:
        with deadline(timeout_s):
            run_demo(narration.append, lab_name=name, watch=observer)
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    finally:
        if name in known_labs():
            try:
                destroy(name)
            except LabError as failure:
                error = f"{error or ''}; the lab was not removed: {failure}"
    record = judge(run, observer.seen, error)
    if record["problems"]:
        if error and narration:
            note(f"run {run}: the demo's last words: {narration[-1]}")
        print_timeline(run, observer.seen)
    return record


def summarize(records: list[dict]) -> dict:
    failovers = [r["failover_ms"] for r in records if r["failover_ms"] is not None]
    return {
        "runs": len(records),
        "runs_with_one_move": sum(r["one_move"] for r in records),
        "failover_ms_p50": rounded(percentile(failovers, 50), 1),
        "failover_ms_max": rounded(max(failovers, default=None), 1),
        "moves_before_crash_total": sum(r["moves_before_crash"] for r in records),
        "moves_after_crash_total": sum(r["moves_after_crash"] for r in records),
        "not_clean": [{"run": r["run"], "what": "; ".join(r["problems"])}
                      for r in records if r["problems"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="demo runs (default 30)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S,
                        help=f"seconds one run may take (default {RUN_TIMEOUT_S:g})")
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help=f"seconds watched after the demo's last status (default {SETTLE_S:g})")
    args = parser.parse_args()
    if not 1 <= args.runs <= 500:
        parser.error("--runs: must be from 1 to 500")
    if not 10 <= args.timeout <= 1800 or not 0 <= args.settle <= 60:
        parser.error("--timeout: 10 to 1800 s; --settle: 0 to 60 s")
    records = []
    for run in range(1, args.runs + 1):
        record = one_run(run, args.timeout, args.settle)
        records.append(record)
        note(f"run {run}/{args.runs}: moves before/after the crash "
             f"{record['moves_before_crash']}/{record['moves_after_crash']}, failover "
             f"{record['failover_ms']} ms" + ("" if not record["problems"] else
                                              " - NOT CLEAN: " + "; ".join(record["problems"])))
    result(summarize(records))


if __name__ == "__main__":
    main()
