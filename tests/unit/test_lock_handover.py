"""Authority hand-overs that must not cost holds, and early warning where a hold is doomed, on a
simulated cluster: a clean stop of the authority (its last beat says it leaves), a restarted
lowest-domain node joining the established authority, a silent lock daemon in a two-node
cluster, and a holder's node cut off (membership unknown, or no quorum in its view)."""
from __future__ import annotations

import random

import pytest

from skyge.services.lock.protocol import MS, Timing
from skyge.services.lock.sim import SimCluster, check_history
from skyge.v1 import lock_pb2 as lp
from tests.unit.test_lock_authority import SETTLE, first, run_checked, settled
from tests.unit.lock_timing import COMPACT

TIMING = COMPACT


def holding(cluster: SimCluster, domain: int, name=(600, 1)) -> int:
    session = cluster.open(domain)
    cluster.acquire(session, name)
    cluster.run(5 * MS)
    assert cluster.of(session, "granted"), cluster.of(session)
    return session


# ---- a clean stop of the authority


def test_a_clean_stop_of_the_authority_hands_over_at_once_without_losing_holds():
    """The CTS case: the authority's own session releases, a session on another node is granted,
    and the authority's daemon stops. Its voters release their promise at its last beat: the
    successor is elected at once and confirms the new holder well within its lease."""
    cluster = settled(3, seed=21)
    assert cluster.active_authority() == 1
    own = holding(cluster, 1)
    heir = cluster.open(2)
    cluster.acquire(heir, (600, 1))
    cluster.run(5 * MS)
    kept = holding(cluster, 3, (600, 2))
    cluster.release(own, (600, 1))
    cluster.run(1 * MS)
    assert cluster.of(heir, "granted")
    stopped = cluster.now
    cluster.stop(1)
    run_checked(cluster, 5 * MS)
    assert cluster.active_authority() == 2, "no successor within 5 ms of the stop"
    run_checked(cluster, SETTLE)
    assert not cluster.of(heir, "lost") and not cluster.of(kept, "lost")
    assert cluster.node(2).member.connected and cluster.node(3).member.connected
    assert any("lock daemon of node 1 stopped" in line for line in cluster.log_of(2))
    assert cluster.now - stopped > 5 * TIMING.hold_lease_ns  # the holds outlived many leases
    assert check_history(cluster.records) == []


@pytest.mark.parametrize("stopping,waiting", [(1, 3), (3, 2)], ids=["authority", "member"])
def test_a_stopping_daemon_tells_its_sessions_before_its_locks_pass_on(stopping, waiting):
    cluster = settled(3, seed=22)
    own = holding(cluster, stopping)
    waiter = cluster.open(waiting)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    cluster.stop(stopping)
    cluster.run(SETTLE)
    lost, granted = first(cluster, own, "lost"), first(cluster, waiter, "granted")
    assert granted.time - lost.time >= TIMING.leave_warning_ns
    assert granted.time - lost.time < TIMING.leave_warning_ns + 5 * MS  # no lease to wait for
    assert granted.token > first(cluster, own, "granted").token
    assert check_history(cluster.records) == []


@pytest.mark.parametrize("stopping,waiting", [(1, 3), (3, 2)], ids=["authority", "member"])
def test_a_stall_before_a_stopping_daemons_lost_goes_out_delays_its_last_beat_as_much(
        stopping, waiting):
    """The daemon stalls (SIGSTOP, a starved CPU) after it computed its sessions' Lost and
    before it sent it, longer than the warning (and shorter than the leases, at the daemon's
    timing): the warning counts from when the Lost went out, so the peers still learn it left
    only the full warning later."""
    timing = Timing()
    cluster = settled(3, seed=22, timing=timing)
    cluster.run(2 * timing.hold_lease_ns)
    own = holding(cluster, stopping)
    waiter = cluster.open(waiting)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    stall = timing.leave_warning_ns * 3 // 2
    cluster.stall(stopping, stall, before_send=True)
    cluster.stop(stopping)
    cluster.run(SETTLE + timing.hold_lease_ns)
    lost, granted = first(cluster, own, "lost"), first(cluster, waiter, "granted")
    assert lost.time >= cluster.stall_log[-1][2]  # it went out at the stall's end
    assert granted.time - lost.time >= timing.leave_warning_ns
    assert granted.time - lost.time < timing.leave_warning_ns + 5 * MS  # no lease to wait for
    assert check_history(cluster.records) == []


def test_twenty_clean_restarts_of_the_authority_never_cost_another_nodes_hold():
    cluster = settled(3, seed=23)
    kept = holding(cluster, 3)
    for _ in range(20):
        authority = cluster.active_authority()
        assert authority in (1, 2)
        cluster.stop(authority)
        run_checked(cluster, 5 * MS)
        assert cluster.active_authority() not in (None, authority)
        run_checked(cluster, 45 * MS)
        cluster.boot(authority)
        run_checked(cluster, SETTLE)
    assert not cluster.of(kept, "lost")
    assert check_history(cluster.records) == []


def test_a_clean_stop_in_a_two_node_cluster_leaves_the_other_node_in_charge():
    cluster = settled(2, seed=24)
    cluster.reference_ok.update({1: True, 2: True})
    kept = holding(cluster, 2)
    cluster.stop(1)
    run_checked(cluster, 5 * MS)
    assert cluster.authorities() == [2]
    run_checked(cluster, SETTLE)
    assert not cluster.of(kept, "lost")
    assert "stopped or is silent, reference IP reachable" in cluster.node(2).quorum_rule(
        cluster.now)


# ---- a restarted lowest-domain node joins the established authority


def test_a_restarted_lowest_node_joins_the_authority_so_a_backup_cut_off_moves_nothing():
    """CTS partition_backup_alone: node 1's daemon restarted while node 2 is the authority; it
    must vote for node 2, not for itself (the lowest domain), so that cutting node 3 off leaves
    node 2 its quorum (itself and node 1)."""
    cluster = settled(3, seed=25)
    cluster.crash(1)
    run_checked(cluster, SETTLE)
    assert cluster.active_authority() == 2
    cluster.boot(1)
    run_checked(cluster, SETTLE)
    assert cluster.node(1).vote_for == 2
    kept = holding(cluster, 2)
    term = cluster.node(2).member.term
    cluster.partition([3], [1, 2])
    run_checked(cluster, SETTLE)
    assert cluster.active_authority() == 2 and cluster.node(2).member.term == term
    assert not cluster.of(kept, "lost")
    assert check_history(cluster.records) == []


# ---- two nodes: a silent lock daemon counts as absent


@pytest.mark.parametrize("reachable", [True, False])
def test_two_nodes_a_dead_lock_daemon_leaves_the_other_node_in_charge_with_the_reference_ip(
        reachable):
    """The backup's lock daemon is killed; its heartbeat daemon runs on, so the view keeps both.
    After `switch_ns` of silence it counts as absent: the survivor regains the authority through
    the reference IP (and only then), and gives it back to the vote when the daemon returns."""
    cluster = settled(2, seed=26)
    cluster.reference_ok.update({1: reachable, 2: True})
    holding(cluster, 1)
    cluster.kill(2)
    run_checked(cluster, TIMING.switch_ns + 10 * MS)
    late = cluster.open(1)
    cluster.acquire(late, (600, 2))
    cluster.run(5 * MS)
    if not reachable:
        assert cluster.authorities() == []
        assert first(cluster, late, "failed").reason == lp.FAIL_NO_QUORUM
        return
    assert cluster.authorities() == [1] and cluster.of(late, "granted")
    assert "stopped or is silent" in cluster.node(1).quorum_rule(cluster.now)
    cluster.boot(2)
    run_checked(cluster, SETTLE)
    assert cluster.authorities() == [1] and cluster.node(2).vote_for == 1
    assert cluster.node(1).quorum_needed(cluster.now) == 2
    assert not cluster.of(late, "lost")
    assert check_history(cluster.records) == []


def test_two_nodes_a_node_back_in_the_view_before_its_lock_daemon_moves_nothing():
    """The backup crashes and boots: its heartbeat daemon is back in the view before its lock
    daemon runs. Still silent, it stays absent: the survivor keeps the authority (and its hold)
    until the daemon speaks, then the daemon joins it."""
    cluster = settled(2, seed=33)
    cluster.reference_ok.update({1: True, 2: True})
    cluster.crash(2)
    run_checked(cluster, SETTLE)
    kept = holding(cluster, 1)
    cluster.set_view(1, {1, 2})
    for _ in range(100):
        run_checked(cluster, 1 * MS)
        assert cluster.authorities() == [1]
    cluster.boot(2)
    run_checked(cluster, SETTLE)
    assert cluster.authorities() == [1] and cluster.node(2).vote_for == 1
    assert not cluster.of(kept, "lost")


def test_two_nodes_a_lock_daemon_that_was_never_heard_counts_as_absent_after_the_bound():
    cluster = SimCluster(2, seed=27, timing=COMPACT)
    cluster.reference_ok.update({1: True})
    cluster.kill(2)
    run_checked(cluster, TIMING.switch_ns - 5 * MS)
    assert cluster.authorities() == []
    run_checked(cluster, 20 * MS)
    assert cluster.authorities() == [1]


# ---- a cut-off holder is told at once


def test_a_holder_whose_heartbeat_daemon_dies_is_told_at_once_and_long_before_the_regrant():
    """Membership unknown: no authority counts on the node any more. Its sessions are told at
    once; the authority keeps the hold until the lease it had ends, so the margin is a lease."""
    cluster = settled(3, seed=28)
    holder = holding(cluster, 2)
    waiter = cluster.open(3)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    died = cluster.now
    cluster.set_view(2, None)
    for other in (1, 3):
        cluster.set_view(other, {1, 3}, at=died + cluster.detect)
    run_checked(cluster, SETTLE)
    lost, granted = first(cluster, holder, "lost"), first(cluster, waiter, "granted")
    assert lost.time - died < 1 * MS
    assert granted.time - lost.time >= TIMING.hold_lease_ns - 2 * TIMING.beat_ns
    assert check_history(cluster.records) == []


def test_an_authority_holder_whose_heartbeat_daemon_dies_is_told_at_once():
    cluster = settled(3, seed=29)
    holder = holding(cluster, 1)
    waiter = cluster.open(2)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    died = cluster.now
    cluster.set_view(1, None)
    for other in (2, 3):
        cluster.set_view(other, {2, 3}, at=died + cluster.detect)
    run_checked(cluster, SETTLE)
    lost, granted = first(cluster, holder, "lost"), first(cluster, waiter, "granted")
    assert lost.time - died < 1 * MS
    assert granted.time - lost.time >= TIMING.vote_lease_ns - TIMING.beat_ns
    assert check_history(cluster.records) == []


@pytest.mark.parametrize("holder_node", [1, 2])
def test_a_holder_cut_off_from_every_peer_is_told_when_its_view_loses_quorum(holder_node):
    """Told when the heartbeat reports every peer lost, not at the lease end. On the authority's
    node the regrant comes `authority_grace_ns` after the vote promises, so the margin is what
    remains of it after the detection; on a member's, what remains of its hold lease."""
    cluster = settled(3, seed=30)
    holder = holding(cluster, holder_node)
    waiter = cluster.open(3)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    on_authority = cluster.active_authority() == holder_node
    cut = cluster.now
    cluster.partition([holder_node], [d for d in (1, 2, 3) if d != holder_node])
    run_checked(cluster, SETTLE)
    lost, granted = first(cluster, holder, "lost"), first(cluster, waiter, "granted")
    assert lost.time - cut <= cluster.detect + 1 * MS
    if on_authority:
        margin = TIMING.early_ns
    else:
        margin = TIMING.hold_lease_ns - cluster.detect - TIMING.beat_ns
    assert granted.time - lost.time >= margin
    assert check_history(cluster.records) == []


def test_a_brief_cut_off_resyncs_before_the_member_takes_new_work():
    """The view comes back at once: the hold stays lost (its session was told), the authority
    learns it at the old lease end, and the member then works again."""
    cluster = settled(3, seed=31)
    holder = holding(cluster, 2)
    waiter = cluster.open(3)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    cut = cluster.now
    cluster.set_view(2, None)
    cluster.set_view(2, {1, 2, 3}, at=cut + 2 * MS)
    run_checked(cluster, 10 * MS)
    assert cluster.of(holder, "lost") and not cluster.of(waiter, "granted")
    assert not cluster.node(2).member.connected
    run_checked(cluster, SETTLE)
    assert first(cluster, waiter, "granted").time - cut >= TIMING.vote_lease_ns
    assert cluster.node(2).member.connected
    again = cluster.open(2)
    cluster.acquire(again, (600, 3))
    cluster.run(5 * MS)
    assert cluster.of(again, "granted")
    assert check_history(cluster.records) == []


def queued_three(cluster: SimCluster, holder: int, first: int, second: int) -> tuple[int, int, int]:
    """A holder and two waiters (fifo order: first, then second) of (600, 1)."""
    sessions = cluster.open(holder), cluster.open(first), cluster.open(second)
    for session in sessions:
        cluster.acquire(session, (600, 1))
        cluster.run(5 * MS)
    return sessions


@pytest.mark.parametrize("release_during_cut", [False, True])
@pytest.mark.parametrize("blipped", [1, 3])
def test_a_waiter_cut_off_briefly_keeps_its_place_in_the_queue(blipped, release_during_cut):
    """The first waiter's view shrinks to itself for a moment (a heartbeat stall under load), on
    the authority's node or another: its wait is neither failed nor dropped (its node reports it
    with its key at the resync), so it is still served before the waiter that came after it,
    also when the lock is freed during the cut-off (the grant is delivered once reconnected).
    Failed at once, its session could ask again only after the resync had removed the wait, and
    would be queued at the back (test_ha's crash hand-off, CTS status_hangs)."""
    cluster = settled(3, seed=33)
    holder, waiter, later = queued_three(cluster, 2, blipped, 3 if blipped == 1 else 1)
    cut = cluster.now
    cluster.set_view(blipped, {blipped}, at=cut)
    cluster.set_view(blipped, {1, 2, 3}, at=cut + 2 * MS)
    if release_during_cut:
        cluster.run(1 * MS)
        cluster.release(holder, (600, 1))
    run_checked(cluster, SETTLE)  # well past the resync
    assert not cluster.of(waiter, "failed")
    assert cluster.node(blipped).member.connected
    if not release_during_cut:
        cluster.release(holder, (600, 1))
        run_checked(cluster, 20 * MS)
    assert cluster.of(waiter, "granted") and not cluster.of(later, "granted")
    assert check_history(cluster.records) == []


@pytest.mark.parametrize("release_during_cut", [False, True])
def test_a_waiter_cut_off_past_its_lease_fails_and_leaves_the_queue(release_during_cut):
    """A cut-off that lasts: the kept wait (or the grant that came meanwhile, never delivered)
    fails at the old lease end and the authority drops it, so the lock goes to the next waiter."""
    cluster = settled(3, seed=34)
    holder, waiter, later = queued_three(cluster, 2, 3, 1)
    cut = cluster.now
    cluster.set_view(3, {3}, at=cut)
    if release_during_cut:
        cluster.run(1 * MS)
        cluster.release(holder, (600, 1))
    run_checked(cluster, SETTLE)
    failed = first(cluster, waiter, "failed")
    assert failed.reason == lp.FAIL_NO_QUORUM
    assert failed.time - cut <= TIMING.hold_lease_ns + TIMING.early_ns
    if not release_during_cut:
        cluster.release(holder, (600, 1))
        run_checked(cluster, 20 * MS)
    assert cluster.of(later, "granted") and not cluster.of(waiter, "granted")
    assert check_history(cluster.records) == []


@pytest.mark.parametrize("stalled", [1, 2])
def test_two_nodes_a_stalled_lock_daemon_never_makes_a_second_authority(stalled):
    """A lock daemon stalls (starved, SIGSTOP) past `switch_ns` while its heartbeat runs on: the
    other node counts it absent and may act alone; thawed, the stalled one reads the other's
    datagrams before it could count it absent in turn, so leases never overlap."""
    cluster = settled(2, seed=32)
    cluster.reference_ok.update({1: True, 2: True})
    for domain in (1, 2):
        holding(cluster, domain, (600, domain))
    start = cluster.now
    cluster.stall(stalled, 150 * MS)
    run_checked(cluster, SETTLE)
    assert cluster.authorities() == [3 - stalled]
    assert check_history(cluster.records, excused=[(stalled, start, start + 150 * MS)]) == []


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_two_nodes_random_stops_kills_and_stalls_keep_one_holder(seed):
    """Two nodes both reaching the reference IP; lock daemons stop, die, stall and come back, nodes
    crash and boot, while sessions on both take and give back one lock: never two authorities,
    never two holders."""
    rng = random.Random(seed)
    cluster = settled(2, seed=seed)
    cluster.reference_ok.update({1: True, 2: True})
    sessions = {d: cluster.open(d) for d in (1, 2)}
    stalls: list[tuple[int, int, int]] = []
    down: set[int] = set()
    for step in range(60):
        for domain, session in list(sessions.items()):
            if domain in down:
                continue
            local = cluster.node(domain).member.sessions.get(session)
            if local is None:
                continue
            if local.holds and rng.random() < 0.3:
                cluster.release(session, next(iter(local.holds)))
            elif not local.holds and not local.waits:
                cluster.acquire(session, (600, 1))
        if step % 6 == 3:
            victim = rng.choice([1, 2])
            fault = rng.choice(["stop", "kill", "crash", "stall", "boot"])
            if fault == "boot" and down:
                back = down.pop()
                cluster.boot(back)
                run_checked(cluster, 30 * MS)
                sessions[back] = cluster.open(back)
            elif fault in ("stop", "kill", "crash") and not down:
                getattr(cluster, fault)(victim)
                down.add(victim)
            elif fault == "stall" and victim not in down:
                length = rng.randrange(10, 150) * MS
                cluster.stall(victim, length)
                stalls.append((victim, cluster.now, cluster.now + length))
        run_checked(cluster, rng.randrange(2, 30) * MS)
    assert check_history(cluster.records, excused=stalls) == []


def test_two_lone_terms_that_never_met_still_give_rising_tokens():
    """Two nodes: node 1 crashes, node 2 grants alone; node 1 comes back while node 2's daemon is
    stalled, node 2 crashes before they exchange a beat, and node 1 grants alone. Neither knew the
    other's tokens (the seed's floor exchange needs a beat): a lone term starts above the clock,
    so the later grant still carries the higher token (the simulation's seed 345 saw a repeat)."""
    cluster = settled(2, seed=25)
    cluster.reference_ok.update({1: True, 2: True})
    cluster.crash(1)
    earlier = granted_alone(cluster, 2)
    cluster.stall(2, SETTLE)
    cluster.boot(1)
    run_checked(cluster, SETTLE // 2)
    cluster.crash(2)
    assert granted_alone(cluster, 1).token > earlier.token


def granted_alone(cluster: SimCluster, domain: int):
    """Once `domain` is the only authority, a new session of it is granted the lock."""
    run_checked(cluster, SETTLE)
    assert cluster.authorities() == [domain]
    session = cluster.open(domain)
    cluster.acquire(session, (600, 1))
    run_checked(cluster, 5 * MS)
    return first(cluster, session, "granted")
