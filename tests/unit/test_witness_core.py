"""The witness's vote book (services/witness/core.py): one vote per cluster, a lease that passes
to the other node only after the holder's vote and hold-over ran out, nobody's after a restart."""
from __future__ import annotations

import pytest

from skyge.services.witness.core import MS, VoteBook, stretched

VOTE, MAX_HOLDOVER, HOLDOVER = 1000 * MS, 2000 * MS, 775 * MS


def book_after_startup() -> tuple[VoteBook, int]:
    book = VoteBook(vote_ns=VOTE, max_holdover_ns=MAX_HOLDOVER, started_ns=0)
    return book, book.startup_hold_until_ns


def test_a_restarted_witness_votes_for_nobody_until_any_earlier_vote_ran_out():
    book = VoteBook(vote_ns=VOTE, max_holdover_ns=MAX_HOLDOVER, started_ns=5 * MS)
    early = book.vote(1, 1, HOLDOVER, 5 * MS + stretched(VOTE + MAX_HOLDOVER) - 1)
    assert not early.granted and early.holder == 0 and early.retry_after_ns == 1
    assert book.vote(1, 1, HOLDOVER, 5 * MS + stretched(VOTE + MAX_HOLDOVER)).granted


def test_one_node_at_a_time_and_the_holder_keeps_it_by_renewing():
    book, now = book_after_startup()
    assert book.vote(1, 1, HOLDOVER, now).valid_ns == VOTE
    refused = book.vote(1, 2, HOLDOVER, now + 1)
    assert (refused.granted, refused.holder) == (False, 1)
    for step in range(1, 20):  # renewed every 200 ms: the other never gets it
        assert book.vote(1, 1, HOLDOVER, now + step * 200 * MS).granted
        assert not book.vote(1, 2, HOLDOVER, now + step * 200 * MS + 1).granted


def test_the_vote_passes_only_after_the_holders_vote_and_hold_over_ran_out():
    book, now = book_after_startup()
    book.vote(1, 1, HOLDOVER, now)
    free_at = now + stretched(VOTE + HOLDOVER)
    late = book.vote(1, 2, HOLDOVER, free_at - 1)
    assert not late.granted and late.retry_after_ns == 1
    assert book.vote(1, 2, HOLDOVER, free_at).granted
    assert book.vote(1, 1, HOLDOVER, free_at + 1).holder == 2


def test_a_renewal_with_a_shorter_hold_over_keeps_the_longer_reservation():
    book, now = book_after_startup()
    book.vote(1, 1, MAX_HOLDOVER, now)
    book.vote(1, 1, 0, now + 1)
    assert not book.vote(1, 2, 0, now + stretched(VOTE + MAX_HOLDOVER) - 1).granted


def test_clusters_are_independent_and_counted():
    book, now = book_after_startup()
    assert book.vote(1, 1, HOLDOVER, now).granted
    assert book.vote(2, 2, HOLDOVER, now).granted
    book.vote(1, 2, HOLDOVER, now)
    assert (book.clusters[1].granted, book.clusters[1].refused) == (1, 1)
    assert book.clusters[2].holder == 2


def test_a_hold_over_beyond_the_allowed_range_is_refused_naming_it():
    book, now = book_after_startup()
    with pytest.raises(ValueError, match="holdover must be 0 to 2000 ms"):
        book.vote(1, 1, MAX_HOLDOVER + 1, now)
