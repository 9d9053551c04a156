"""Kept holds (Open.keep_holds) on a simulated cluster: a session whose client died keeps its
holds, orphaned, until the next keep_holds session of its label on that node adopts them; they
still end as any hold does when the node loses them."""
from __future__ import annotations

import pytest

from skyge.services.lock.protocol import MS, OpenRefused
from skyge.services.lock.sim import check_history
from skyge.v1 import lock_pb2 as lp
from tests.unit.test_lock_authority import SETTLE, first, settled

LABEL = "ha:fifo/1:web"


def orphan_holding(cluster, domain: int, *names) -> int:
    """A keep_holds session on `domain` that holds `names`, then its client dies."""
    session = cluster.open(domain, LABEL, keep_holds=True)
    for name in names:
        cluster.acquire(session, name)
    cluster.run(5 * MS)
    assert len(cluster.of(session, "granted")) == len(names)
    cluster.close(session)
    return session


def test_orphaned_holds_stay_until_the_next_session_of_the_label_adopts_them():
    cluster = settled(3)
    holder = cluster.open(2, LABEL, keep_holds=True)
    cluster.acquire(holder, (600, 1))
    cluster.run(5 * MS)
    token = first(cluster, holder, "granted").token
    blocker = cluster.open(3)
    cluster.acquire(blocker, (600, 2))
    cluster.run(5 * MS)
    cluster.acquire(holder, (600, 2))  # a wait: cancelled when the client dies
    waiter = cluster.open(3)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    cluster.close(holder)  # the client dies
    assert first(cluster, holder, "orphaned")
    cluster.run(SETTLE)
    table = cluster.node(1).auth.table
    assert table.holder((600, 1)).session == holder  # the authority saw nothing change
    assert [w.session for w in table.waiters((600, 2))] == []
    assert not cluster.of(waiter, "granted")
    other = cluster.open(2, LABEL)  # without keep_holds: a new session, nothing adopted
    assert other != holder and not cluster.of(other, "adopted")
    heir = cluster.open(2, LABEL, keep_holds=True)
    assert heir == holder
    adopted = cluster.of(heir, "adopted")
    assert [(r.name, r.token) for r in adopted] == [((600, 1), token)]
    cluster.release(heir, (600, 1))
    cluster.run(5 * MS)
    assert first(cluster, waiter, "granted").token > token
    assert check_history(cluster.records) == []


def test_an_adopted_hold_is_lost_like_any_other():
    cluster = settled(3, seed=3)
    orphan_holding(cluster, 3, (600, 4))
    heir = cluster.open(3, LABEL, keep_holds=True)
    cluster.partition([3], [1, 2])
    cluster.run(SETTLE)
    assert first(cluster, heir, "lost").reason == lp.LOST_NO_QUORUM


def test_an_orphan_that_loses_its_holds_is_gone():
    cluster = settled(3, seed=5)
    waiter = cluster.open(2)
    orphan = orphan_holding(cluster, 3, (600, 5))
    cluster.acquire(waiter, (600, 5))
    cluster.partition([3], [1, 2])
    cluster.run(SETTLE)
    assert first(cluster, waiter, "granted")
    assert orphan not in cluster.node(3).member.sessions
    assert first(cluster, orphan, "ended")
    cluster.heal()
    cluster.run(SETTLE)
    fresh = cluster.open(3, LABEL, keep_holds=True)
    assert fresh != orphan and not cluster.of(fresh, "adopted")
    assert check_history(cluster.records) == []


def test_orphaned_holds_end_with_their_node():
    cluster = settled(3, seed=4)
    orphan_holding(cluster, 2, (600, 6))
    waiter = cluster.open(3)
    cluster.acquire(waiter, (600, 6))
    cluster.run(50 * MS)
    assert not cluster.of(waiter, "granted")
    crash = cluster.now
    cluster.crash(2)
    cluster.run(SETTLE)
    assert first(cluster, waiter, "granted").time - crash <= 70 * MS
    assert check_history(cluster.records) == []


def test_a_label_names_one_set_of_kept_holds():
    cluster = settled(3)
    node = cluster.node(2)
    cluster.open(2, LABEL, keep_holds=True)
    with pytest.raises(OpenRefused, match="still open"):
        node.open_session(99, LABEL, 0, cluster.now, keep_holds=True)
    with pytest.raises(OpenRefused, match="non-empty label"):
        node.open_session(98, "", 0, cluster.now, keep_holds=True)
    session, adopted = node.open_session(97, LABEL, 0, cluster.now)  # without keep_holds: fine
    assert (session, adopted) == (97, [])


def test_a_session_that_holds_nothing_ends_as_usual():
    cluster = settled(3)
    session = cluster.open(2, LABEL, keep_holds=True)
    cluster.acquire(session, (600, 7))
    cluster.run(5 * MS)
    cluster.release(session, (600, 7))
    cluster.run(5 * MS)
    cluster.close(session)
    assert first(cluster, session, "ended")
    assert session not in cluster.node(2).member.sessions
