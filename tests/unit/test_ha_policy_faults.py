"""The HA policy under faults: failed runs (process death, missed pulses), local restarts, the
back-off that stops a service failing everywhere from ping-ponging, force_reboot, isolation and
emon's refusal of new services."""
from __future__ import annotations

from skyge.services.ha import policy as P


def replay(state: P.State, events, settings: P.Settings) -> tuple[P.State, list[P.Decision]]:
    decisions = []
    for event in events:
        decision = P.decide(state, event, settings)
        decisions.append(decision)
        state = decision.state
    return state, decisions


def running(settings: P.Settings, token: int = 5) -> P.State:
    state, _ = replay(P.State(), [P.Command("start"), P.Granted(token), P.StartDone(True)],
                      settings)
    assert state.phase is P.Phase.RUNNING
    return state


def kinds(decision: P.Decision) -> list[str]:
    return [type(action).__name__ for action in decision.actions]


def test_a_failed_run_restarts_here_with_the_same_token_while_restarts_are_left():
    s = P.Settings(restarts=2, backoff_s=1.0)
    state = running(s)
    for attempt in (1, 2):
        state, (failed, stopped) = replay(state, [P.Failed(state.run, "process 42 died", 3.0),
                                                  P.StopDone(True)], s)
        assert kinds(failed) == ["CancelCheck", "Stop"]
        assert f"restart {attempt} of 2 here" in failed.state.reason
        assert state.phase is P.Phase.STARTING and state.holding
        assert stopped.actions == (P.Start(5, attempt + 1),)  # same lock, same token, next run
        state = P.decide(state, P.StartDone(True), s).state
    # restarts used up: the third failure switches away, with a back-off before queueing again
    state, (failed, stopped) = replay(state, [P.Failed(state.run, "process 43 died", 3.0),
                                              P.StopDone(True)], s)
    assert state.phase is P.Phase.WAITING and state.backing_off and not state.acquiring
    assert kinds(stopped) == ["Release", "ScheduleRetry"]
    assert stopped.actions[1] == P.ScheduleRetry(1.0)
    assert state.fail_count == 3 and "queueing again in 1 s" in state.reason
    state = P.decide(state, P.RetryAcquire(), s).state
    assert state.acquiring and not state.backing_off


def test_back_off_doubles_per_failure_in_a_row_and_a_stable_run_forgets():
    s = P.Settings(backoff_s=1.0, backoff_max_s=5.0, stable_s=60.0)
    assert [P.backoff_delay(s, n) for n in range(0, 6)] == [0, 1, 2, 4, 5, 5]
    assert P.backoff_delay(P.Settings(backoff_s=0.0), 3) == 0  # off: queue again at once
    state = running(s)
    delays = []
    for uptime in (2.0, 2.0, 2.0, 120.0):
        state, (_, stopped, *_) = replay(state, [P.Failed(state.run, "died", uptime),
                                                 P.StopDone(True), P.Released(),
                                                 P.RetryAcquire(), P.Granted(5),
                                                 P.StartDone(True)], s)
        delays.append(stopped.actions[-1].delay_s)
    assert delays == [1.0, 2.0, 4.0, 1.0]  # the 2-minute run reset the streak


def test_without_back_off_the_node_queues_again_at_once_like_the_seed():
    s = P.Settings(backoff_s=0.0)
    state, (_, stopped) = replay(running(s), [P.Failed(1, "died"), P.StopDone(True)], s)
    assert kinds(stopped) == ["Release", "Acquire"] and state.acquiring


def test_failures_of_an_old_run_or_outside_a_run_are_ignored():
    s = P.Settings()
    state = running(s)
    assert P.decide(state, P.Failed(state.run - 1, "late"), s).ignored
    stopping = P.decide(state, P.Command("stop"), s).state
    assert P.decide(stopping, P.Failed(stopping.run, "killed by our stop"), s).ignored


def test_a_failed_stop_with_force_reboot_reboots_the_node():
    s = P.Settings(force_reboot=True)
    state, (_, stopped) = replay(running(s), [P.Command("release"), P.StopDone(False, "exit 1")],
                                 s)
    assert state.phase is P.Phase.FAILED and state.holding  # the lock stays until the reboot
    assert kinds(stopped) == ["Reboot"] and "exit 1" in stopped.actions[0].reason
    plain, (_, stopped) = replay(running(P.Settings()), [P.Command("release"),
                                                         P.StopDone(False, "exit 1")], P.Settings())
    assert stopped.actions == () and plain.phase is P.Phase.FAILED


def test_isolation_stops_at_once_floating_ips_first_then_waits_for_the_lock_again():
    s = P.Settings()
    state, (isolated, stopped) = replay(running(s), [P.Isolated("no reference IP answers"),
                                                     P.StopDone(True)], s)
    assert isolated.actions[-1] == P.Stop(urgent=True)
    assert "isolated: no reference IP answers" in isolated.state.reason
    assert kinds(stopped) == ["Release", "Acquire"] and state.fail_count == 0
    assert P.decide(P.State(), P.Isolated(), s).ignored


def test_refusing_new_services_leaves_the_queue_and_takes_them_again_when_it_ends():
    s = P.Settings()
    waiting, _ = replay(P.State(), [P.Command("start"), P.Queued(2)], s)
    refused = P.decide(waiting, P.Refuse(True, "cpu_load wm_90"), s)
    assert kinds(refused) == ["Release"] and not refused.state.acquiring
    assert "cpu_load wm_90" in refused.state.reason
    state = P.decide(refused.state, P.Released(), s).state
    assert P.settled(state)
    assert P.decide(state, P.RetryAcquire(), s).actions == ()  # no queueing while refusing
    accepted = P.decide(state, P.Refuse(False), s)
    assert kinds(accepted) == ["Acquire"] and accepted.state.acquiring

    # a start command while refusing waits outside the queue; what runs keeps running
    idle = P.decide(P.State(), P.Refuse(True), s).state
    started = P.decide(idle, P.Command("start"), s)
    assert started.actions == () and started.state.phase is P.Phase.WAITING
    assert "not queued until accepted" in started.state.reason
    run = P.decide(running(s), P.Refuse(True), s)
    assert run.actions == () and run.state.phase is P.Phase.RUNNING


def test_an_ownership_deadline_that_passed_stops_at_once_and_gives_the_lock_back():
    """The deadman fired (the lock daemon was frozen, or its renewal is late): the lock daemon
    may still count the hold, so after the urgent stop the lock is released before queueing
    again (an Acquire on a held lock would be refused)."""
    state = P.State(phase=P.Phase.RUNNING, holding=True, token=7, run=1)
    stop = P.decide(state, P.Expired("no renewal"))
    assert stop.state.phase is P.Phase.STOPPING and P.Stop(urgent=True) in stop.actions
    after = P.decide(stop.state, P.StopDone(True, "stopped"))
    assert after.actions[:2] == (P.Release(), P.Acquire())
    assert after.state.phase is P.Phase.WAITING and not after.state.holding
    assert P.decide(P.State(phase=P.Phase.WAITING), P.Expired()).ignored


def test_maintenance_leaves_services_as_they_are_and_checks_them_again_when_it_ends():
    """Pacemaker's maintenance mode: no checks, starts, stops or moves; failures are shown, not
    acted on; commands are refused; waiting nodes leave the queue."""
    s = P.Settings(check_failures=1)
    on = P.decide(running(s), P.Maintenance(True), s)
    assert kinds(on) == ["CancelCheck"] and on.state.phase is P.Phase.RUNNING
    assert on.state.unmanaged and "unmanaged" in on.state.reason
    died = P.decide(on.state, P.Failed(on.state.run, "process 42 died"), s)
    assert died.actions == () and died.state.phase is P.Phase.RUNNING
    assert "not acted on" in died.state.reason
    assert P.decide(died.state, P.CheckDone(on.state.run, False, "down"), s).actions == ()
    for action in ("stop", "release", "switch", "start", "remove", "stopall"):
        refused = P.decide(died.state, P.Command(action), s)
        assert refused.refused == P.MAINTENANCE_REFUSAL and refused.actions == ()
    off = P.decide(died.state, P.Maintenance(False), s)
    assert kinds(off) == ["ScheduleCheck"] and off.actions[0].delay_s == 0
    assert not off.state.unmanaged
    # the check that follows acts as usual
    failed = P.decide(off.state, P.CheckDone(off.state.run, False, "down"), s)
    assert kinds(failed) == ["CancelCheck", "Stop"]

    waiting, _ = replay(P.State(), [P.Command("start"), P.Queued(1)], s)
    left = P.decide(waiting, P.Maintenance(True), s)
    assert kinds(left) == ["Release"] and left.state.phase is P.Phase.WAITING
    state = P.decide(left.state, P.Released(), s).state
    assert P.decide(state, P.RetryAcquire(), s).actions == ()
    back = P.decide(state, P.Maintenance(False), s)
    assert kinds(back) == ["Acquire"] and back.state.acquiring


def test_maintenance_does_not_outrank_safety_a_lost_lock_still_stops_the_service():
    s = P.Settings()
    state = P.decide(running(s), P.Maintenance(True), s).state
    lost = P.decide(state, P.Lost("node_left"), s)
    assert kinds(lost) == ["CancelCheck", "Stop"] and lost.actions[-1].urgent
    stopped = P.decide(lost.state, P.StopDone(True), s)
    # stopped here, and it does not queue again until maintenance ends
    assert stopped.state.phase is P.Phase.WAITING and "Acquire" not in kinds(stopped)
    assert kinds(P.decide(stopped.state, P.Maintenance(False), s)) == ["Acquire"]


def test_a_hold_adopted_in_maintenance_is_taken_as_it_is():
    s = P.Settings()
    state = P.decide(P.State(), P.Maintenance(True), s).state
    adopted = P.decide(state, P.Adopted(9), s)
    (start,) = adopted.actions
    assert isinstance(start, P.Start) and start.adopt and start.unmanaged
    up = P.decide(adopted.state, P.StartDone(True, "adopted as it is"), s)
    assert up.actions == () and up.state.phase is P.Phase.RUNNING and up.state.holding


def test_a_failed_start_is_forgotten_after_the_failure_timeout_and_the_node_queues_again():
    s = P.Settings(failure_timeout_s=30)
    state, decisions = replay(P.State(), [P.Command("start"), P.Granted(3),
                                          P.StartDone(False, "exit 1"), P.StopDone(True)], s)
    assert state.phase is P.Phase.FAILED and state.fail_count == 1
    expiry = decisions[-1].actions[-1]
    assert isinstance(expiry, P.ExpireFailureLater) and expiry.delay_s == 30
    assert P.decide(state, P.FailureExpired(expiry.run - 1), s).ignored  # an older failure's
    again = P.decide(state, P.FailureExpired(expiry.run), s)
    assert kinds(again) == ["Acquire"] and again.state.fail_count == 0
    assert "failure expired after 30 s" in again.state.reason
    # without a failure timeout only a start command does it
    _, decisions = replay(P.State(), [P.Command("start"), P.Granted(3),
                                      P.StartDone(False, "exit 1"), P.StopDone(True)],
                          P.Settings())
    assert "ExpireFailureLater" not in kinds(decisions[-1])
    # stopped meanwhile by command: the expiry does nothing
    stopped = P.decide(state, P.Command("stop"), s).state
    assert P.decide(stopped, P.FailureExpired(expiry.run), s).ignored
