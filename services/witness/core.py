"""The witness's vote book: one vote per cluster, held as a lease. Pure: time comes in.

Why a lease with a hold-over: a node that holds the vote acts alone (it is the two-node rule's
quorum) and grants leases to its own sessions; those may outlive its vote by its hold lease. So
the vote passes to the other node only once the holder's vote *and* the hold-over it asked for ran
out, both stretched by the clock-rate allowance (the node counts its vote from before it asked,
shrunk by the same allowance). A witness that restarts has forgotten who voted: it votes for
nobody until the longest vote plus hold-over it allows has passed since it started.
"""
from __future__ import annotations

from dataclasses import dataclass

MS = 1_000_000
DRIFT_PPM = 10_000  # clock-rate allowance between the witness and a node (1 %), as the lock's


def stretched(duration_ns: int) -> int:
    """A duration on this clock long enough to cover `duration_ns` on a clock up to
    DRIFT_PPM faster."""
    return duration_ns + duration_ns * DRIFT_PPM // 1_000_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one vote request."""

    granted: bool
    valid_ns: int = 0  # granted: how long the vote lasts from now
    holder: int = 0  # refused: who holds the vote (0: nobody, startup hold)
    retry_after_ns: int = 0  # refused: until the vote may be free
    detail: str = ""


@dataclass(slots=True)
class ClusterVote:
    """One cluster's vote."""

    holder: int = 0
    valid_until_ns: int = 0
    reserved_until_ns: int = 0  # nobody else gets the vote before this
    granted: int = 0
    refused: int = 0


class VoteBook:
    """Every cluster's vote on this witness."""

    def __init__(self, *, vote_ns: int, max_holdover_ns: int, started_ns: int) -> None:
        if vote_ns <= 0:
            raise ValueError(f"vote_ns must be > 0, got {vote_ns}")
        if max_holdover_ns < 0:
            raise ValueError(f"max_holdover_ns must be >= 0, got {max_holdover_ns}")
        self.vote_ns = vote_ns
        self.max_holdover_ns = max_holdover_ns
        self.startup_hold_until_ns = started_ns + stretched(vote_ns + max_holdover_ns)
        self.clusters: dict[int, ClusterVote] = {}

    def vote(self, netid: int, domain: int, holdover_ns: int, now_ns: int) -> Verdict:
        """Node `domain` of cluster `netid` asks for the vote (or to keep it)."""
        if not 0 <= holdover_ns <= self.max_holdover_ns:
            raise ValueError(f"holdover must be 0 to {self.max_holdover_ns // MS} ms, "
                             f"got {holdover_ns / MS:g} ms")
        cluster = self.clusters.setdefault(netid, ClusterVote())
        if now_ns < self.startup_hold_until_ns:
            cluster.refused += 1
            return Verdict(False, retry_after_ns=self.startup_hold_until_ns - now_ns,
                           detail="the witness started lately and votes for nobody until any "
                                  "vote it may have given before its restart has run out")
        if cluster.holder not in (0, domain) and now_ns < cluster.reserved_until_ns:
            cluster.refused += 1
            return Verdict(False, holder=cluster.holder,
                           retry_after_ns=cluster.reserved_until_ns - now_ns,
                           detail=f"node {cluster.holder} holds the vote")
        if cluster.holder != domain:
            cluster.reserved_until_ns = 0
        cluster.holder = domain
        cluster.valid_until_ns = now_ns + self.vote_ns
        cluster.reserved_until_ns = max(cluster.reserved_until_ns,
                                        now_ns + stretched(self.vote_ns + holdover_ns))
        cluster.granted += 1
        return Verdict(True, valid_ns=self.vote_ns)

    def startup_hold_ns(self, now_ns: int) -> int:
        return max(0, self.startup_hold_until_ns - now_ns)
