"""The etcd backend's key layout and waiter orders (services/lock/etcd/keys.py): pure."""
from __future__ import annotations

import pytest

from skyge.services.lock.etcd.keys import (HOLDER, WAITER, Layout, Record, Waiting, next_waiter,
                                           prefix_end, served_order)

LAYOUT = Layout.of("/skyge", 1000)


def waiting(session: int, revision: int, priority: int = 0) -> Waiting:
    return Waiting(Record(session=session, domain=1, priority=priority), revision)


def test_every_key_parses_back_to_its_lock_and_kind() -> None:
    assert LAYOUT.parse(LAYOUT.holder((600, 1))) == ((600, 1), HOLDER, 0)
    assert LAYOUT.parse(LAYOUT.waiter((2047, 8191), 0xABC)) == ((2047, 8191), WAITER, 0xABC)
    # group names may hold "/" and "h": hex keeps "a/h" apart from "a"'s holder
    assert LAYOUT.parse(LAYOUT.holder("a/h")) == ("a/h", HOLDER, 0)
    assert LAYOUT.parse(LAYOUT.waiter("a", 5)) == ("a", WAITER, 5)
    assert LAYOUT.parse(LAYOUT.node(3)) is None
    assert LAYOUT.parse(b"/skyge/1001/lock/0600/0001/h") is None  # another cluster


def test_a_lock_waiters_range_holds_its_waiters_only() -> None:
    start, end = LAYOUT.waiters((600, 1))
    assert start <= LAYOUT.waiter((600, 1), 1) < end
    assert not start <= LAYOUT.waiter((600, 10), 1) < end
    assert not start <= LAYOUT.holder((600, 1)) < end
    assert prefix_end(b"a/") == b"a0"


def test_records_survive_the_round_trip_and_foreign_values_are_ignored() -> None:
    record = Record(session=7, domain=2, label="mysql on n2", pid=42, priority=-3,
                    queued_unix_ns=5, granted_unix_ns=6)
    assert Record.decode(record.encode()) == record
    assert Record.decode(b"not json") is None
    assert Record.decode(b'{"s": 1}') is None


@pytest.mark.parametrize(("slot", "expected"), [
    (600, [1, 2, 3]),    # fifo: lowest create revision first
    (1100, [3, 2, 1]),   # stack: highest first
    (1600, [2, 3, 1]),   # priority: highest priority, ties fifo
])
def test_waiters_are_ordered_by_their_slot(slot: int, expected: list[int]) -> None:
    queue = [waiting(1, 10, priority=0), waiting(2, 20, priority=5), waiting(3, 30, priority=5)]
    if slot < 1536:
        queue = [waiting(w.record.session, w.create_revision) for w in queue]
    assert [w.record.session for w in served_order((slot, 0), queue)] == expected


def test_the_first_of_a_queue_stays_first_when_others_leave() -> None:
    """What lets a daemon take a lock with "nobody joined since I read the queue"."""
    queue = [waiting(s, 10 * s, priority=s % 3) for s in range(1, 9)]
    for slot in (600, 1100, 1600):
        first = next_waiter((slot, 0), queue)
        assert first is not None
        rest = [w for w in queue if w.record.session % 2 == first.record.session % 2]
        assert next_waiter((slot, 0), rest) == first


def test_every_daemon_picks_the_same_random_waiter() -> None:
    queue = [waiting(s, s) for s in range(1, 6)]
    picks = {next_waiter((100, 0), list(order)) for order in (queue, queue[::-1])}
    assert len(picks) == 1
    assert next_waiter((100, 0), []) is None
