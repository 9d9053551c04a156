"""Running scenarios and judging them: one `Verdict` per scenario, a `RESULT` summary per run.

For each scenario the runner writes ``scenario NAME begin`` to the record, restores the baseline,
runs the scenario and then checks, whatever the scenario itself found:

1. the service runs (HA status) on one of the nodes it expects;
2. exactly one copy runs (record), on that node;
3. the client got an answer from one of those nodes within the expected time after the fault;
4. where the service must not move: the client never went longer than `max_gap_s` unanswered;
5. no double activity (overlapping copies) began within the scenario's span;
6. no stale answer (an older fencing token after a newer one) within that span.

A failed scenario is followed by a hard reset of the cluster, so the next one starts clean.
"""
from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable, Iterator

import grpc

from skyge.clients.lab import LabError
from tests.cts import checker
from tests.cts.cluster import CONSISTENT_WITHIN_S, CtsCluster, ScenarioFailed, poll_until
from tests.cts.scenarios import SCENARIOS, Expect, Scenario

__all__ = ["Verdict", "deck", "in_order", "run_many", "run_scenario", "summary"]


@dataclass
class Verdict:
    name: str
    seconds: float
    failures: list[str] = field(default_factory=list)
    double_active: int = 0
    stale_answers: int = 0
    #: the fault to the first answer from an expected node, s
    recovery_s: float | None = None
    availability: checker.Availability | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def explain(self) -> str:
        """Why it failed, one failure a line."""
        return f"{self.name} failed:\n  " + "\n  ".join(self.failures)


def run_scenario(cluster: CtsCluster, scenario: Scenario, rng: random.Random) -> Verdict:
    """Run one scenario from the baseline and judge it."""
    began = time.monotonic()
    begin_ns = cluster.record.note("scenario", scenario.name, "begin")
    verdict = Verdict(scenario.name, 0.0)
    expect = None
    try:
        reset_reason = cluster.restore_baseline()
        if reset_reason:
            verdict.failures.append(f"precondition: the baseline needed a hard reset: "
                                    f"{reset_reason}")
        expect = scenario.run(cluster, rng)
        verdict.failures += expect.failures
    except (ScenarioFailed, LabError, grpc.RpcError) as error:
        verdict.failures.append(f"{type(error).__name__}: {_describe(error)}")
    except Exception:
        verdict.failures.append(traceback.format_exc(limit=-3).strip())
    if expect is not None:
        _check_outcome(cluster, expect, begin_ns, verdict)
    _check_history(cluster, begin_ns, verdict)
    verdict.seconds = round(time.monotonic() - began, 1)
    if verdict.seconds > scenario.limit_s:
        verdict.failures.append(f"took {verdict.seconds} s, its limit is {scenario.limit_s:g} s")
    cluster.record.note("scenario", scenario.name, "end", "pass" if verdict.passed else "fail")
    if not verdict.passed:
        cluster.hard_reset()
    return verdict


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"  # type: ignore[attr-defined]
    return str(error)


def _check_outcome(cluster: CtsCluster, expect: Expect, begin_ns: int, verdict: Verdict) -> None:
    allowed = sorted(expect.runs_on)
    try:
        _, active, _ = cluster.wait_running_on(allowed, CONSISTENT_WITHIN_S)
    except ScenarioFailed as error:
        verdict.failures.append(f"placement: {error}")
        return
    try:
        cluster.wait_copies({f"n{active}"}, CONSISTENT_WITHIN_S)
    except ScenarioFailed as error:
        verdict.failures.append(f"copies: the HA daemons say n{active} runs it; {error}")
    nodes = [f"n{i}" for i in allowed]
    within_s = expect.answer_within_s + cluster.lease_pass_on_s
    try:
        answered_ns, by = poll_until(
            lambda: checker.first_answer(cluster.probes(), expect.fault_ns, nodes),
            within_s,
            lambda: f"no answer from {'/'.join(nodes)} {within_s:g} s after the fault")
    except ScenarioFailed as error:
        verdict.failures.append(f"client: {error}")
    else:
        verdict.recovery_s = round((answered_ns - expect.fault_ns) / 1e9, 3)
        if verdict.recovery_s > within_s:
            verdict.failures.append(f"client: first answer from {by} {verdict.recovery_s} s after "
                                    f"the fault, expected within {within_s:g} s")
    if expect.max_gap_s is not None:
        gap = checker.longest_gap(cluster.probes(), begin_ns, time.time_ns())
        if gap > expect.max_gap_s:
            verdict.failures.append(f"client: unanswered for {gap:.2f} s where the service "
                                    f"should not move (at most {expect.max_gap_s:g} s)")


def _check_history(cluster: CtsCluster, begin_ns: int, verdict: Verdict) -> None:
    now = time.time_ns()
    events = cluster.record.events()
    double = [o for o in checker.overlaps(checker.copies(events, now)) if o.start_ns >= begin_ns]
    verdict.double_active = len(double)
    verdict.failures += [f"double active: {o}" for o in double]
    probes = cluster.probes()
    stale = checker.stale_answers(probes, begin_ns, now)
    verdict.stale_answers = len(stale)
    verdict.failures += [f"stale answer: {s}" for s in stale]
    verdict.availability = checker.availability(probes, events, begin_ns, now)


def run_many(cluster: CtsCluster, choose: Callable[[float], Scenario | None],
             rng: random.Random) -> Iterator[Verdict]:
    """Run `choose(elapsed seconds)` until it returns None, yielding each verdict."""
    started = time.monotonic()
    while (scenario := choose(time.monotonic() - started)) is not None:
        yield run_scenario(cluster, scenario, rng)


def deck(names: Iterable[str], rng: random.Random, budget_s: float
         ) -> Callable[[float], Scenario | None]:
    """Random order, every scenario once before any repeats, until `budget_s` have passed (the
    last one may run over by at most its time limit)."""
    pool = list(names)
    hand: list[str] = []

    def choose(elapsed: float) -> Scenario | None:
        if elapsed >= budget_s:
            return None
        if not hand:
            hand[:] = rng.sample(pool, len(pool))
        return SCENARIOS[hand.pop()]
    return choose


def in_order(names: Iterable[str]) -> Callable[[float], Scenario | None]:
    queue = [SCENARIOS[n] for n in names]
    return lambda elapsed: queue.pop(0) if queue else None


def summary(cluster: CtsCluster, verdicts: list[Verdict], **extra: Any) -> dict[str, Any]:
    """The RESULT of a run: counts over every scenario, and the whole record's checks."""
    now = time.time_ns()
    events = cluster.record.events()
    probes = cluster.probes()
    whole = checker.availability(probes, events, cluster.measured_from_ns, now)
    double = checker.overlaps(checker.copies(events, now))
    by_name: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        entry = by_name.setdefault(v.name, {"runs": 0, "passed": 0, "failed": 0,
                                            "double_active": 0, "recovery_s": []})
        entry["runs"] += 1
        entry["passed" if v.passed else "failed"] += 1
        entry["double_active"] += v.double_active
        if v.recovery_s is not None:
            entry["recovery_s"].append(v.recovery_s)
    return {
        "scenarios": len(verdicts),
        "passed": sum(v.passed for v in verdicts),
        "failed": sum(not v.passed for v in verdicts),
        "double_active": len(double),
        "stale_answers": len(checker.stale_answers(probes, cluster.measured_from_ns, now)),
        "availability_percent": whole.percent,
        "probes": {"answered": whole.answered, "expected": whole.expected,
                   "excluded": whole.excluded},
        "by_scenario": by_name,
        "failures": [f"{v.name}: {f}" for v in verdicts for f in v.failures],
        **extra,
    }
