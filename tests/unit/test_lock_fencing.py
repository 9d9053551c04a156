"""Fencing on a simulated cluster (every node has a fence command): nothing a lost node held, or
may have held, is granted to anyone else before its fence succeeded; a failed fence blocks those
grants and runs again; a node that comes back unblocks them without one."""
from __future__ import annotations

import itertools

import pytest

from skyge.services.lock.protocol import MS
from skyge.services.lock.sim import SimCluster, check_history
from tests.unit.test_lock_authority import SETTLE, first, random_run, settled
from tests.unit.lock_timing import COMPACT

RETRY = COMPACT.fence_retry_ns


def holder_and_waiter(cluster: SimCluster, holder_node: int, waiter_node: int,
                      name=(600, 1)) -> tuple[int, int]:
    holder, waiter = cluster.open(holder_node), cluster.open(waiter_node)
    cluster.acquire(holder, name)
    cluster.run(3 * MS)
    cluster.acquire(waiter, name)
    cluster.run(10 * MS)
    assert cluster.of(holder, "granted") and not cluster.of(waiter, "granted")
    return holder, waiter


def fenced_at(cluster: SimCluster, target: int) -> int:
    return next(t for t, _, fenced, ok in cluster.fence_log if fenced == target and ok)


def test_a_lost_holders_lock_passes_on_only_after_its_fence():
    cluster = settled(3, seed=4, fencing=True, fence_ns=30 * MS)
    assert cluster.fence_log == []  # a healthy start fences nobody
    holder, waiter = holder_and_waiter(cluster, 3, 2)
    cluster.crash(3)
    cluster.run(SETTLE)
    granted = first(cluster, waiter, "granted")
    assert granted.time >= fenced_at(cluster, 3)
    assert granted.token > first(cluster, holder, "granted").token
    assert [(by, target) for _, by, target, _ in cluster.fence_log] == [(1, 3)]
    assert check_history(cluster.records) == []


def test_a_lost_node_that_held_nothing_is_not_fenced():
    cluster = settled(3, seed=4, fencing=True)
    cluster.crash(3)
    cluster.run(SETTLE)
    session = cluster.open(2)
    cluster.acquire(session, (600, 1))
    cluster.run(5 * MS)
    assert cluster.of(session, "granted") and cluster.fence_log == []


def test_a_failed_fence_blocks_only_that_nodes_locks_and_runs_again():
    cluster = settled(3, seed=4, fencing=True)
    fence_works = False
    cluster.fence_ok = lambda domain: fence_works
    _, waiter = holder_and_waiter(cluster, 3, 2)
    cluster.crash(3)
    cluster.run(3 * RETRY)
    assert not cluster.of(waiter, "granted")
    attempts = [t for t, _, target, ok in cluster.fence_log if target == 3 and not ok]
    assert len(attempts) >= 3
    assert all(b - a >= RETRY for a, b in itertools.pairwise(attempts))
    assert "locks 600/1" in cluster.node(1).fence_waiting(3)
    other = cluster.open(2)  # the rest of the table goes on
    cluster.acquire(other, (600, 9))
    cluster.run(5 * MS)
    assert cluster.of(other, "granted")
    fence_works = True
    cluster.run(RETRY + 10 * MS)
    assert first(cluster, waiter, "granted").time >= fenced_at(cluster, 3)
    assert cluster.node(1).fence_waiting(3) == ""
    assert check_history(cluster.records) == []


def test_a_new_authority_grants_nothing_until_the_lost_authority_is_fenced():
    cluster = settled(3, seed=8, fencing=True)
    fence_works = False
    cluster.fence_ok = lambda domain: fence_works
    own, waiter = holder_and_waiter(cluster, 1, 3)  # held on the authority itself
    cluster.crash(1)
    cluster.run(SETTLE)
    free = cluster.open(2)
    cluster.acquire(free, (600, 8))  # even a lock nobody held: node 1 may have held it
    cluster.run(2 * RETRY)
    assert cluster.authorities() == [2] and not cluster.node(2).auth.active
    assert not cluster.of(waiter, "granted") and not cluster.of(free, "granted")
    assert "every grant" in cluster.node(2).fence_waiting(1)
    fence_works = True
    cluster.run(RETRY + 10 * MS)
    granted = first(cluster, waiter, "granted")
    assert granted.time >= fenced_at(cluster, 1) and cluster.of(free, "granted")
    assert granted.token > first(cluster, own, "granted").token
    assert check_history(cluster.records) == []


@pytest.mark.parametrize("comes_back", ["rebooted", "partition healed"])
def test_a_lost_node_that_comes_back_unblocks_without_a_fence(comes_back):
    cluster = settled(3, seed=5, fencing=True)
    cluster.fence_ok = lambda domain: False
    holder, waiter = holder_and_waiter(cluster, 3, 2)
    if comes_back == "rebooted":
        cluster.crash(3)
        cluster.run(RETRY)
        assert not cluster.of(waiter, "granted")
        cluster.boot(3)  # a new lock daemon instance: its old holds are gone
    else:
        cluster.partition([3], [1, 2])
        cluster.run(RETRY)
        assert not cluster.of(waiter, "granted")
        assert first(cluster, holder, "lost")  # its lease ran out: it told its session
        cluster.heal()  # the same instance reports again, holding nothing
    cluster.run(SETTLE)
    assert first(cluster, waiter, "granted")
    assert not any(ok for _, _, _, ok in cluster.fence_log)
    assert check_history(cluster.records) == []


def test_random_faults_with_fencing_keep_one_holder_and_serve_every_waiter():
    stats = random_run(99, fencing=True)
    assert stats["granted"] > 40 and stats["faults"] >= 3, stats


def test_a_new_authority_fences_a_stalled_member_it_heard_of_only_through_the_relay():
    """Node 2's lock daemon restarted while node 1 led; members do not beat each other, so its
    new instance heard of node 3 only through node 1's relay. Node 3, holding a lock, then stalls
    (a frozen node: nothing there can stop what it runs) and node 1 crashes: node 2, the new
    authority, fences node 3 before its lock passes on, as it would a member it heard itself."""
    cluster = settled(5, seed=9, fencing=True)
    assert cluster.active_authority() == 1
    cluster.kill(2)
    cluster.boot(2)
    cluster.run(SETTLE)
    heard_of = cluster.node(2).peers[3]
    assert heard_of.heard_ns < 0 <= heard_of.relayed_ns  # the relay's word only
    _, waiter = holder_and_waiter(cluster, 3, 4)
    cluster.stall(3, 20 * SETTLE)
    cluster.crash(1)
    cluster.run(3 * SETTLE)
    assert (2, 3) in [(by, target) for _, by, target, ok in cluster.fence_log if ok]
    assert first(cluster, waiter, "granted").time >= fenced_at(cluster, 3)
    assert check_history(cluster.records) == []
