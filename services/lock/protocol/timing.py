"""The lock protocol's durations (`Timing`) and the time units it counts in (nanoseconds)."""
from __future__ import annotations

from dataclasses import dataclass

MS = 1_000_000
US = 1_000


@dataclass(frozen=True)
class Timing:
    """Every duration of the protocol, ns. The defaults ride out a stall of any one daemon (its
    loop descheduled, a GC pause, a slow fsync, SIGSTOP) of up to ~300 ms without a new term or
    a lost hold, measured against this machine's tail (2 vCPU, shared: 5 ms timers fire up to
    18 ms late, fsync p99 14 ms, loops descheduled for tens of ms under load); a crash is still
    taken over within the seed's second (lease bound), and sooner with a fence command.

    - vote_lease (400 ms): an authority stalled for less than it minus one of its rounds (50
      ms) keeps its term;
    - hold_lease (600 ms): a member stalled for less than it minus an idle beat keeps its
      holds; a crashed holder's locks pass on after it plus the takeover guard;
    - switch (derived, > hold lease + guard): a silent lock daemon counts as gone (two-node
      rule), only once it can no longer hold or grant anything.
    """

    beat_ns: int = 20 * MS  # candidate rounds
    idle_beat_ns: int = 50 * MS  # beats of nodes that are not candidates
    #: an established authority's rounds (they renew its lease and confirm the members' holds;
    #: a member's answer stands in for its idle beat while they come at least as often); 0 = the
    #: idle beat or an eighth of the vote lease, whichever is shorter, and at least a beat
    authority_beat_ns: int = 0
    #: ... to the authority and candidates; to the other peers only every peer_beat_ns (their
    #: beats keep each other eligible, which needs one within switch_ns): a member's datagrams
    #: per second grow with the cluster at a quarter of the rate; 0 = 4 idle beats (at most a
    #: third of switch_ns)
    peer_beat_ns: int = 0
    vote_lease_ns: int = 400 * MS  # a vote's promise
    hold_lease_ns: int = 600 * MS  # a member's locks after a confirmed beat
    authority_grace_ns: int = 50 * MS  # the authority's own locks after its lease
    early_ns: int = 25 * MS  # sessions are told Lost this long before the lease ends
    #: a lost node's locks pass on this long after its lease (or grace) ends: time for its
    #: holders, told Lost at least early_ns before, to kill what they run
    takeover_guard_ns: int = 25 * MS
    drift_ppm: int = 10_000  # clock rate difference allowed between nodes (1%)
    #: a peer silent this long is not eligible (two nodes: absent); 0 = hold lease + guard +
    #: authority grace + 100 ms, the least that keeps the two-node rule safe
    switch_ns: int = 0
    #: a candidate (it beats every beat_ns) silent this long is not eligible; 0 = 5 beats
    candidate_silence_ns: int = 0
    acquire_grace_ns: int = 2000 * MS  # a new acquire waits this long for an authority
    token_block: int = 1 << 16  # tokens reserved (persisted) ahead
    fence_retry_ns: int = 2000 * MS  # a failed fence is run again this long after
    #: with a fence command: a node out of the membership this long is fenced at once, and its
    #: locks pass on when the fence succeeded instead of at its lease end. Longer than the
    #: pauses the leases ride out is not needed (a paused node that is fenced is off), but a
    #: pause longer than this costs the paused node its services: 250 ms keeps 200 ms pauses
    fence_after_ns: int = 250 * MS

    def __post_init__(self) -> None:
        if not self.switch_ns:
            object.__setattr__(self, "switch_ns", self.hold_lease_ns + self.takeover_guard_ns
                               + self.authority_grace_ns + 100 * MS)
        if not self.candidate_silence_ns:
            object.__setattr__(self, "candidate_silence_ns", 5 * self.beat_ns)
        if not self.authority_beat_ns:
            object.__setattr__(self, "authority_beat_ns", max(self.beat_ns, min(
                self.idle_beat_ns, self.vote_lease_ns // 8)))
        if not self.peer_beat_ns:
            object.__setattr__(self, "peer_beat_ns", max(self.idle_beat_ns, min(
                4 * self.idle_beat_ns, self.switch_ns // 3)))
        if not 0 < self.beat_ns < self.vote_lease_ns:
            raise ValueError("beat must be shorter than the vote lease")
        if not self.beat_ns <= self.authority_beat_ns < self.vote_lease_ns:
            raise ValueError("authority_beat_ns must be from the beat to below the vote lease")
        if not 0 < 2 * self.idle_beat_ns <= self.hold_lease_ns:
            raise ValueError("idle beat must be at most half the hold lease")
        if self.hold_lease_ns <= self.vote_lease_ns + self.beat_ns:
            raise ValueError("the hold lease must exceed the vote lease plus one beat")
        if not self.idle_beat_ns <= self.peer_beat_ns <= self.switch_ns // 3:
            raise ValueError("peer_beat_ns must be from the idle beat to a third of switch_ns "
                             "(a peer beat every peer_beat_ns stays eligible)")
        if self.candidate_silence_ns < 2 * self.beat_ns:
            raise ValueError("candidate_silence_ns must cover at least two beats")
        if not 0 <= self.early_ns < self.authority_grace_ns:
            raise ValueError("early_ns must be below the authority grace")
        if self.switch_ns <= max(self.hold_lease_ns + self.takeover_guard_ns,
                                 self.vote_lease_ns + self.authority_grace_ns):
            raise ValueError("switch_ns must exceed the hold lease plus the takeover guard "
                             "(a silent daemon may hold locks until then)")

    def drifted(self, duration_ns: int) -> int:
        """What this node may count of a duration another node counts in full: less the drift
        margin and 100 µs."""
        return duration_ns - duration_ns * self.drift_ppm // 1_000_000 - 100 * US

    @property
    def authority_silence_ns(self) -> int:
        """An established authority silent this long is not eligible: the candidate silence,
        counted in its (sparser) rounds."""
        return self.candidate_silence_ns * self.authority_beat_ns // self.beat_ns

    @property
    def leave_warning_ns(self) -> int:
        """A cleanly stopping daemon's sessions are told this long before its last beat lets
        their locks pass on: the same warning a lease end gives (early + takeover guard)."""
        return self.early_ns + self.takeover_guard_ns

    @property
    def vote_lease_counted_ns(self) -> int:
        """What a candidate counts of a vote lease."""
        return self.drifted(self.vote_lease_ns)

    @property
    def hold_lease_counted_ns(self) -> int:
        """What a member counts of its hold lease (the authority counts it in full, from the
        later receipt of the beat)."""
        return self.drifted(self.hold_lease_ns)
