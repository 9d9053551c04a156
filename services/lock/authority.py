"""One lock daemon's logic: votes and leases, the authority, and the member side of its sessions.

Plain Python, no I/O, no clock of its own: every input carries `now_ns` (a monotonic clock), and
outputs pile up in `Node.out_beats`, `Node.out_data`, `Node.events`, `Node.leader_events` and
`Node.fence_requests` for the daemon to act on (`server.py`, `peer.py`). So a whole cluster can
be simulated in a unit test, with delays, losses and asymmetric views, and its history checked.

## The rule (see docs/ARCHITECTURE.md, lock section)

*Votes with leases.* Every node votes for one candidate: the lowest-domain node it sees that is
eligible (in its membership view, heard from lately, knowing its own membership), except that it
stays with an established authority while that one stays eligible, and joins one it hears rather
than start an election (a daemon that just started listens first). A vote is given in answer to
a candidate's *round* (a beat sent every `beat_ns`) and is a promise: no vote for anyone else
until `vote_lease_ns` after the round was received. A candidate whose round got votes from a
quorum (majority of the expected nodes, its own vote included; one vote for a lone node under the
two-node rule) holds the authority lease until the round's *send* time plus the vote lease (less
a drift margin): every promise outlasts it, so two authorities never hold leases at the same
time, whatever the views.

*Terms.* A candidate proposes term = highest term seen + 1; a voter votes for a proposal only if
the term is above every term it voted for (or the same term of the same candidate), and persists
it first. So each term has at most one authority, and terms grow across restarts of everything.

*Holds.* A member's locks are safe while its *hold lease* runs: the authority confirms the
member's beats (while holding its own lease and knowing the member's state), and a confirmed beat
makes the member's locks safe until that beat's send time plus `hold_lease_ns`. The authority
drops a member's state only after the receipt time of the last beat it confirmed plus the same
lease, so the member (which stops `early_ns` before) has told its sessions `Lost` before. The
authority's own sessions are safe until its authority lease + `authority_grace_ns`. A member cut
off (membership unknown, or no quorum in its view) tells its sessions at once, and the authority
learns it only when the hold lease ends: the warning is whatever remained of the lease.

*Clean stop.* The daemon tells its sessions first, then (`early_ns` later if they held locks) its
last beat says it leaves: promises to it end, the authority drops its state at once, and a
successor need not wait for its leases (it held nothing any more).

*Two nodes.* A lone node (the other out of its view, or the other's lock daemon stopped or
silent for `switch_ns`) counts as a quorum while a reference IP answers (see `lone`).

*New authority.* It rebuilds the table from the members' reports (holds with tokens, waits with
queue keys) and grants nothing until every expected node reported, or the missing one is the
previous authority and its grace ran out, or a full hold lease passed since the election (any
unreported member has told its sessions `Lost` by then).

*Tokens.* One counter; a block ahead is persisted by a majority (`token_reserve` in beats) before
its tokens are used; a new authority starts above every floor its voters report.

*Fencing* (with a fence command, `Node.fencing`): leases assume a node that stops answering
stops using its locks; a fence makes sure. A member whose lease ran out keeps its holds in the
table until it is fenced or reports again, and a new authority grants nothing until every lock
daemon it has heard from (and the previous authority) reported or was fenced. The authority only
asks (`Node.fence_requests`); the daemon runs the command and answers `Node.fence_done`.

*Kept holds* (`Open.keep_holds`) are the member's business alone: a session whose stream ended
stays, orphaned, with its holds until a session of its label continues it (same id), so the
authority sees nothing change.
"""
from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

from .core import Entry, Grant, LockTable, Name, check_name, sort_key

MS = 1_000_000
US = 1_000

__all__ = ["Timing", "Store", "MemoryStore", "Node", "OpenRefused", "name_of", "name_proto",
           "MS"]


@dataclass(frozen=True)
class Timing:
    """Every duration of the protocol, ns. The defaults ride out a stall of any one daemon (its
    loop descheduled, a GC pause, a slow fsync, SIGSTOP) of up to ~300 ms without a new term or
    a lost hold, measured against this machine's tail (2 vCPU, shared: 5 ms timers fire up to
    18 ms late, fsync p99 14 ms, loops descheduled for tens of ms under load); a crash is still
    taken over within the seed's second (lease bound), and sooner with a fence command.

    - vote_lease (400 ms): an authority stalled for less than it minus a beat keeps its term;
    - hold_lease (600 ms): a member stalled for less than it minus an idle beat keeps its
      holds; a crashed holder's locks pass on after it plus the takeover guard;
    - switch (derived, > hold lease + guard): a silent lock daemon counts as gone (two-node
      rule), only once it can no longer hold or grant anything.
    """

    beat_ns: int = 20 * MS  # candidate rounds (and the authority's confirmations)
    idle_beat_ns: int = 50 * MS  # beats of nodes that are not candidates
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
        if not 0 < self.beat_ns < self.vote_lease_ns:
            raise ValueError("beat must be shorter than the vote lease")
        if not 0 < 2 * self.idle_beat_ns <= self.hold_lease_ns:
            raise ValueError("idle beat must be at most half the hold lease")
        if self.hold_lease_ns <= self.vote_lease_ns + self.beat_ns:
            raise ValueError("the hold lease must exceed the vote lease plus one beat")
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


class Store(Protocol):
    """Where a node keeps what must survive restarts (highest term, token floor, expected)."""

    def load(self) -> dict[str, int]: ...

    def save(self, state: dict[str, int]) -> None: ...


class MemoryStore:
    """A Store in memory (tests; a simulated restart keeps the same object)."""

    def __init__(self, state: dict[str, int] | None = None) -> None:
        self.state = dict(state or {})
        self.saves = 0

    def load(self) -> dict[str, int]:
        return dict(self.state)

    def save(self, state: dict[str, int]) -> None:
        self.state = dict(state)
        self.saves += 1


def name_of(proto: pp.PeerLockName) -> Name:
    return proto.group if proto.group else (proto.slot, proto.lock)


def name_proto(name: Name) -> pp.PeerLockName:
    if isinstance(name, str):
        return pp.PeerLockName(group=name)
    return pp.PeerLockName(slot=name[0], lock=name[1])


def _slot_lock(name: Name) -> tuple[int, int]:
    return (0, 0) if isinstance(name, str) else name


def _names_text(names: Iterable[Name]) -> str:
    """Locks for a log line: "600/1, 600/2" (groups by name)."""
    return ", ".join(n if isinstance(n, str) else f"{n[0]}/{n[1]}"
                     for n in sorted(names, key=sort_key)) or "nothing"


# ---------------------------------------------------------------------------------------------
# peers and rounds


@dataclass
class PeerInfo:
    """What a node knows of a peer from its beats."""

    instance: int = 0
    last_seq: int = 0
    heard_ns: int = -1
    candidate_term: int = 0
    candidate_ns: int = -1  # last beat that said it is a candidate
    established_ns: int = -1
    vote_for: int = 0
    highest_term: int = 0
    token_floor: int = 0
    view_bits: int = 0
    left: bool = False  # this instance stopped cleanly (its last beat said `leaving`)


@dataclass
class VoteInfo:
    floor: int
    last_authority: int
    last_authority_term: int
    promise_end_ns: int | None


@dataclass
class Round:
    sent_ns: int
    term: int
    votes: dict[int, VoteInfo] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# member side: the node's own sessions


@dataclass
class Held:
    token: int
    granted_ns: int
    delivered: bool
    req: int = 0


@dataclass
class Wait:
    priority: int
    try_only: bool
    deadline_ns: int | None  # timeout_ms
    grace_ns: int | None  # waiting for an authority (not connected when asked)
    key: int = 0
    queued_ns: int = 0
    sent: bool = False
    told_queued: bool = False
    req: int = 0


@dataclass
class LocalSession:
    id: int
    label: str
    pid: int
    holds: dict[Name, Held] = field(default_factory=dict)
    waits: dict[Name, Wait] = field(default_factory=dict)
    campaign: str | None = None  # election group, for Campaign sessions
    next_req: int = 0
    keep_holds: bool = False  # Open.keep_holds: holds outlive the stream (see Member.close)
    orphaned: bool = False  # its stream ended; its holds wait for the next session of its label


class OpenRefused(ValueError):
    """An Open with keep_holds the node refuses: no label, or a live session has the label."""


class Member:
    """The node's sessions and their locks, as seen from the node (the authority may be remote)."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.authority = 0
        self.term = 0
        self.reported_epoch = -1
        self.report_gen = 0
        self.lease_until = 0
        self.renewed_until = 0  # the lease end last told to the holders (Granted, Renewed)
        self.connected = False
        #: set when the node was cut off while connected: its holds were dropped at once, and the
        #: authority learns it (a report) only when the hold lease they had ends, so nothing is
        #: granted in their place sooner than it would have been (see tick)
        self.resync_at: int | None = None
        self.sessions: dict[int, LocalSession] = {}
        self.last_authority = (0, 0)
        #: group -> watcher ids (observers and campaigns)
        self.watchers: dict[str, set[int]] = {}
        self.watcher_session: dict[int, int] = {}  # watcher id -> campaign session (0 observer)
        self.leaders: dict[str, tuple[int, int, str, int]] = {}  # group -> (session, token, cand, dom)
        self.deadlines: int | None = None
        #: (deadline, tie-breaker, session, lock, request) of waits with a timeout or grace
        self.heap: list[tuple[int, int, int, Name, int]] = []
        self._counter = 0

    # -- helpers -------------------------------------------------------------------------------
    def _event(self, session: int, **kwargs: Any) -> None:
        local = self.sessions.get(session)
        if local is not None and local.orphaned:
            return  # nobody to tell; an adopting session learns from Opened.adopted
        self.node.events.append((session, lp.SessionEvent(**kwargs)))

    def _send(self, message: pp.PeerData) -> None:
        self.node.route_to_authority(self.authority, message)

    def can_send(self) -> bool:
        return self.authority != 0 and self.reported_epoch >= 0

    def counts(self) -> tuple[int, int]:
        holds = sum(len(s.holds) for s in self.sessions.values())
        waits = sum(len(s.waits) for s in self.sessions.values())
        return holds, waits

    # -- authority changes and leases -----------------------------------------------------------
    def adopt(self, authority: int, term: int, epoch: int, now: int) -> None:
        """Follow a (new) authority: report everything to it."""
        self.authority, self.term = authority, term
        self.last_authority = (authority, term)
        self.reported_epoch = -1
        self.report(epoch, now)

    def report(self, epoch: int, now: int) -> None:
        """Send the whole state for (term, epoch); void it first when the lease ran out."""
        if not self._lease_valid(now):
            self.drop_all(now, "no authority confirmed this node's locks in time")
        self.reported_epoch = epoch
        self.report_gen += 1
        self.resync_at = None
        held, waiting = [], []
        for session in self.sessions.values():
            for name, hold in session.holds.items():
                held.append(pp.PeerHeld(session_id=session.id, name=name_proto(name),
                                        token=hold.token, granted_unix_ns=hold.granted_ns,
                                        label=session.label, client_pid=session.pid,
                                        request_id=hold.req))
            for name, wait in session.waits.items():
                waiting.append(pp.PeerWaiting(session_id=session.id, name=name_proto(name),
                                              key=wait.key, priority=wait.priority,
                                              queued_unix_ns=wait.queued_ns, label=session.label,
                                              client_pid=session.pid, try_only=wait.try_only,
                                              request_id=wait.req))
                wait.sent = True
        groups = sorted(self.watchers)
        per_part = 24
        parts = max(1, (len(held) + len(waiting) + per_part - 1) // per_part)
        items: list[Any] = held + waiting
        for part in range(parts):
            chunk = items[part * per_part:(part + 1) * per_part]
            message = pp.PeerReport(term=self.term, epoch=epoch, part=part, last=part == parts - 1,
                                    generation=self.report_gen,
                                    held=[c for c in chunk if isinstance(c, pp.PeerHeld)],
                                    waiting=[c for c in chunk if isinstance(c, pp.PeerWaiting)],
                                    watched_groups=groups if part == parts - 1 else [])
            self._send(pp.PeerData(report=message))
        if self.authority != self.node.domain:
            self.node.send_info_beat(self.authority, now)

    def _lease_valid(self, now: int) -> bool:
        return now < self.lease_until

    def extend(self, until: int, now: int) -> None:
        """A confirmation: the node's locks are safe until `until`. It reconnects the member
        only once the authority knows what the member dropped (no resync pending) and while the
        node is not cut off."""
        if until > self.lease_until:
            self.lease_until = until
            if self.connected and until - self.renewed_until >= self.node.timing.hold_lease_ns // 4:
                self._renew_holders()
        if not self.connected and now < self.lease_until and self.resync_at is None and \
                not self.node.cut_off(now):
            self.connected = True
            for session in self.sessions.values():
                for wait in session.waits.values():
                    wait.grace_ns = None
                for name, hold in session.holds.items():
                    if not hold.delivered:
                        hold.delivered = True
                        self._granted(session, name, hold)

    def _renew_holders(self) -> None:
        """Tell every session that holds a lock how long its holds are now safe (a few times a
        lease: a holder whose daemon stops speaking stops on its own at the last value)."""
        self.renewed_until = self.lease_until
        for session in self.sessions.values():
            if session.campaign is None and any(h.delivered for h in session.holds.values()):
                self._event(session.id, renewed=lp.Renewed(valid_until_boot_ns=self.lease_until))

    def drop_all(self, now: int, detail: str, reason: int = lp.LOST_NO_QUORUM) -> None:
        """The lease ran out (or the node is cut off, or its daemon stops): every hold is lost.
        Waits fail too, unless this node's partition may still have quorum (an authority change,
        a lone node checking its reference IP): they wait `acquire_grace_ns` for the next
        authority, to which they are reported with their keys."""
        self.connected = False
        keep_waits = not self.node.stopping and self.node.may_have_quorum(now)
        grace = now + self.node.timing.acquire_grace_ns
        for session in list(self.sessions.values()):
            for name, hold in list(session.holds.items()):
                del session.holds[name]
                if session.campaign is not None:
                    continue
                if hold.delivered:
                    slot, lock = _slot_lock(name)
                    self._event(session.id, lost=lp.Lost(slot=slot, lock=lock, reason=reason,
                                                         detail=detail))
                else:  # granted while this node's lease had lapsed: never told; the acquire fails
                    self._fail(session.id, name, lp.FAIL_NO_QUORUM, detail)
            for name, wait in list(session.waits.items()):
                if keep_waits:
                    if wait.grace_ns is None:
                        wait.grace_ns = grace
                        self._deadline(grace, session.id, name, wait.req)
                    continue
                del session.waits[name]
                if session.campaign is None:
                    self._fail(session.id, name, lp.FAIL_NO_QUORUM, detail)
            self._forget_if_empty_orphan(session)
        for group in list(self.watchers):
            self._leader_changed(group, 0, 0, "", 0)

    def fail_waits_in_grace(self, detail: str) -> None:
        """The waits kept for a next authority (`drop_all`) fail now: none can come (a lone
        node's reference-IP check failed)."""
        for session in list(self.sessions.values()):
            for name, wait in list(session.waits.items()):
                if wait.grace_ns is None:
                    continue
                del session.waits[name]
                if wait.sent and self.can_send():
                    self._send(pp.PeerData(release=pp.PeerRelease(
                        term=self.term, session_id=session.id, name=name_proto(name),
                        request_id=wait.req)))
                self._fail(session.id, name, lp.FAIL_NO_QUORUM, detail)

    def tick(self, now: int) -> None:
        if self.connected and now >= self.lease_until:
            self.drop_all(now, "this node lost quorum (no confirmation from an authority)")
            if self.can_send():
                self.report(self.reported_epoch, now)
        elif self.connected and self.node.cut_off(now):
            # no authority can count on this node any more: tell the sessions now rather than at
            # the lease end (they get the whole lease as warning), but let the authority keep
            # their holds until then
            self.drop_all(now, "this node is cut off: " + self.node.quorum_rule(now))
            self.resync_at = self.lease_until + self.node.timing.early_ns
        if self.resync_at is not None and now >= self.resync_at:
            if self.can_send():
                self.report(self.reported_epoch, now)
            self.resync_at = None
        heap = self.heap
        while heap and heap[0][0] <= now:
            deadline, _, session_id, name, req = heapq.heappop(heap)
            session = self.sessions.get(session_id)
            wait = session.waits.get(name) if session else None
            if wait is None or wait.req != req:
                continue  # answered, released or dropped meanwhile
            if wait.deadline_ns == deadline:
                reason, detail = lp.FAIL_TIMEOUT, "timed out"
            elif wait.grace_ns == deadline:
                reason, detail = lp.FAIL_NO_QUORUM, "no authority reachable"
            else:
                continue  # a deadline that was lifted (the node reconnected)
            del session.waits[name]  # type: ignore[union-attr]
            if wait.sent and self.can_send():
                self._send(pp.PeerData(release=pp.PeerRelease(
                    term=self.term, session_id=session_id, name=name_proto(name),
                    request_id=wait.req)))
            self._fail(session_id, name, reason, detail)
        soonest: int | None = self.lease_until if self.connected else self.resync_at
        if heap:
            soonest = heap[0][0] if soonest is None else min(soonest, heap[0][0])
        self.deadlines = soonest

    def _deadline(self, at: int, session: int, name: Name, req: int) -> None:
        self._counter += 1
        heapq.heappush(self.heap, (at, self._counter, session, name, req))
        self.node.want_tick(at)

    # -- local sessions -------------------------------------------------------------------------
    def open(self, session_id: int, label: str, pid: int, campaign: str | None = None,
             keep_holds: bool = False) -> LocalSession:
        """A new session, or with `keep_holds` the orphaned session of its label continued
        (same id, its holds kept: the authority sees nothing change). OpenRefused without a
        label, or when a live keep_holds session has it: one label names at most one set of
        kept holds."""
        if keep_holds:
            if not label:
                raise OpenRefused("keep_holds needs a non-empty label (the next session "
                                  "adopts the holds by label)")
            for session in self.sessions.values():
                if session.keep_holds and session.label == label:
                    if not session.orphaned:
                        raise OpenRefused(f"a keep_holds session labelled {label!r} is "
                                          f"still open on this node (session "
                                          f"{session.id:#x}); close it first")
                    session.orphaned, session.pid = False, pid
                    self.node.log.append(
                        f"session {session.id:#x} ({label!r}, pid {pid}) adopted "
                        f"{_names_text(session.holds)} kept since its previous client ended")
                    return session
        session = self.sessions[session_id] = LocalSession(session_id, label, pid,
                                                           campaign=campaign,
                                                           keep_holds=keep_holds)
        return session

    def _fail(self, session: int, name: Name, reason: int, detail: str) -> None:
        slot, lock = _slot_lock(name)
        s = self.sessions.get(session)
        if s is not None and s.campaign is not None:
            return
        self._event(session, failed=lp.AcquireFailed(slot=slot, lock=lock, reason=reason,
                                                      detail=detail))

    def _granted(self, session: LocalSession, name: Name, hold: Held) -> None:
        if session.campaign is not None:
            return  # campaigns learn from leader events
        slot, lock = _slot_lock(name)
        self._event(session.id, granted=lp.Granted(slot=slot, lock=lock, fencing_token=hold.token,
                                                   valid_until_boot_ns=self.lease_until))

    def acquire(self, session_id: int, name: Name, *, priority: int = 0, try_only: bool = False,
                timeout_ms: int = 0, now: int) -> None:
        session = self.sessions[session_id]
        if not isinstance(name, str):
            problem = check_name(name[0], name[1], priority)
            if problem:
                self._fail(session_id, name, lp.FAIL_INVALID, problem)
                return
        if name in session.holds or name in session.waits:
            self._fail(session_id, name, lp.FAIL_INVALID,
                       "this session already holds or awaits the lock")
            return
        if self.node.stopping:
            self._fail(session_id, name, lp.FAIL_NO_QUORUM, "the lock daemon is stopping")
            return
        connected = self.connected and now < self.lease_until
        if not connected and not self.node.may_have_quorum(now):
            self._fail(session_id, name, lp.FAIL_NO_QUORUM,
                       "this node's partition has no quorum: " + self.node.quorum_rule(now))
            return
        deadline = now + timeout_ms * MS if timeout_ms and not try_only else None
        grace = None if connected else now + self.node.timing.acquire_grace_ns
        session.next_req += 1
        wait = Wait(priority, try_only, deadline, grace, req=session.next_req)
        session.waits[name] = wait
        for at in (deadline, grace):
            if at is not None:
                self._deadline(at, session_id, name, wait.req)
        if self.can_send():
            wait.sent = True
            self._send(pp.PeerData(acquire=pp.PeerAcquire(
                term=self.term, session_id=session_id, name=name_proto(name), priority=priority,
                try_only=try_only, label=session.label, client_pid=session.pid,
                request_id=wait.req)))

    def release(self, session_id: int, name: Name, now: int, *, quiet: bool = False) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            hold = session.holds.pop(name, None)
            wait = session.waits.pop(name, None) if hold is None else None
            if (hold is not None or (wait is not None and wait.sent)) and self.can_send():
                req = hold.req if hold is not None else wait.req  # type: ignore[union-attr]
                self._send(pp.PeerData(release=pp.PeerRelease(
                    term=self.term, session_id=session_id, name=name_proto(name),
                    request_id=req)))
        if not quiet:
            slot, lock = _slot_lock(name)
            self._event(session_id, released=lp.Released(slot=slot, lock=lock))

    def close(self, session_id: int, now: int) -> None:
        """The session's stream ended: everything it holds and awaits ends, except the holds
        of a keep_holds session, which become orphaned."""
        session = self.sessions.get(session_id)
        if session is None or session.orphaned:
            return
        if session.keep_holds and any(hold.delivered for hold in session.holds.values()):
            self._orphan(session)
            return
        del self.sessions[session_id]
        if (session.holds or any(w.sent for w in session.waits.values())) and self.can_send():
            self._send(pp.PeerData(end_session=pp.PeerEndSession(term=self.term,
                                                                 session_id=session_id)))

    def _orphan(self, session: LocalSession) -> None:
        """Keep the session's holds without a client: its waits are cancelled, and so are holds
        its client was never told of (granted while this node's lease had lapsed)."""
        ended: list[tuple[Name, int, bool]] = [(n, w.req, w.sent) for n, w in session.waits.items()]
        ended += [(n, h.req, True) for n, h in session.holds.items() if not h.delivered]
        session.waits.clear()
        for name, req, sent in ended:
            session.holds.pop(name, None)
            if sent and self.can_send():
                self._send(pp.PeerData(release=pp.PeerRelease(
                    term=self.term, session_id=session.id, name=name_proto(name),
                    request_id=req)))
        session.orphaned = True
        self.node.log.append(f"session {session.id:#x} ({session.label!r}, pid {session.pid}) "
                             f"ended holding {_names_text(session.holds)}: kept for the next "
                             f"keep_holds session labelled so")

    def _forget_if_empty_orphan(self, session: LocalSession) -> None:
        """An orphan whose last hold ended is gone (the authority knows nothing of it any more)."""
        if session.orphaned and not session.holds:
            del self.sessions[session.id]
            self.node.log.append(f"orphaned session {session.id:#x} ({session.label!r}) lost "
                                 f"its last hold")

    def orphaned_sessions(self) -> set[int]:
        return {s.id for s in self.sessions.values() if s.orphaned}

    # -- elections: watchers ---------------------------------------------------------------------
    def watch(self, watcher: int, group: str, session: int) -> None:
        first = group not in self.watchers
        self.watchers.setdefault(group, set()).add(watcher)
        self.watcher_session[watcher] = session
        leader = self.leaders.get(group)
        sid, token, cand, dom = leader if leader else (0, 0, "", 0)
        self.node.leader_events.append((watcher, lp.LeaderEvent(
            group=group, leader=cand, term=token, elected=bool(sid and sid == session),
            leader_node=self.node.node_id(dom) if dom else None)))
        if first and self.can_send():
            self._send(pp.PeerData(watch=pp.PeerWatch(term=self.term, group=group, on=True)))

    def unwatch(self, watcher: int) -> None:
        self.watcher_session.pop(watcher, None)
        for group, ids in list(self.watchers.items()):
            if watcher in ids:
                ids.discard(watcher)
                if not ids:
                    del self.watchers[group]
                    self.leaders.pop(group, None)
                    if self.can_send():
                        self._send(pp.PeerData(watch=pp.PeerWatch(term=self.term, group=group,
                                                                  on=False)))

    def _leader_changed(self, group: str, session: int, token: int, candidate: str,
                        domain: int) -> None:
        if self.leaders.get(group, (0, 0, "", 0))[:2] == (session, token) and group in self.leaders:
            return
        self.leaders[group] = (session, token, candidate, domain)
        for watcher in self.watchers.get(group, ()):
            mine = self.watcher_session.get(watcher, 0)
            self.node.leader_events.append((watcher, lp.LeaderEvent(
                group=group, leader=candidate, term=token, elected=bool(session and session == mine),
                leader_node=self.node.node_id(domain) if domain else None)))

    # -- messages from the authority -------------------------------------------------------------
    def on_authority(self, frm: int, data: pp.PeerData, now: int) -> None:
        kind = data.WhichOneof("body")
        body = getattr(data, kind)
        if frm != self.authority or body.term != self.term:
            return
        if kind == "leader":
            self._leader_changed(body.group, body.session_id, body.token, body.candidate,
                                 body.domain)
            return
        if body.generation != self.report_gen:
            return  # answers state that a later report replaced
        name = name_of(body.name)
        session = self.sessions.get(body.session_id)
        req = body.request_id
        wait = session.waits.get(name) if session else None
        if wait is not None and wait.req != req:
            wait = None  # an answer to an earlier acquire of this lock
        if kind == "grant":
            if wait is None:  # cancelled meanwhile (or session gone): give it back
                hold = session.holds.get(name) if session else None
                if hold is None or hold.req != req:
                    self._send(pp.PeerData(release=pp.PeerRelease(
                        term=self.term, session_id=body.session_id, name=body.name,
                        request_id=req)))
                return
            del session.waits[name]  # type: ignore[union-attr]
            connected = self.connected and now < self.lease_until
            hold = Held(body.token, body.granted_unix_ns, connected, req)
            session.holds[name] = hold  # type: ignore[union-attr]
            if connected:
                self._granted(session, name, hold)  # type: ignore[arg-type]
        elif kind == "queued":
            if wait is not None:
                wait.key, wait.queued_ns = body.key, body.queued_unix_ns
                if not wait.told_queued and session.campaign is None:  # type: ignore[union-attr]
                    wait.told_queued = True
                    slot, lock = _slot_lock(name)
                    self._event(body.session_id, queued=lp.Queued(slot=slot, lock=lock,
                                                                   position=body.position))
        elif kind == "failed":
            if wait is not None:
                del session.waits[name]  # type: ignore[union-attr]
                self._fail(body.session_id, name, body.reason, body.detail)
        elif kind == "revoke":
            hold = session.holds.get(name) if session else None
            if session is not None and hold is not None and hold.req == req:
                del session.holds[name]
                if session.campaign is None:
                    slot, lock = _slot_lock(name)
                    self._event(body.session_id, lost=lp.Lost(slot=slot, lock=lock,
                                                              reason=body.reason,
                                                              detail=body.detail))
                self._forget_if_empty_orphan(session)


# ---------------------------------------------------------------------------------------------
# authority side


@dataclass
class MemberRec:
    """What the authority knows of one member."""

    epoch: int = 0
    reported: bool = False
    parts: list[pp.PeerReport] = field(default_factory=list)
    last_q: int = 0  # receipt time of the last confirmed beat (or of the report)
    confirm_seq: int = 0
    buffered: list[pp.PeerData] = field(default_factory=list)
    generation: int = 0  # of the last applied report


class Authority:
    """The grants of one term: the table, rebuilt from reports, and the members' leases."""

    def __init__(self, node: "Node", term: int, now: int, next_token: int, prev_authority: int,
                 prev_bound: int) -> None:
        self.node, self.term, self.started = node, term, now
        self.table = LockTable(rng=node.rng, next_token=next_token, token_limit=0)
        self.members: dict[int, MemberRec] = {}
        self.active = False
        self.prev_authority, self.prev_bound = prev_authority, prev_bound
        self.reserve = 0
        self.keyless: list[tuple[Name, Entry]] = []
        self.subscribers: dict[str, set[int]] = {}
        self.announced: dict[str, tuple[int, int]] = {}
        self.activated_ns = 0
        self.suspended = False
        #: nodes this authority waits to see fenced: node -> when to run the fence again (None
        #: while it runs). Only with a fence command (Node.fencing); see _try_activate and
        #: reset_member.
        self.fences: dict[int, int | None] = {}
        self.raise_reserve()

    def suspend(self) -> None:
        self.suspended = True
        self.table.token_limit = 0  # nothing is granted while suspended

    def resume(self, now: int) -> None:
        self.suspended = False
        if not self.active:
            check_at = self._try_activate(now)
            if check_at is not None:
                self.node.want_tick(check_at)
            return
        self.table.token_limit = self.confirmed_floor()
        self.raise_reserve()
        self._grants(self.table.serve_all(self.node.wall_ns()))
        for domain, rec in self.members.items():
            buffered, rec.buffered = rec.buffered, []
            for data in buffered:
                self._handle(domain, data, now)

    # -- tokens ---------------------------------------------------------------------------------
    def raise_reserve(self) -> None:
        block = self.node.timing.token_block
        if self.table.next_token + block // 2 > self.reserve:
            self.reserve = max(self.reserve, self.table.next_token) + block
            self.node.persist_floor(self.reserve)

    def confirmed_floor(self) -> int:
        node = self.node
        floors = sorted([node.token_floor] + [p.token_floor for d, p in node.peers.items()
                                              if d != node.domain], reverse=True)
        quorum = node.quorum_needed(node.last_now)
        return floors[quorum - 1] if len(floors) >= quorum else 0

    def check_tokens(self, now: int) -> None:
        if not self.active or self.suspended:
            return
        self.raise_reserve()
        limit = self.confirmed_floor()
        if limit > self.table.token_limit:
            self.table.token_limit = limit
            if self.table.blocked:
                self._grants(self.table.serve_blocked(self.node.wall_ns()))

    # -- member records ------------------------------------------------------------------------
    def rec(self, domain: int) -> MemberRec:
        rec = self.members.get(domain)
        if rec is None:
            rec = self.members[domain] = MemberRec()
        return rec

    def reset_member(self, domain: int, now: int, *, restarted: bool = False) -> None:
        """Drop everything of a member (its lease ran out, or its daemon restarted); it must
        report again (new epoch). With a fence command, a member whose lease ran out keeps its
        holds in the table, so nothing is granted in their place, until it is fenced or reports
        again: a node that stopped answering may still be running what its locks guard."""
        rec = self.rec(domain)
        node = self.node
        self.keyless = [(n, e) for n, e in self.keyless if e.node != domain]
        if restarted or not node.fencing or domain in node.fenced:
            self._drop_node(domain, now)
            self.fences.pop(domain, None)
        else:
            self.table.drop_node_waits(domain)
            held = self.table.names_held_by_node(domain)
            if held:
                self._fence(domain, f"its lease ran out while it held {_names_text(held)}")
        rec.epoch += 1
        rec.reported, rec.parts, rec.confirm_seq, rec.buffered = False, [], 0, []
        for subscribers in self.subscribers.values():
            subscribers.discard(domain)

    def on_member_beat(self, frm: int, beat: pp.Beat, now: int) -> None:
        rec = self.members.get(frm)
        if rec is None or not rec.reported or now >= self.node.lease_end:
            return
        first = rec.confirm_seq == 0
        rec.confirm_seq = beat.seq
        rec.last_q = now
        if first:
            self.node.send_info_beat(frm, now)

    def tick(self, now: int) -> int | None:
        """Member leases, activation; returns the next deadline."""
        lease = self.node.timing.hold_lease_ns
        soonest: int | None = None
        for domain, rec in list(self.members.items()):
            if domain == self.node.domain or not rec.reported:
                continue
            expiry = rec.last_q + lease + self.node.timing.takeover_guard_ns + 100 * US
            if now >= expiry:
                self.reset_member(domain, now)
            else:
                soonest = expiry if soonest is None else min(soonest, expiry)
        for domain, retry_at in self.fences.items():
            if retry_at is None:
                continue
            if now >= retry_at:
                self.fences[domain] = None
                self.node.fence_requests.append(domain)
            else:
                soonest = retry_at if soonest is None else min(soonest, retry_at)
        if not self.active and not self.suspended:
            check_at = self._try_activate(now)
            if check_at is not None:
                soonest = check_at if soonest is None else min(soonest, check_at)
        return soonest

    def _try_activate(self, now: int) -> int | None:
        """Activate once the table is complete enough (and, with a fence command, every node
        that may hold locks this authority cannot know of is fenced or reported). Returns when to
        check again (None: an input will tell)."""
        ready_at = self._ready_at(now)
        if now < ready_at:
            return ready_at
        if self.node.fencing:
            lost, check_at = self._unaccounted(now)
            for domain in lost:
                self._fence(domain, f"new authority (term {self.term}): it may hold locks "
                                    f"this authority cannot know of")
            if lost or check_at is not None:
                return check_at
        self._activate(now)
        return None

    def _unaccounted(self, now: int) -> tuple[list[int], int | None]:
        """Lock daemons this node has heard from (and the previous authority) that neither
        reported nor were fenced since last heard: they may hold locks granted by an earlier
        authority. Returns those to fence, and when one still alive (in the membership view,
        heard within `switch_ns` and not stopped: its report is on the way) should be checked
        again."""
        node = self.node
        timing = node.timing
        heard = {d for d, peer in node.peers.items() if peer.heard_ns >= 0}
        if self.prev_authority:
            heard.add(self.prev_authority)
        lost: list[int] = []
        check_at: int | None = None
        for domain in sorted(heard - self._accounted() - node.fenced - {node.domain}):
            peer = node.peers.get(domain)
            if peer is not None and peer.heard_ns >= 0 and not peer.left and \
                    domain in (node.view or ()) and now - peer.heard_ns < timing.switch_ns:
                silent_at = peer.heard_ns + timing.switch_ns
                check_at = silent_at if check_at is None else min(check_at, silent_at)
            else:
                lost.append(domain)
        return lost, check_at

    # -- fencing --------------------------------------------------------------------------------
    def _fence(self, domain: int, why: str) -> None:
        """Have the daemon run the fence command for a node (once; again after a failure)."""
        if domain in self.fences:
            return
        self.fences[domain] = None
        if self.node.fence_asked.get(domain, 0) is None:
            return  # the node's own fence of it (out of the membership) is running
        self.node.fence_requests.append(domain)
        self.node.log.append(f"fencing node {domain}: {why}")

    def fence_done(self, domain: int, ok: bool, now: int) -> None:
        """The fence command for `domain` finished: on success what waited for it goes on; on
        failure it runs again `fence_retry_ns` later."""
        if domain not in self.fences:
            return  # reported or restarted meanwhile: nothing waits for it
        if not ok:
            retry_at = self.fences[domain] = now + self.node.timing.fence_retry_ns
            self.node.want_tick(retry_at)
            return
        del self.fences[domain]
        self._drop_node(domain, now)  # the holds it kept while unfenced, if any
        if not self.active and not self.suspended:
            check_at = self._try_activate(now)
            if check_at is not None:
                self.node.want_tick(check_at)

    def fence_waiting(self, domain: int) -> str:
        """What waits for a node's fence, for the daemon's log (empty when nothing does)."""
        if domain not in self.fences:
            return ""
        if not self.active:
            return (f"every grant (new authority, term {self.term}: node {domain} may hold "
                    f"locks it cannot know of)")
        return (f"locks {_names_text(self.table.names_held_by_node(domain))} (held by node "
                f"{domain} when its lease ran out)")

    def _accounted(self) -> set[int]:
        """Nodes whose locks this authority knows: those that reported, and the previous
        authority if it stopped cleanly (its sessions were told first; and as the last authority,
        nobody granted anything to a later instance of it)."""
        accounted = {d for d, r in self.members.items() if r.reported}
        if self.prev_authority and (self.node.has_left(self.prev_authority) or
                                    self.prev_authority in self.node.fenced):
            accounted.add(self.prev_authority)
        return accounted

    def _ready_at(self, now: int) -> int:
        """When the table is complete enough to grant."""
        node = self.node
        reported = self._accounted()
        prev = self.prev_authority
        expected = node.expected()
        guard = node.timing.takeover_guard_ns
        latest = self.started + node.timing.hold_lease_ns + guard
        if len(reported) >= expected:
            return now
        if prev and prev not in reported and len(reported) >= expected - 1:
            return min(latest, self.prev_bound + node.timing.authority_grace_ns + guard)
        return latest

    def _activate(self, now: int) -> None:
        for name, entry in self.keyless:
            if self.table.restore_waiter(name, entry):
                self._queued(name, entry)
        self.keyless = []
        self.active = True
        self.activated_ns = now
        self.table.token_limit = self.confirmed_floor()
        self.raise_reserve()
        self._grants(self.table.serve_all(self.node.wall_ns()))
        for domain, rec in self.members.items():
            buffered, rec.buffered = rec.buffered, []
            for data in buffered:
                self._handle(domain, data, now)
        for group in list(self.subscribers):
            self._announce(group, force=True)

    # -- outputs --------------------------------------------------------------------------------
    def _to(self, domain: int, **kwargs: Any) -> None:
        data = pp.PeerData(**kwargs)
        getattr(data, data.WhichOneof("body")).generation = self.rec(domain).generation
        self.node.route_to_member(domain, data)

    def _grants(self, grants: Iterable[Grant]) -> None:
        for grant in grants:
            entry = grant.entry
            self._to(entry.node, grant=pp.PeerGrant(term=self.term, session_id=entry.session,
                                                    name=name_proto(grant.name), token=grant.token,
                                                    granted_unix_ns=entry.granted_ns,
                                                    request_id=entry.req))
            if isinstance(grant.name, str):
                self._announce(grant.name)

    def _queued(self, name: Name, entry: Entry) -> None:
        position = self.table.position(name, entry)
        self._to(entry.node, queued=pp.PeerQueued(term=self.term, session_id=entry.session,
                                                  name=name_proto(name), key=entry.key,
                                                  position=position,
                                                  queued_unix_ns=entry.queued_ns,
                                                  request_id=entry.req))

    def _announce(self, group: str, force: bool = False) -> None:
        holder = self.table.holder(group)
        current = (holder.session, holder.token) if holder else (0, 0)
        if not force and self.announced.get(group, (0, 0)) == current:
            return
        self.announced[group] = current
        leader = pp.PeerLeader(term=self.term, group=group,
                               session_id=holder.session if holder else 0,
                               candidate=holder.label if holder else "",
                               domain=holder.node if holder else 0,
                               token=holder.token if holder else 0)
        for domain in self.subscribers.get(group, ()):
            self.node.route_to_member(domain, pp.PeerData(leader=leader))

    def _drop_node(self, domain: int, now: int) -> None:
        groups = self._groups_of_node(domain)
        self._grants(self.table.drop_node(domain, self.node.wall_ns()))
        for group in groups:
            self._announce(group)

    def _groups_of_node(self, domain: int) -> list[str]:
        names: set[str] = set()
        for session in self.table.nodes.get(domain, ()):
            names |= {n for n in self.table.sessions.get(session, ()) if isinstance(n, str)}
        return sorted(names)

    # -- member data -----------------------------------------------------------------------------
    def on_data(self, frm: int, data: pp.PeerData, now: int) -> None:
        kind = data.WhichOneof("body")
        body = getattr(data, kind)
        if getattr(body, "term", None) != self.term:
            return
        rec = self.rec(frm)
        if kind == "report":
            if body.epoch != rec.epoch:
                return
            rec.parts.append(body)
            if body.last:
                parts, rec.parts = rec.parts, []
                self._apply_report(frm, rec, parts, now)
            return
        if not rec.reported:
            return
        if not self.active or self.suspended:
            rec.buffered.append(data)
            return
        self._handle(frm, data, now)

    def _apply_report(self, frm: int, rec: MemberRec, parts: list[pp.PeerReport], now: int) -> None:
        rec.generation = parts[-1].generation  # answers from here on are for this report
        limit, self.table.token_limit = self.table.token_limit, 0  # no grants until restored
        self._drop_node(frm, now)
        self.table.token_limit = limit
        self.keyless = [(n, e) for n, e in self.keyless if e.node != frm]
        for part in parts:
            for held in part.held:
                name = name_of(held.name)
                entry = Entry(held.session_id, frm, held.label, held.client_pid,
                              token=held.token, granted_ns=held.granted_unix_ns,
                              req=held.request_id)
                loser = self.table.restore_holder(name, entry)
                if loser is not None:
                    self._to(loser.node, revoke=pp.PeerRevoke(
                        term=self.term, session_id=loser.session, name=held.name,
                        reason=lp.LOST_AUTHORITY_CHANGE, request_id=loser.req,
                        detail="another session holds this lock with a newer token"))
                if isinstance(name, str):
                    self._announce(name)
            for waiting in part.waiting:
                name = name_of(waiting.name)
                entry = Entry(waiting.session_id, frm, waiting.label, waiting.client_pid,
                              priority=waiting.priority, key=waiting.key,
                              queued_ns=waiting.queued_unix_ns, try_only=waiting.try_only,
                              req=waiting.request_id)
                if waiting.try_only and self.active and not self.suspended:
                    self._handle(frm, pp.PeerData(acquire=pp.PeerAcquire(
                        term=self.term, session_id=entry.session, name=waiting.name,
                        try_only=True, label=entry.label, client_pid=entry.pid,
                        request_id=entry.req)), now)
                elif waiting.key:
                    self.table.restore_waiter(name, entry)
                elif self.active:
                    if self.table.restore_waiter(name, entry):
                        self._queued(name, entry)
                else:
                    self.keyless.append((name, entry))
            if part.last:
                for group in part.watched_groups:
                    self.subscribers.setdefault(group, set()).add(frm)
        rec.reported = True
        rec.last_q = now
        rec.confirm_seq = 0
        rec.buffered = []
        self.fences.pop(frm, None)  # its report says what it holds: no fence needed
        self.raise_reserve()
        if self.suspended:
            pass  # served when the lease is regained
        elif self.active:
            self._grants(self.table.serve_all(self.node.wall_ns()))
            for part in parts:
                for group in part.watched_groups:
                    self._announce_to(group, frm)
        else:
            check_at = self._try_activate(now)
            if check_at is not None:
                self.node.want_tick(check_at)

    def _announce_to(self, group: str, domain: int) -> None:
        holder = self.table.holder(group)
        self.node.route_to_member(domain, pp.PeerData(leader=pp.PeerLeader(
            term=self.term, group=group, session_id=holder.session if holder else 0,
            candidate=holder.label if holder else "", domain=holder.node if holder else 0,
            token=holder.token if holder else 0)))

    def _handle(self, frm: int, data: pp.PeerData, now: int) -> None:
        kind = data.WhichOneof("body")
        body = getattr(data, kind)
        if kind == "acquire":
            name = name_of(body.name)
            entry = Entry(body.session_id, frm, body.label, body.client_pid,
                          priority=body.priority, try_only=body.try_only, req=body.request_id)
            result = self.table.acquire(name, entry, self.node.wall_ns(), try_only=body.try_only)
            if result.outcome == "granted":
                self._grants([Grant(name, entry, result.token)])
            elif result.outcome == "queued":
                self._queued(name, entry)
            elif result.outcome == "busy":
                self._to(frm, failed=pp.PeerFailed(term=self.term, session_id=body.session_id,
                                                   name=body.name, reason=lp.FAIL_BUSY,
                                                   detail="the lock is held",
                                                   request_id=body.request_id))
            else:
                self._to(frm, failed=pp.PeerFailed(term=self.term, session_id=body.session_id,
                                                   name=body.name, reason=lp.FAIL_INVALID,
                                                   detail="this session already holds or awaits "
                                                          "the lock",
                                                   request_id=body.request_id))
            self.raise_reserve()
        elif kind == "release":
            name = name_of(body.name)
            _, grants = self.table.release(name, body.session_id, self.node.wall_ns(),
                                           body.request_id or None)
            self._grants(grants)
            if isinstance(name, str):
                self._announce(name)
        elif kind == "end_session":
            groups = [n for n in self.table.sessions.get(body.session_id, ()) if isinstance(n, str)]
            self._grants(self.table.drop_session(body.session_id, self.node.wall_ns()))
            for group in groups:
                self._announce(group)
        elif kind == "watch":
            if body.on:
                self.subscribers.setdefault(body.group, set()).add(frm)
                self._announce_to(body.group, frm)
            else:
                subscribers = self.subscribers.get(body.group)
                if subscribers is not None:
                    subscribers.discard(frm)
                    if not subscribers:
                        del self.subscribers[body.group]
                        self.announced.pop(body.group, None)


# ---------------------------------------------------------------------------------------------
# the node


class Node:
    """One lock daemon: election, authority (when established) and member side."""

    def __init__(self, domain: int, instance: int, *, netid: int = 0, timing: Timing | None = None,
                 store: Store | None = None, expected_nodes: int = 0, now_ns: int = 0,
                 rng: random.Random | None = None,
                 wall_ns: Callable[[], int] | None = None) -> None:
        self.domain, self.instance, self.netid = domain, instance, netid
        self.timing = timing or Timing()
        self.store = store or MemoryStore()
        self.rng = rng or random.Random()
        self.wall_ns = wall_ns or (lambda: 0)
        state = self.store.load()
        self.highest_term = int(state.get("highest_term", 0))
        self.highest_owner = int(state.get("highest_owner", 0))
        self.token_floor = int(state.get("token_floor", 0))
        self.expected_config = expected_nodes
        self.expected_learned = max(1, int(state.get("expected", 1)))
        self.expected_version = int(state.get("expected_version", 0))
        self.view: set[int] | None = None
        self.peers: dict[int, PeerInfo] = {}
        # voting
        self.vote_for = 0
        self.promise_to = 0
        self.promise_end = 0
        self.promise_ends: dict[int, int] = {}
        # candidacy
        self.beat_seq = 0
        self.sent_log: dict[int, int] = {}
        self._sent_order: deque[int] = deque()
        self.cand_term = 0
        self.rounds: dict[int, Round] = {}
        self.established = False
        self.lease_end = 0
        self.next_round_ns = 0
        self.next_idle_ns = 0
        #: a daemon that just started runs for authority only from then on: it listens first,
        #: so that it joins an established authority rather than start an election
        self.listen_until = now_ns + self.timing.candidate_silence_ns
        self.seen_term = self.highest_term
        self.auth: Authority | None = None
        self.member = Member(self)
        self.lone_until = 0
        #: lone_until is a witness's vote: it stays this node's until it lapses, also once the
        #: other node is back (the witness gives it to nobody else meanwhile), so the node
        #: keeps its quorum while the other rejoins
        self.lone_arbitrated = False
        self.lone_possible = False  # reference IPs are configured (the daemon sets it)
        self.lone_since = 0
        #: the last reference-IP check failed (this node may have been the cut-off side) and
        #: the other was not heard since; see `set_lone_ok`
        self.lone_failed = False
        self.lone_rejoin_at: int | None = None
        self.lone_checked = -1
        self.was_lone = False
        #: when each peer last entered the membership view (the silence of a lock daemon never
        #: heard counts from then)
        self.joined_ns: dict[int, int] = {}
        self.stopping = False  # the daemon stops: no acquire is taken any more
        self.fencing = False  # a fence command is configured (the daemon sets it)
        #: nodes fenced successfully and not heard from since (a fence stands until the node
        #: shows life again: a datagram from it, or back in the membership view)
        self.fenced: set[int] = set()
        #: when each peer last left the membership view (fenced `fence_after_ns` later)
        self.left_view_ns: dict[int, int] = {}
        #: nodes whose fence this node asked for: domain -> when to ask again (None: running)
        self.fence_asked: dict[int, int | None] = {}
        self.last_now = now_ns
        self._wake: int | None = None
        # outputs
        self.out_beats: list[tuple[int, pp.Beat, bool]] = []  # (to, beat, on every path)
        self.out_data: list[tuple[int, pp.PeerData]] = []
        self.events: list[tuple[int, lp.SessionEvent]] = []
        self.leader_events: list[tuple[int, lp.LeaderEvent]] = []
        self.fence_requests: list[int] = []  # nodes to fence (the daemon runs the command)
        self.log: list[str] = []  # notable transitions, for the daemon's log

    # -- persistence ----------------------------------------------------------------------------
    def _save(self) -> None:
        self.store.save({"highest_term": self.highest_term, "highest_owner": self.highest_owner,
                         "token_floor": self.token_floor, "expected": self.expected_learned,
                         "expected_version": self.expected_version})

    def persist_floor(self, floor: int) -> None:
        if floor > self.token_floor:
            self.token_floor = floor
            self._save()

    # -- small helpers ---------------------------------------------------------------------------
    def node_id(self, domain: int) -> Any:
        from skyge.v1 import common_pb2
        return common_pb2.NodeId(netid=self.netid, domain=domain)

    def want_tick(self, at: int) -> None:
        if self._wake is None or at < self._wake:
            self._wake = at

    def expected(self) -> int:
        return self.expected_config or self.expected_learned

    def _peer(self, domain: int) -> PeerInfo:
        peer = self.peers.get(domain)
        if peer is None:
            peer = self.peers[domain] = PeerInfo()
        return peer

    def _fresh(self, domain: int, now: int) -> bool:
        """Heard from lately: within switch_ns, or candidate_silence_ns for a peer whose last
        beat said it runs (a candidate beats every beat_ns, so a few missed rounds mean it
        stalled or died)."""
        peer = self.peers.get(domain)
        if peer is None or peer.left or peer.heard_ns < 0 or \
                now - peer.heard_ns >= self.timing.switch_ns:
            return False
        if peer.candidate_term:
            return now - peer.candidate_ns < self.timing.candidate_silence_ns
        return True

    def has_left(self, domain: int) -> bool:
        """The peer's lock daemon stopped cleanly (and no later instance of it was heard)."""
        peer = self.peers.get(domain)
        return peer is not None and peer.left

    def _absent_at(self, domain: int) -> int:
        """When a peer in the view counts as absent for the two-node rule: at once when its
        lock daemon stopped cleanly, else `switch_ns` after its lock daemon was last heard (a node
        coming back into the view does not restart the count: only its daemon speaking does), or
        after it joined the view if never heard."""
        peer = self.peers.get(domain)
        if peer is not None and peer.left:
            return 0
        if peer is not None and peer.heard_ns >= 0:
            return peer.heard_ns + self.timing.switch_ns
        return self.joined_ns.get(domain, 0) + self.timing.switch_ns

    def lone(self, now: int) -> bool:
        """The two-node rule applies: two expected nodes and the other one absent: out of the
        view, or its lock daemon stopped or silent for `switch_ns` (see ARCHITECTURE.md: such a
        daemon cannot grant, nor keep holds)."""
        if self.expected() != 2 or self.view is None:
            return False
        return now >= self._lone_at()

    def _lone_at(self) -> int:
        """When the other node counts as absent (two expected nodes, known view): its
        `_absent_at` while in the view; once out of it, two idle beats after its lock daemon
        was last heard (a daemon still speaking means a cut that just healed, its heartbeat
        not back yet)."""
        assert self.view is not None
        ends = [self._absent_at(d) for d in self.view if d != self.domain]
        ends += [peer.heard_ns + 2 * self.timing.idle_beat_ns for d, peer in self.peers.items()
                 if d != self.domain and d not in self.view and not peer.left and
                 peer.heard_ns >= 0]
        return max(ends, default=0)

    def _track_lone(self, now: int) -> None:
        """Note when the node becomes lone (a reference-IP check is due: `lone_check_due`) and
        void an earlier check once it is not lone any more."""
        lone = self.lone(now)
        if lone and not self.was_lone:
            self.lone_since = now
        if not lone and not self.lone_arbitrated:
            self.lone_until = 0
        self.was_lone = lone

    def lone_check_due(self, now: int) -> bool:
        """Lone, and no reference-IP check since it became so."""
        return self.lone(now) and self.lone_checked < self.lone_since

    def quorum_needed(self, now: int) -> int:
        expected = self.expected()
        if expected <= 1:
            return 1
        if expected == 2 and now < self.lone_until and (self.lone_arbitrated or self.lone(now)):
            return 1
        return expected // 2 + 1

    def partition_quorum(self, now: int) -> bool:
        """Does the membership view hold a quorum (view-based; the leases decide grants)?"""
        if self.view is None:
            return False
        if self.lone(now):
            return now < self.lone_until
        return len(self.view) >= self.quorum_needed(now)

    def may_have_quorum(self, now: int) -> bool:
        """A quorum, or a lone two-node member whose reference-IP check is still under way."""
        if self.partition_quorum(now):
            return True
        return self.lone_possible and (self.lone_check_due(now) or self._lone_pending(now))

    def _lone_pending(self, now: int) -> bool:
        """The other left the view but its lock daemon spoke lately: lone (and checked) within
        two idle beats unless it speaks again."""
        if self.expected() != 2 or self.view is None or self.lone(now):
            return False
        return all(now >= self._absent_at(d) for d in self.view if d != self.domain)

    def cut_off(self, now: int) -> bool:
        """No authority can confirm this node's locks any more: its membership is unknown, or
        its view gives it no quorum (and no two-node check is under way). Its sessions are told
        at once rather than at the lease end."""
        return not self.may_have_quorum(now)

    def quorum_rule(self, now: int) -> str:
        expected = self.expected()
        seen = len(self.view) if self.view is not None else 0
        if self.view is None:
            return "membership unknown (heartbeat daemon unreachable)"
        if expected <= 1:
            return "single node"
        if self.lone(now):
            alone = ("lone node" if seen == 1 else
                     "the other node's lock daemon stopped or is silent")
            if now < self.lone_until:
                return f"two-node: {alone}, reference IP reachable"
            return f"two-node: {alone}, no reference IP reachable (or fence not done)"
        return f"majority: {expected // 2 + 1} of {expected} (members seen: {seen})"

    def view_bits(self) -> int:
        bits = 0
        for domain in self.view or ():
            if 1 <= domain <= 64:
                bits |= 1 << (domain - 1)
        return bits

    # -- routing --------------------------------------------------------------------------------
    def route_to_authority(self, authority: int, data: pp.PeerData) -> None:
        if authority == self.domain:
            if self.auth is not None:
                self.auth.on_data(self.domain, data, self.last_now)
        elif authority:
            self.out_data.append((authority, data))

    def route_to_member(self, domain: int, data: pp.PeerData) -> None:
        if domain == self.domain:
            self.member.on_authority(self.domain, data, self.last_now)
        else:
            self.out_data.append((domain, data))

    # -- beats ----------------------------------------------------------------------------------
    def _next_seq(self, now: int) -> int:
        self.beat_seq += 1
        self.sent_log[self.beat_seq] = now
        self._sent_order.append(self.beat_seq)
        while len(self._sent_order) > 512:
            self.sent_log.pop(self._sent_order.popleft(), None)
        return self.beat_seq

    def _beat(self, to: int, seq: int, now: int) -> pp.Beat:
        beat = pp.Beat(seq=seq, vote_for=self.vote_for, highest_term=self.highest_term,
                       highest_term_owner=self.highest_owner, token_floor=self.token_floor,
                       expected=self.expected(), expected_version=self.expected_version,
                       view_bits=self.view_bits())
        if self.vote_for == self.domain and self.cand_term:
            beat.candidate_term = self.cand_term
            beat.established = self.established and now < self.lease_end
        last, last_term = self.member.last_authority
        if last:
            beat.last_authority, beat.last_authority_term = last, last_term
            end = self.promise_ends.get(last)
            if end is not None:
                beat.has_promise_end = True
                beat.promise_end_us = (end - now) // US
        if self.fenced:
            beat.fenced.extend(sorted(self.fenced))
        if self.auth is not None and beat.established:
            rec = self.auth.rec(to)
            beat.confirm_seq = rec.confirm_seq
            beat.report_term, beat.report_epoch = self.auth.term, rec.epoch
            beat.token_reserve = self.auth.reserve
        return beat

    def send_info_beat(self, to: int, now: int) -> None:
        """An immediate beat that needs no answer (after a report, a first confirmation)."""
        self.out_beats.append((to, self._beat(to, self._next_seq(now), now), False))

    def _targets(self, now: int) -> list[int]:
        targets = set(self.view or ()) | {d for d in self.peers if self._fresh(d, now)}
        targets.discard(self.domain)
        return sorted(targets)

    def _send_round(self, now: int) -> None:
        if self.established and now >= self.lease_end:
            self._suspend(now)
        if self.auth is not None and not self.established and self.seen_term > self.auth.term:
            # a higher term was proposed, maybe elected, while this one was suspended: it cannot
            # resume (a voter that saw it would refuse; a lone node has no voter to ask)
            self._lose_authority(now)
        if not self.cand_term:
            if self.auth is not None:
                self._lose_authority(now)
            self._propose(now)
        seq = self._next_seq(now)
        self.promise_to = self.domain
        self.promise_end = max(self.promise_end, now + self.timing.vote_lease_ns)
        self.promise_ends[self.domain] = self.promise_end
        round_ = self.rounds[seq] = Round(now, self.cand_term)
        for old in [s for s, r in self.rounds.items()
                    if now - r.sent_ns > self.timing.vote_lease_ns]:
            del self.rounds[old]
        for to in self._targets(now):
            beat = self._beat(to, seq, now)
            beat.round = True
            self.out_beats.append((to, beat, True))
        self.next_round_ns = now + self.timing.beat_ns
        self._evaluate(round_, now)  # a lone node is established here: it says so at once

    def _propose(self, now: int) -> None:
        self.cand_term = max(self.highest_term, self.seen_term) + 1
        self.highest_term, self.highest_owner = self.cand_term, self.domain
        self._save()

    # -- inputs ---------------------------------------------------------------------------------
    def on_view(self, view: Iterable[int] | None, now: int) -> None:
        """The membership view (domains, this node included), or None when unknown."""
        self.last_now = now
        before = self.view or set()
        self.view = set(view) | {self.domain} if view is not None else None
        if self.view is not None:
            self.fenced -= self.view  # back in the membership: an earlier fence no longer stands
            for domain in self.view - before:
                self.joined_ns[domain] = now
                self.left_view_ns.pop(domain, None)
                self.fence_asked.pop(domain, None)
            for domain in before - self.view:
                self.left_view_ns[domain] = now
        if self.view is not None and not self.expected_config and \
                len(self.view) > self.expected_learned:
            self.expected_learned = len(self.view)
            self._save()
        self._track_lone(now)
        self._reconsider(now)
        self.want_tick(now)  # the member side checks whether the node is cut off

    def set_lone_ok(self, until: int, now: int, *, arbitrated: bool = False) -> None:
        """Two-node rule: the reference IP answered (and the fence ran), or the witness gave its
        vote (`arbitrated`); valid until `until` (0: it did not). A node that failed a reference-IP
        check (cut off from the reference IP too, so the other may have taken over) may act alone
        again only once the other stayed silent for `switch_ns` after the reference IP came back:
        were it alive, its daemon would have been heard by then, since a cut that spares the
        reference IP rarely spares the peer's path. A witness's vote needs no such wait: it is
        never the other node's at the same time."""
        self._check_lease(now)
        self.lone_checked = now
        if arbitrated and until:
            self.lone_failed, self.lone_rejoin_at = False, None
        if not until:
            self.lone_failed = True
            self.lone_rejoin_at = None
            if not self.partition_quorum(now):
                self.member.fail_waits_in_grace("this node's partition has no quorum: "
                                                + self.quorum_rule(now))
        elif self.lone_failed:
            if self.lone_rejoin_at is None:
                self.lone_rejoin_at = now + self.timing.switch_ns
                self.log.append("two-node rule: the reference IP answers again; acting alone "
                                "only if the other node stays silent for "
                                f"{self.timing.switch_ns // MS} ms")
            if now < self.lone_rejoin_at:
                until = 0  # the daemon checks again every LONE_CHECK_S
            else:
                self.lone_failed, self.lone_rejoin_at = False, None
        self.lone_arbitrated = arbitrated and bool(until)
        self.lone_until = until if self.lone(now) else 0

    def set_expected(self, expected: int, now: int) -> None:
        """An operator sets the expected number of nodes (ValueError when impossible)."""
        if self.expected_config:
            raise ValueError(f"expected_nodes = {self.expected_config} is set in lock.cfg; "
                             "change it there")
        if not 1 <= expected <= 64:
            raise ValueError(f"expected votes must be 1 to 64, got {expected}")
        members = len(self.view or {self.domain})
        if expected < members:
            raise ValueError(f"expected votes cannot be below the {members} current members")
        self.expected_learned = expected
        self.expected_version += 1
        self._save()
        self.next_idle_ns = now

    def _learn_expected(self, expected: int, version: int) -> None:
        if self.expected_config or not expected:
            return
        if version > self.expected_version or (version == self.expected_version and
                                               expected > self.expected_learned):
            self.expected_learned, self.expected_version = expected, version
            self._save()

    def on_peer_instance(self, domain: int, instance: int, now: int) -> bool:
        """A datagram from `domain` says its daemon instance is `instance`: the daemon is heard
        from. False when it is an older instance (to be ignored)."""
        peer = self._peer(domain)
        if instance < peer.instance:
            return False
        self.fenced.discard(domain)  # it shows life: an earlier fence no longer stands
        self.lone_failed, self.lone_rejoin_at = False, None  # the other is heard: no doubt left
        if instance > peer.instance:
            known = peer.instance != 0
            peer = self.peers[domain] = PeerInfo(instance=instance)
            if known:
                self.log.append(f"lock daemon of node {domain} restarted (instance {instance})")
                if self.promise_to == domain:
                    self.promise_end = min(self.promise_end, now)
                if self.auth is not None:
                    self.auth.reset_member(domain, now, restarted=True)
        peer.heard_ns = now
        return True

    def on_beat(self, frm: int, beat: pp.Beat, now: int) -> None:
        self._check_lease(now)
        peer = self._peer(frm)
        if beat.seq <= peer.last_seq:
            return
        peer.last_seq = beat.seq
        if beat.leaving:
            self._peer_left(frm, now)
            return
        for domain in beat.fenced:
            if domain != self.domain and domain not in self.fenced and \
                    domain not in (self.view or ()):
                self.fenced.add(domain)
                self._peer_gone(domain, now, f"node {domain} is off: fenced by node {frm}")
        peer.candidate_term = beat.candidate_term
        if beat.candidate_term:
            peer.candidate_ns = now
        if beat.established:
            peer.established_ns = now
        peer.vote_for, peer.highest_term = beat.vote_for, beat.highest_term
        peer.token_floor = max(peer.token_floor, beat.token_floor)
        peer.view_bits = beat.view_bits
        self.seen_term = max(self.seen_term, beat.highest_term, beat.candidate_term)
        self._learn_expected(beat.expected, beat.expected_version)
        if beat.established and beat.token_reserve > self.token_floor:
            self.persist_floor(beat.token_reserve)
        member = self.member
        if beat.established and beat.candidate_term > member.term:
            epoch = beat.report_epoch if beat.report_term == beat.candidate_term else 0
            self.log.append(f"following authority {frm}, term {beat.candidate_term}")
            member.adopt(frm, beat.candidate_term, epoch, now)
        elif (frm == member.authority and beat.established and
              beat.candidate_term == member.term):
            if beat.report_term == member.term and beat.report_epoch > member.reported_epoch:
                member.report(beat.report_epoch, now)
            if beat.confirm_seq:
                sent = self.sent_log.get(beat.confirm_seq)
                if sent is not None:
                    member.extend(sent + self.timing.hold_lease_counted_ns - self.timing.early_ns, now)
        if beat.candidate_term and beat.round:
            self._answer(frm, beat, now)
        if beat.answer_seq and self.vote_for == self.domain:
            self._count(frm, beat, now)
        if self.auth is not None:
            self.auth.on_member_beat(frm, beat, now)
            self.auth.check_tokens(now)
        self._reconsider(now)

    def _peer_left(self, domain: int, now: int) -> None:
        """A peer's daemon stopped cleanly: it grants, confirms and votes no more, and told its
        sessions first. So a vote promised to it is void, an authority drops its state at once (as
        for a restarted daemon), and it is neither eligible nor (two-node rule) present."""
        self._peer(domain).left = True
        self._peer_gone(domain, now, f"lock daemon of node {domain} stopped")

    def _peer_gone(self, domain: int, now: int, what: str) -> None:
        """A peer that grants, confirms and holds nothing any more: its daemon stopped cleanly,
        or its node was fenced (off). Vote promises to it are void and an authority drops what
        it held at once, so nobody waits for its leases."""
        self.log.append(what)
        if self.promise_to == domain:
            self.promise_end = min(self.promise_end, now)
        if domain in self.promise_ends:
            self.promise_ends[domain] = min(self.promise_ends[domain], now)
        if self.auth is not None:
            self.auth.reset_member(domain, now, restarted=True)
        self._track_lone(now)
        self._reconsider(now)
        self.want_tick(now)

    def _answer(self, frm: int, beat: pp.Beat, now: int) -> None:
        term = beat.candidate_term
        vote = False
        if self.vote_for == frm and (self.promise_to in (0, frm) or now >= self.promise_end):
            if beat.established or term > self.highest_term or (
                    term == self.highest_term and self.highest_owner == frm):
                vote = True
        if vote:
            if term > self.highest_term or (term == self.highest_term and
                                            self.highest_owner != frm and not beat.established):
                self.highest_term, self.highest_owner = term, frm
                self._save()
            if self.promise_to != frm:
                self.promise_end = 0
            self.promise_to = frm
            self.promise_end = max(self.promise_end, now + self.timing.vote_lease_ns)
            self.promise_ends[frm] = self.promise_end
        reply = self._beat(frm, self._next_seq(now), now)
        reply.answer_seq, reply.vote = beat.seq, vote
        self.out_beats.append((frm, reply, False))

    def _count(self, frm: int, beat: pp.Beat, now: int) -> None:
        round_ = self.rounds.get(beat.answer_seq)
        if round_ is None or round_.term != self.cand_term:
            return
        if not beat.vote:
            if not self.established and beat.highest_term >= self.cand_term and \
                    beat.highest_term_owner != self.domain:
                # someone proposed a higher term: ours cannot be (re)established any more
                if self.auth is not None:
                    self._lose_authority(now)
                self.cand_term = 0  # propose a higher term next round
            return
        end = now + beat.promise_end_us * US if beat.has_promise_end else None
        round_.votes[frm] = VoteInfo(beat.token_floor, beat.last_authority,
                                     beat.last_authority_term, end)
        self._evaluate(round_, now)

    def _evaluate(self, round_: Round, now: int) -> None:
        if len(round_.votes) + 1 < self.quorum_needed(now):
            return
        lease = round_.sent_ns + self.timing.vote_lease_counted_ns
        if now >= lease:
            return
        extended = lease > self.lease_end
        if extended:
            self.lease_end = lease
        if not self.established:
            if self.auth is not None and self.auth.term == round_.term:
                self._resume(now)
            else:
                self._establish(round_, now)
        elif not extended:
            return
        if self.auth is not None and self.member.authority == self.domain:
            self.member.extend(self.lease_end + self.timing.authority_grace_ns
                               - self.timing.early_ns, now)

    def _establish(self, round_: Round, now: int) -> None:
        term = round_.term
        self.established = True
        floors = [self.token_floor] + [v.floor for v in round_.votes.values()]
        candidates = [(v.last_authority_term, v.last_authority) for v in round_.votes.values()]
        mine = self.member.last_authority
        candidates.append((mine[1], mine[0]))
        prev_term, prev = max(candidates)
        bounds = [v.promise_end_ns for v in round_.votes.values()
                  if v.last_authority == prev and v.promise_end_ns is not None]
        if prev in self.promise_ends:
            bounds.append(self.promise_ends[prev])
        prev_bound = min(now, max(bounds)) if bounds else now
        if prev == self.domain:
            prev = 0  # this node reports to itself
        self.auth = Authority(self, term, now, max(floors) + 1, prev if prev_term else 0,
                              prev_bound)
        self.log.append(f"authority for term {term} (votes from {sorted(round_.votes)}; "
                        f"previous authority {prev or '-'})")
        self.member.adopt(self.domain, term, 0, now)
        self.next_round_ns = now  # tell everyone at once
        self.want_tick(now)

    def _suspend(self, now: int) -> None:
        """The authority lease lapsed: grant nothing, confirm nothing, but keep term and table:
        a quorum voting for this same term again proves nobody else was elected meanwhile (a
        voter that saw a higher term refuses it), so the term can resume without recovery."""
        self.established = False
        if self.auth is not None:
            self.auth.suspend()
            self.log.append(f"authority lease of term {self.auth.term} lapsed: suspended")

    def _resume(self, now: int) -> None:
        self.established = True
        assert self.auth is not None
        self.log.append(f"authority lease of term {self.auth.term} regained")
        self.auth.resume(now)
        self.next_round_ns = now
        self.want_tick(now)

    def _lose_authority(self, now: int) -> None:
        if self.auth is not None:
            self.log.append(f"authority term {self.auth.term} given up")
        self.established = False
        self.auth = None
        self.cand_term = 0
        self.rounds.clear()

    # -- vote choice ------------------------------------------------------------------------------
    def _eligible(self, now: int) -> list[int]:
        """This node and the peers of its view heard from lately that know their membership
        (a node whose view is unknown does not campaign)."""
        if self.view is None:
            return []  # membership unknown: no candidate at all
        return sorted({self.domain} | {d for d in self.view if self._fresh(d, now) and
                                       self.peers[d].view_bits >> (d - 1) & 1})

    def _established_fresh(self, domain: int, now: int) -> bool:
        """Holds the authority lease, or a peer still running that held it lately (a lapse may
        be brief: it resumes its term if it gets the votes again)."""
        if domain == self.domain:
            return self.established and now < self.lease_end
        peer = self.peers.get(domain)
        return peer is not None and peer.candidate_term != 0 and peer.established_ns >= 0 and \
            now - peer.established_ns < self.timing.switch_ns

    def _established_peer(self, eligible: list[int], now: int) -> int:
        """An eligible peer that holds (or lately held) the authority lease, the highest term
        first; 0 = none."""
        established = [(self.peers[d].candidate_term, d) for d in eligible
                       if d != self.domain and self._established_fresh(d, now)]
        return max(established)[1] if established else 0

    def _reconsider(self, now: int) -> None:
        """Choose whom to vote for: the current choice while it is an established authority,
        else an established authority (a node whose candidacy got no votes joins it instead of
        going on with an election), else the lowest eligible domain, this node only once it has
        listened for a while after its start (see `listen_until`)."""
        eligible = self._eligible(now)
        current = self.vote_for
        if current in eligible and self._established_fresh(current, now):
            target = current
        else:
            target = self._established_peer(eligible, now) or (eligible[0] if eligible else 0)
        if target == self.domain and now < self.listen_until:
            target = 0
            self.want_tick(self.listen_until)
        if target == current:
            return
        if current == self.domain:  # stop running (our own promise must still run out)
            if self.established:
                self._lose_authority(now)
            self.cand_term = 0
            self.rounds.clear()
            self.vote_for = current = 0
            self.next_idle_ns = now
            self.want_tick(now)
        if self.promise_to not in (0, target) and now < self.promise_end:
            self.want_tick(self.promise_end)
            return
        self.vote_for = target
        if target == self.domain:
            self.next_round_ns = now
        self.next_idle_ns = now
        self.want_tick(now)

    # -- time -----------------------------------------------------------------------------------
    def _check_lease(self, now: int) -> None:
        """No grant after the authority lease: every input checks it first."""
        self.last_now = now
        self._track_lone(now)
        if self.established and now >= self.lease_end:
            self._suspend(now)

    def tick(self, now: int) -> None:
        self._check_lease(now)
        self._wake = None
        self._reconsider(now)
        if self.vote_for == self.domain:
            if now >= self.next_round_ns:
                self._send_round(now)
            self.want_tick(self.next_round_ns)
        elif now >= self.next_idle_ns:
            seq = self._next_seq(now)
            for to in self._targets(now):
                self.out_beats.append((to, self._beat(to, seq, now), True))
            self.next_idle_ns = now + self.timing.idle_beat_ns
        if self.vote_for != self.domain:
            self.want_tick(self.next_idle_ns)
        if self.expected() == 2 and self.view is not None and not self.lone(now):
            self.want_tick(self._lone_at())
        if self.established:
            self.want_tick(self.lease_end)
        if self.fencing:
            self._fence_lost(now)
        if self.auth is not None:
            deadline = self.auth.tick(now)
            if deadline is not None:
                self.want_tick(deadline)
            self.auth.check_tokens(now)
        self.member.tick(now)
        if self.member.deadlines is not None:
            self.want_tick(self.member.deadlines)
        if self.promise_to and now < self.promise_end:
            self.want_tick(self.promise_end)

    def _fence_lost(self, now: int) -> None:
        """Fence a node out of the membership for `fence_after_ns` that may hold locks, so they
        pass on as soon as it is off: a member holding locks of this node's authority (the
        authority fences it), or the authority this node follows or promised its vote to (the
        lowest domain of the view fences it; it is the next candidate). Only from a side with a quorum; never
        the two-node rule's peer (the daemon's lone check fences that one)."""
        if self.view is None or self.expected() <= 2 or not self.partition_quorum(now):
            return
        suspects = ({d for d in self.auth.members if self.auth.table.names_held_by_node(d)}
                    if self.auth is not None else set())
        if min(self.view) == self.domain:
            suspects |= {self.member.authority, self.promise_to, self.vote_for}
        running = self.auth.fences if self.auth is not None else {}
        for domain, left in self.left_view_ns.items():
            if domain not in suspects or domain in self.fenced or domain in self.view or \
                    not domain or domain in running:
                continue
            due = left + self.timing.fence_after_ns
            asked = self.fence_asked.get(domain, 0)
            if asked is None:
                continue  # running
            due = max(due, asked)
            if now >= due:
                self.fence_asked[domain] = None
                self.fence_requests.append(domain)
                self.log.append(f"fencing node {domain}: out of the membership for "
                                f"{(now - left) // MS} ms")
            else:
                self.want_tick(due)

    def next_wakeup(self) -> int:
        return self._wake if self._wake is not None else self.last_now + self.timing.beat_ns

    # -- a clean stop -----------------------------------------------------------------------------
    def stop_sessions(self, now: int) -> bool:
        """First step of a clean stop: every session loses what it holds and awaits (told at
        once) and no acquire is taken any more. Returns whether a lock was held: then the daemon
        waits `leave_warning_ns` before `leave`, so its sessions are told at least that long before the
        locks can pass on, as on a lease end."""
        self._check_lease(now)
        self.stopping = True
        held = any(session.holds for session in self.member.sessions.values())
        self.member.drop_all(now, "the lock daemon of this node is stopping", lp.LOST_NODE_LEFT)
        return held

    def leave(self, now: int) -> None:
        """Last step of a clean stop: give up any candidacy or authority and tell every peer, on
        every path, that this daemon instance is gone, so they need not wait for its leases (see
        `_peer_left`). The daemon sends nothing after this."""
        self._check_lease(now)
        if self.vote_for == self.domain:
            self._lose_authority(now)
        self.vote_for = 0
        seq = self._next_seq(now)
        for to in self._targets(now):
            beat = self._beat(to, seq, now)
            beat.leaving = True
            self.out_beats.append((to, beat, True))

    # -- local sessions ---------------------------------------------------------------------------
    def open_session(self, session_id: int, label: str, pid: int, now: int,
                     campaign: str | None = None,
                     keep_holds: bool = False) -> tuple[int, list[tuple[Name, int]]]:
        """Open a session as `session_id`, or with `keep_holds` continue the orphaned session
        of its label. Returns the session's id and the holds it adopted, (name, token) in lock
        order. Raises OpenRefused when refused (see Member.open)."""
        self._check_lease(now)
        session = self.member.open(session_id, label, pid, campaign, keep_holds)
        adopted = sorted(((name, hold.token) for name, hold in session.holds.items()),
                         key=lambda item: sort_key(item[0]))
        return session.id, adopted

    def acquire(self, session_id: int, name: Name, now: int, *, priority: int = 0,
                try_only: bool = False, timeout_ms: int = 0) -> None:
        self._check_lease(now)
        self.member.acquire(session_id, name, priority=priority, try_only=try_only,
                            timeout_ms=timeout_ms, now=now)

    def release(self, session_id: int, name: Name, now: int) -> None:
        self._check_lease(now)
        self.member.release(session_id, name, now)

    def close_session(self, session_id: int, now: int) -> None:
        self._check_lease(now)
        self.member.close(session_id, now)

    def watch(self, watcher: int, group: str, session: int, now: int) -> None:
        self._check_lease(now)
        self.member.watch(watcher, group, session)

    def unwatch(self, watcher: int, now: int) -> None:
        self._check_lease(now)
        self.member.unwatch(watcher)

    def fence_done(self, domain: int, ok: bool, now: int) -> None:
        """The fence command for `domain` finished (ok: it exited 0 in time)."""
        self._check_lease(now)
        asked = domain in self.fence_asked
        if asked:
            self.fence_asked[domain] = None if ok else now + self.timing.fence_retry_ns
            if not ok:
                self.want_tick(now + self.timing.fence_retry_ns)
        if ok:
            self.fenced.add(domain)
        if self.auth is not None:
            self.auth.fence_done(domain, ok, now)
        if ok and asked and domain not in (self.view or ()):
            self._peer_gone(domain, now, f"node {domain} is off: fenced after it left the "
                                         f"membership")

    def fence_waiting(self, domain: int) -> str:
        """What this node's authority waits for from a node's fence (empty: nothing)."""
        return self.auth.fence_waiting(domain) if self.auth is not None else ""

    def on_data(self, frm: int, data: pp.PeerData, now: int) -> None:
        """An in-order data message from a peer."""
        self._check_lease(now)
        kind = data.WhichOneof("body")
        if kind in ("grant", "queued", "failed", "revoke", "leader"):
            self.member.on_authority(frm, data, now)
        elif kind in ("acquire", "release", "end_session", "report", "watch"):
            if self.auth is not None:
                self.auth.on_data(frm, data, now)

    # -- state for GetAuthority / GetPeerState ---------------------------------------------------
    def authority_info(self, now: int) -> dict[str, Any]:
        member = self.member
        valid = member.connected and now < member.lease_until
        authority = member.authority if valid else (self.domain if self.established and
                                                    now < self.lease_end else 0)
        return {"authority": authority, "term": member.term if valid else 0,
                "has_quorum": bool(valid or (self.established and now < self.lease_end)),
                "expected": self.expected(), "members": sorted(self.view or ()),
                "rule": self.quorum_rule(now)}
