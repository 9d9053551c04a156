"""The lock table (services/lock/protocol/table.py): waiter order per slot range, tokens,
recovery."""
from __future__ import annotations

import random

import pytest

from skyge.services.lock.protocol.table import (FIFO, PRIORITY, RANDOM, STACK, Entry, LockTable,
                                                check_name, order_of)


def entry(session: int, node: int = 1, priority: int = 0) -> Entry:
    return Entry(session=session, node=node, label=f"s{session}", priority=priority)


def serve_all_in_turn(table: LockTable, name, holder: int) -> list[int]:
    """Release the holder again and again; the sessions in the order they got the lock."""
    order = []
    while True:
        _, grants = table.release(name, holder, 0)
        if not grants:
            return order
        holder = grants[0].entry.session
        order.append(holder)


@pytest.mark.parametrize("slot,order", [(0, RANDOM), (511, RANDOM), (512, FIFO), (1023, FIFO),
                                        (1024, STACK), (1535, STACK), (1536, PRIORITY),
                                        (2047, PRIORITY)])
def test_order_follows_the_slot_range(slot, order):
    assert order_of((slot, 0)) == order


def test_groups_are_fifo():
    assert order_of("db-primary") == FIFO


def test_check_name_ranges():
    assert check_name(2047, 8191) is None
    assert "slot" in check_name(2048, 0)
    assert "lock" in check_name(0, 8192)
    assert "priority" in check_name(600, 1, priority=3)
    assert check_name(1600, 1, priority=-3) is None


def test_fifo_serves_first_come_first():
    table = LockTable()
    name = (600, 100)
    assert table.acquire(name, entry(1), 0).outcome == "granted"
    positions = [table.acquire(name, entry(s), 0).position for s in (2, 3, 4)]
    assert positions == [1, 2, 3]
    assert serve_all_in_turn(table, name, 1) == [2, 3, 4]


def test_stack_serves_last_come_first():
    table = LockTable()
    name = (1100, 5)
    table.acquire(name, entry(1), 0)
    positions = [table.acquire(name, entry(s), 0).position for s in (2, 3, 4)]
    assert positions == [1, 1, 1]  # each newcomer is next
    assert [e.session for e in table.waiters(name)] == [4, 3, 2]
    assert serve_all_in_turn(table, name, 1) == [4, 3, 2]


def test_priority_serves_highest_first_ties_fifo():
    table = LockTable()
    name = (1600, 0)
    table.acquire(name, entry(1), 0)
    for session, priority in ((2, 1), (3, 5), (4, 1), (5, -2), (6, 5)):
        table.acquire(name, entry(session, priority=priority), 0)
    assert [e.session for e in table.waiters(name)] == [3, 6, 2, 4, 5]
    assert serve_all_in_turn(table, name, 1) == [3, 6, 2, 4, 5]


def test_random_serves_everyone_in_some_order():
    orders = set()
    for seed in range(8):
        table = LockTable(rng=random.Random(seed))
        name = (7, 7)
        table.acquire(name, entry(1), 0)
        for session in (2, 3, 4, 5):
            assert table.acquire(name, entry(session), 0).position == 0
        order = serve_all_in_turn(table, name, 1)
        assert sorted(order) == [2, 3, 4, 5]
        orders.add(tuple(order))
    assert len(orders) > 1


def test_tokens_strictly_increase_per_lock_and_across_locks():
    table = LockTable(next_token=10)
    tokens = []
    for round_ in range(5):
        for name in ((600, 1), (600, 2)):
            result = table.acquire(name, entry(round_ * 2 + name[1]), 0)
            tokens.append(result.token)
            table.release(name, round_ * 2 + name[1], 0)
    assert tokens == list(range(10, 20))


def test_try_only_is_busy_and_never_queues():
    table = LockTable()
    table.acquire((600, 1), entry(1), 0)
    assert table.acquire((600, 1), entry(2), 0, try_only=True).outcome == "busy"
    assert table.waiters((600, 1)) == []


def test_duplicate_acquire_is_refused():
    table = LockTable()
    table.acquire((600, 1), entry(1), 0)
    table.acquire((600, 1), entry(2), 0)
    assert table.acquire((600, 1), entry(1), 0).outcome == "duplicate"
    assert table.acquire((600, 1), entry(2), 0).outcome == "duplicate"


def test_a_newer_request_of_the_same_session_takes_the_earlier_ones_place():
    """A node that gave up a hold or wait (lease lapse) asks again before the table heard: the
    session keeps its place (the lock does not pass to the next waiter) with a new token."""
    table = LockTable()
    name = (600, 1)
    first = table.acquire(name, Entry(1, 1, req=1), 0)
    table.acquire(name, Entry(2, 2, req=1), 0)
    table.acquire(name, Entry(3, 3, req=1), 0)
    again = table.acquire(name, Entry(1, 1, req=2), 0)
    assert again.outcome == "granted" and again.token > first.token
    assert table.holder(name).req == 2
    requeued = table.acquire(name, Entry(2, 2, req=5), 0)
    assert (requeued.outcome, requeued.position) == ("queued", 1)
    assert [w.session for w in table.waiters(name)] == [2, 3]
    assert table.acquire(name, Entry(3, 3, req=2), 0, try_only=True).outcome == "busy"
    assert [w.session for w in table.waiters(name)] == [2]
    # the earlier request's release no longer matches anything
    assert table.release(name, 1, 0, req=1) == (False, [])


def test_release_cancels_a_wait_without_granting():
    table = LockTable()
    table.acquire((600, 1), entry(1), 0)
    table.acquire((600, 1), entry(2), 0)
    table.acquire((600, 1), entry(3), 0)
    assert table.release((600, 1), 2, 0) == (True, [])
    assert [g.entry.session for g in table.release((600, 1), 1, 0)[1]] == [3]
    assert table.release((600, 1), 99, 0) == (False, [])


def test_free_locks_leave_the_table():
    table = LockTable()
    for lock in range(100):
        table.acquire((600, lock), entry(1), 0)
    assert len(table) == 100
    table.drop_session(1, 0)
    assert len(table) == 0 and table.sessions == {} and table.nodes == {}


def test_drop_node_passes_its_locks_on():
    table = LockTable()
    table.acquire((600, 1), entry(1, node=1), 0)
    table.acquire((600, 2), entry(2, node=1), 0)
    table.acquire((600, 1), entry(3, node=2), 0)
    table.acquire((600, 2), entry(4, node=3), 0)
    table.acquire((600, 3), entry(5, node=1), 0)
    grants = table.drop_node(1, 0)
    assert sorted((g.name, g.entry.session) for g in grants) == [((600, 1), 3), ((600, 2), 4)]
    assert table.holder((600, 3)) is None


def test_drop_node_waits_keeps_its_holds_and_grants_nothing():
    """A lost node awaiting its fence: its waits go, its holds stay (nobody gets them yet)."""
    table = LockTable()
    table.acquire((600, 1), entry(1, node=1), 0)
    table.acquire((600, 2), entry(2, node=2), 0)
    table.acquire((600, 2), entry(1, node=1), 0)  # node 1 also waits for (600, 2)
    table.acquire((600, 1), entry(3, node=3), 0)  # and node 3 for node 1's (600, 1)
    table.drop_node_waits(1)
    assert [e.session for e in table.waiters((600, 2))] == []
    assert table.holder((600, 1)).session == 1
    assert [e.session for e in table.waiters((600, 1))] == [3]
    assert table.names_held_by_node(1) == [(600, 1)]
    grants = table.drop_node(1, 0)  # fenced: now it passes on
    assert [(g.name, g.entry.session) for g in grants] == [((600, 1), 3)]


def test_no_token_no_grant_until_the_limit_rises():
    table = LockTable(next_token=5, token_limit=6)
    assert table.acquire((600, 1), entry(1), 0).token == 5
    result = table.acquire((600, 2), entry(2), 0)
    assert result.outcome == "queued" and table.holder((600, 2)) is None
    assert table.blocked == {(600, 2)}
    table.token_limit = 100
    grants = table.serve_blocked(0)
    assert [(g.name, g.token) for g in grants] == [((600, 2), 6)]


def test_recovery_keeps_the_queue_order_by_key():
    table = LockTable(token_limit=0)  # recovering: nothing may be granted
    name = (600, 9)
    assert table.restore_holder(name, Entry(1, node=1, token=41)) is None
    table.restore_waiter(name, Entry(3, node=3, key=17))
    table.restore_waiter(name, Entry(2, node=2, key=12))
    table.restore_waiter(name, Entry(4, node=2, key=0))  # not queued yet: after the keyed ones
    assert [e.session for e in table.waiters(name)] == [2, 3, 4]
    assert table.next_token == 42
    table.token_limit = 100
    assert serve_all_in_turn(table, name, 1) == [2, 3, 4]


def test_recovery_conflict_keeps_the_newer_token():
    table = LockTable()
    assert table.restore_holder((600, 1), Entry(1, node=1, token=7)) is None
    loser = table.restore_holder((600, 1), Entry(2, node=2, token=9))
    assert loser is not None and loser.session == 1
    assert table.holder((600, 1)).session == 2
    loser = table.restore_holder((600, 1), Entry(3, node=3, token=8))
    assert loser is not None and loser.session == 3


def test_memory_grows_with_locks_in_use_only():
    table = LockTable()
    table.acquire((2047, 8191), entry(1), 0)
    table.acquire((0, 0), entry(2), 0)
    assert len(table.locks) == 2
