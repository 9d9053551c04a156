"""Golden cases of the HA policy (services/ha/policy.py), in the spirit of Pacemaker's scheduler
regression tests: each case replays events through `decide` and compares the whole trace (phase,
state name, lock flags, actions, refusals, reason) with the expected text. A change of behaviour
shows up as a readable diff of the trace.

Trace line: ``EVENT -> PHASE/STATE {flags} [actions] | reason`` with flags H holding, A acquire
outstanding, Q queued (answered), R release outstanding.
"""
from __future__ import annotations

import textwrap

import pytest

from skyge.services.ha import policy as P

SETTINGS = P.Settings(check_interval_s=3, check_failures=2)
#: a node that has not seen anything yet
FRESH = P.State()


def event(word: str) -> P.Event:
    name, _, arg = word.partition("=")
    return {
        "start": lambda: P.Command("start"), "stop": lambda: P.Command("stop"),
        "release": lambda: P.Command("release"), "switch": lambda: P.Command("switch"),
        "remove": lambda: P.Command("remove"), "stopall": lambda: P.Command("stopall"),
        "unqueue": lambda: P.Command("unqueue"),
        "granted": lambda: P.Granted(int(arg or 1)), "queued": lambda: P.Queued(int(arg or 0)),
        "noquorum": lambda: P.AcquireFailed("no_quorum"),
        "invalid": lambda: P.AcquireFailed("invalid", "bad slot"),
        "released": lambda: P.Released(), "lost": lambda: P.Lost(arg or "node_left"),
        "down": lambda: P.SessionDown("unavailable"),
        "start_ok": lambda: P.StartDone(True), "start_fail": lambda: P.StartDone(False, "exit 1"),
        "stop_ok": lambda: P.StopDone(True), "stop_fail": lambda: P.StopDone(False, "exit 1"),
        "check_ok": lambda: P.CheckDone(int(arg or 1), True),
        "check_fail": lambda: P.CheckDone(int(arg or 1), False, "not running"),
        "retry": lambda: P.RetryAcquire(),
    }[name]()


def render(action: P.Action) -> str:
    if isinstance(action, P.Start):
        return f"start(token={action.token},run={action.run})"
    if isinstance(action, P.Stop):
        return "stop(urgent)" if action.urgent else "stop"
    if isinstance(action, P.ScheduleCheck):
        return f"check(run={action.run},in={action.delay_s:g})"
    if isinstance(action, P.ScheduleRetry):
        return f"retry(in={action.delay_s:g})"
    return {"CancelStart": "cancel-start", "CancelCheck": "cancel-check"}.get(
        type(action).__name__, type(action).__name__.lower())


def trace(events: str, state: P.State = FRESH) -> str:
    lines = []
    for word in events.split():
        decision = P.decide(state, event(word), SETTINGS)
        state = decision.state
        flags = "".join(c for c, on in (("H", state.holding), ("A", state.acquiring),
                                        ("Q", state.queued), ("R", state.releasing)) if on)
        line = f"{word} -> {state.phase.value}/{state.state_name}"
        if flags:
            line += f" {{{flags}}}"
        if decision.actions:
            line += " [" + ", ".join(render(a) for a in decision.actions) + "]"
        if decision.refused:
            line += f" REFUSED: {decision.refused}"
        if decision.ignored:
            line += " (ignored)"
        lines.append(f"{line} | {state.reason}")
    return "\n".join(lines)


GOLDEN = {
    "onstart, run, checks, failover after 2 failed checks, requeue": ("""
        start queued granted=7 start_ok check_ok check_fail check_ok check_fail check_fail
        stop_ok released queued=2
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        queued -> waiting/waiting {AQ} | waiting for the lock
        granted=7 -> starting/starting {H} [start(token=7,run=1)] | lock granted (token 7): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 7)
        check_ok -> running/running {H} [check(run=1,in=3)] | running (token 7)
        check_fail -> running/running {H} [check(run=1,in=3)] | status failed (1 of 2): not running
        check_ok -> running/running {H} [check(run=1,in=3)] | running (status ok again)
        check_fail -> running/running {H} [check(run=1,in=3)] | status failed (1 of 2): not running
        check_fail -> stopping/stopping {H} [cancel-check, stop] | status failed 2 times in a row: not running: stopping
        stop_ok -> waiting/waiting {AR} [release, acquire] | status failed 2 times in a row: stopped here, waiting for the lock again
        released -> waiting/waiting {A} | status failed 2 times in a row: stopped here, waiting for the lock again
        queued=2 -> waiting/waiting {AQ} | waiting for the lock (position 2)
    """),
    "stop keeps the lock (nobody takes over); start again keeps the token": ("""
        start granted=3 start_ok stop stop_ok stop start start_ok
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=3 -> starting/starting {H} [start(token=3,run=1)] | lock granted (token 3): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 3)
        stop -> stopping/stopping {H} [cancel-check, stop] | stopped by command: stopping
        stop_ok -> held/stopped {H} | stopped (lock kept: nobody takes over)
        stop -> held/stopped {H} | stopped (lock kept: nobody takes over)
        start -> starting/starting {H} [start(token=3,run=2)] | started again by command (lock kept, token 3)
        start_ok -> running/running {H} [check(run=2,in=3)] | running (token 3)
    """),
    "release hands over; remove refused while running, allowed after": ("""
        start granted=4 start_ok remove release stop_ok released remove
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=4 -> starting/starting {H} [start(token=4,run=1)] | lock granted (token 4): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 4)
        remove -> running/running {H} REFUSED: it is running here: stop or release it first (-a stop / -a release), then remove it | running (token 4)
        release -> stopping/stopping {H} [cancel-check, stop] | released by command: stopping
        stop_ok -> idle/released {R} [release] | released: lock given back
        released -> idle/released | released: lock given back
        remove -> idle/released [forget] | released: lock given back
    """),
    "a waiting node: remove refused, release leaves the queue, then remove": ("""
        start queued remove switch release released remove
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        queued -> waiting/waiting {AQ} | waiting for the lock
        remove -> waiting/waiting {AQ} REFUSED: it waits for the lock here: release it first (-a release), then remove it | waiting for the lock
        switch -> waiting/waiting {AQ} REFUSED: it does not run here (waiting) | waiting for the lock
        release -> idle/released {R} [release] | released by command (left the lock queue)
        released -> idle/released | released by command (left the lock queue)
        remove -> idle/released [forget] | released by command (left the lock queue)
    """),
    "switch: stop, release, queue again at the back": ("""
        start granted=5 start_ok switch stop_ok released queued=2
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=5 -> starting/starting {H} [start(token=5,run=1)] | lock granted (token 5): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 5)
        switch -> stopping/stopping {H} [cancel-check, stop] | switch by command: stopping
        stop_ok -> waiting/waiting {AR} [release, acquire] | switch by command: stopped here, waiting for the lock again
        released -> waiting/waiting {A} | switch by command: stopped here, waiting for the lock again
        queued=2 -> waiting/waiting {AQ} | waiting for the lock (position 2)
    """),
    "lock lost while running: urgent stop (floating IPs first), then wait again": ("""
        start granted=2 start_ok lost=no_quorum stop_ok granted=8
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=2 -> starting/starting {H} [start(token=2,run=1)] | lock granted (token 2): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 2)
        lost=no_quorum -> stopping/stopping [cancel-check, stop(urgent)] | lock lost (no quorum): stopping
        stop_ok -> waiting/waiting {A} [acquire] | lock lost (no quorum): stopped here, waiting for the lock again
        granted=8 -> starting/starting {H} [start(token=8,run=2)] | lock granted (token 8): starting
    """),
    "lock lost while starting: the start is cancelled": ("""
        start granted=2 lost stop_ok
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=2 -> starting/starting {H} [start(token=2,run=1)] | lock granted (token 2): starting
        lost -> stopping/stopping [cancel-start, stop(urgent)] | lock lost (node left): stopping
        stop_ok -> waiting/waiting {A} [acquire] | lock lost (node left): stopped here, waiting for the lock again
    """),
    "start fails: cleaned up, lock given back, FAILED until started again": ("""
        start granted=6 start_fail stop_ok released start
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=6 -> starting/starting {H} [start(token=6,run=1)] | lock granted (token 6): starting
        start_fail -> stopping/stopping {H} [stop] | start failed: exit 1: stopping
        stop_ok -> failed/failed {R} [release] | start failed: exit 1; cleaned up, lock given back
        released -> failed/failed | start failed: exit 1; cleaned up, lock given back
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
    """),
    "stop fails: FAILED holding the lock (no takeover); start and remove refused, stop retries": ("""
        start granted=6 start_ok release stop_fail start remove stop stop_ok
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=6 -> starting/starting {H} [start(token=6,run=1)] | lock granted (token 6): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 6)
        release -> stopping/stopping {H} [cancel-check, stop] | released by command: stopping
        stop_fail -> failed/failed {H} | stop failed: exit 1; it keeps the lock so that no other node starts it while its resources may be in use here (stop or release retries)
        start -> failed/failed {H} REFUSED: its last stop failed and it still holds the lock here: stop or release it first (that retries the stop) | stop failed: exit 1; it keeps the lock so that no other node starts it while its resources may be in use here (stop or release retries)
        remove -> failed/failed {H} REFUSED: its last stop failed and it still holds the lock here: stop or release it first | stop failed: exit 1; it keeps the lock so that no other node starts it while its resources may be in use here (stop or release retries)
        stop -> stopping/stopping {H} [stop] | stopped by command: stopping
        stop_ok -> held/stopped {H} | stopped (lock kept: nobody takes over)
    """),
    "no quorum: ask again later; lock daemon down: ask again": ("""
        start noquorum retry down retry queued
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        noquorum -> waiting/waiting {Q} [retry(in=0.5)] | no quorum: the lock cannot be granted now; asking again
        retry -> waiting/waiting {A} [acquire] | no quorum: the lock cannot be granted now; asking again
        down -> waiting/waiting {Q} [retry(in=0.5)] | lock session ended (unavailable); asking again
        retry -> waiting/waiting {A} [acquire] | lock session ended (unavailable); asking again
        queued -> waiting/waiting {AQ} | waiting for the lock
    """),
    "lock daemon dies under a running service: stop at once": ("""
        start granted=9 start_ok down stop_ok
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=9 -> starting/starting {H} [start(token=9,run=1)] | lock granted (token 9): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 9)
        down -> stopping/stopping [cancel-check, stop(urgent)] | lock session ended (unavailable): stopping
        stop_ok -> waiting/waiting {A} [acquire] | lock session ended (unavailable): stopped here, waiting for the lock again
    """),
    "stale check results and duplicate grants are ignored; an unwanted grant is given back": ("""
        start granted=1 start_ok check_fail=7 granted=2 stop stop_ok release released granted=3
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=1 -> starting/starting {H} [start(token=1,run=1)] | lock granted (token 1): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 1)
        check_fail=7 -> running/running {H} (ignored) | running (token 1)
        granted=2 -> running/running {H} (ignored) | running (token 1)
        stop -> stopping/stopping {H} [cancel-check, stop] | stopped by command: stopping
        stop_ok -> held/stopped {H} | stopped (lock kept: nobody takes over)
        release -> idle/released {R} [release] | released by command (lock released)
        released -> idle/released | released by command (lock released)
        granted=3 -> idle/released {HR} [release] (ignored) | released by command (lock released)
    """),
    "stopall: phase 1 unqueues waiters, phase 2 stops the runner and releases": ("""
        start queued unqueue released
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        queued -> waiting/waiting {AQ} | waiting for the lock
        unqueue -> idle/stopped {R} [release] | stopped by command (left the lock queue)
        released -> idle/stopped | stopped by command (left the lock queue)
    """),
    "stopall on the running node": ("""
        start granted=4 start_ok unqueue stopall stop_ok released
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=4 -> starting/starting {H} [start(token=4,run=1)] | lock granted (token 4): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 4)
        unqueue -> running/running {H} | running (token 4)
        stopall -> stopping/stopping {H} [cancel-check, stop] | stopped by command: stopping
        stop_ok -> idle/stopped {R} [release] | stopped: lock given back
        released -> idle/stopped | stopped: lock given back
    """),
    "held node: switch releases and queues again; remove releases": ("""
        start granted=4 start_ok stop stop_ok switch released queued
    """, """
        start -> waiting/waiting {A} [acquire] | started by command: waiting for the lock
        granted=4 -> starting/starting {H} [start(token=4,run=1)] | lock granted (token 4): starting
        start_ok -> running/running {H} [check(run=1,in=3)] | running (token 4)
        stop -> stopping/stopping {H} [cancel-check, stop] | stopped by command: stopping
        stop_ok -> held/stopped {H} | stopped (lock kept: nobody takes over)
        switch -> waiting/waiting {AR} [release, acquire] | switch by command: lock released, queued again
        released -> waiting/waiting {A} | switch by command: lock released, queued again
        queued -> waiting/waiting {AQ} | waiting for the lock
    """),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_each_golden_case_replays_to_its_expected_trace(name):
    events, expected = GOLDEN[name]
    assert trace(events) == textwrap.dedent(expected).strip()


def test_settled_means_no_work_or_lock_request_in_flight():
    s = P.State()
    assert P.settled(s)
    s = P.decide(s, P.Command("start")).state
    assert not P.settled(s)  # Acquire not answered yet
    s = P.decide(s, P.Queued(1)).state
    assert P.settled(s)
    s = P.decide(s, P.Granted(1)).state
    assert not P.settled(s)  # starting
    s = P.decide(s, P.StartDone(True)).state
    assert P.settled(s)
    s = P.decide(s, P.Command("release")).state
    assert not P.settled(s)  # stopping
    s = P.decide(s, P.StopDone(True)).state
    assert not P.settled(s)  # release not answered
    s = P.decide(s, P.Released()).state
    assert P.settled(s) and s.state_name == "released"


def test_remove_of_a_held_service_releases_then_forgets():
    s = P.State(phase=P.Phase.HELD, holding=True, token=5)
    d = P.decide(s, P.Command("remove"))
    assert [type(a).__name__ for a in d.actions] == ["Release", "Forget"]
    assert not d.state.holding and d.refused is None


def test_unknown_command_is_a_programming_error():
    with pytest.raises(ValueError):
        P.decide(P.State(), P.Command("reboot"))
