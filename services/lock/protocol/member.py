"""The member side of a lock daemon: the node's own sessions, their holds and waits, as the
node sees them (the authority may be on another node)."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

from .names import name_of, name_proto, names_text, slot_lock
from .table import Name, acquire_problem
from .timing import MS

if TYPE_CHECKING:
    from .node import Node



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

    def __init__(self, node: Node) -> None:
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
        #: set with resync_at when the node was cut off while connected: its waits are kept
        #: (they hold nothing) until then, and fail there only if the node is still cut off, so
        #: that a view blip (a heartbeat stall under load) costs no place in a queue (see tick)
        self.keep_waits_until: int | None = None
        self.sessions: dict[int, LocalSession] = {}
        self.last_authority = (0, 0)
        #: group -> watcher ids (observers and campaigns)
        self.watchers: dict[str, set[int]] = {}
        self.watcher_session: dict[int, int] = {}  # watcher id -> campaign session (0 observer)
        #: group -> (session, token, candidate, domain)
        self.leaders: dict[str, tuple[int, int, str, int]] = {}
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
            self.drop_all(now, "no authority confirmed this node's locks in time",
                          keep_waits=self.keep_waits_until is not None)
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
            self.keep_waits_until = None  # back in time: the kept waits go on
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

    def drop_all(self, now: int, detail: str, reason: lp.LostReason = lp.LOST_NO_QUORUM, *,
                 keep_waits: bool = False) -> None:
        """The lease ran out (or the node is cut off, or its daemon stops): every hold is lost.
        Waits fail too, unless this node's partition may still have quorum (an authority change,
        a lone node checking its reference IP) or `keep_waits` (a cut-off, until
        `keep_waits_until`): they wait `acquire_grace_ns` for the next authority, to which they
        are reported with their keys."""
        self.connected = False
        keep_waits = not self.node.stopping and (keep_waits or self.node.may_have_quorum(now))
        grace = now + self.node.timing.acquire_grace_ns
        for session in list(self.sessions.values()):
            for name, hold in list(session.holds.items()):
                del session.holds[name]
                if session.campaign is not None:
                    continue
                if hold.delivered:
                    slot, lock = slot_lock(name)
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

    def _fail_kept(self, detail: str) -> None:
        """The node is still cut off when the waits kept through its cut-off are due: they fail,
        and so do the grants that came meanwhile (never delivered); the authority is told."""
        for session in list(self.sessions.values()):
            ended = [(name, wait.req, wait.sent) for name, wait in session.waits.items()]
            session.waits.clear()
            for name, hold in list(session.holds.items()):
                if not hold.delivered:
                    del session.holds[name]
                    ended.append((name, hold.req, True))
            for name, req, sent in ended:
                if sent and self.can_send():
                    self._send(pp.PeerData(release=pp.PeerRelease(
                        term=self.term, session_id=session.id, name=name_proto(name),
                        request_id=req)))
                self._fail(session.id, name, lp.FAIL_NO_QUORUM, detail)
            self._forget_if_empty_orphan(session)

    def tick(self, now: int) -> None:
        if self.connected and now >= self.lease_until:
            self.drop_all(now, "this node lost quorum (no confirmation from an authority)")
            if self.can_send():
                self.report(self.reported_epoch, now)
        elif self.connected and self.node.cut_off(now):
            # no authority can count on this node any more: tell the sessions now rather than at
            # the lease end (they get the whole lease as warning), but let the authority keep
            # their holds until then. Waits hold nothing: they are kept until then too (reported
            # with their keys), and fail only if the node is still cut off. Failed at once, a
            # view blip would cost their places: the resync report removes them at the
            # authority before their sessions can ask again (HA asks again after RETRY_S).
            self.drop_all(now, "this node is cut off: " + self.node.quorum_rule(now),
                          keep_waits=True)
            self.resync_at = self.keep_waits_until = \
                self.lease_until + self.node.timing.early_ns
        if self.keep_waits_until is not None and now >= self.keep_waits_until:
            self.keep_waits_until = None
            if self.node.cut_off(now):
                self._fail_kept("this node is cut off: " + self.node.quorum_rule(now))
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
        if self.keep_waits_until is not None:
            soonest = self.keep_waits_until if soonest is None else \
                min(soonest, self.keep_waits_until)
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
                        f"{names_text(session.holds)} kept since its previous client ended")
                    return session
        session = self.sessions[session_id] = LocalSession(session_id, label, pid,
                                                           campaign=campaign,
                                                           keep_holds=keep_holds)
        return session

    def _fail(self, session: int, name: Name, reason: lp.FailReason, detail: str) -> None:
        slot, lock = slot_lock(name)
        s = self.sessions.get(session)
        if s is not None and s.campaign is not None:
            return
        self._event(session, failed=lp.AcquireFailed(slot=slot, lock=lock, reason=reason,
                                                      detail=detail))

    def _granted(self, session: LocalSession, name: Name, hold: Held) -> None:
        if session.campaign is not None:
            return  # campaigns learn from leader events
        slot, lock = slot_lock(name)
        self._event(session.id, granted=lp.Granted(slot=slot, lock=lock, fencing_token=hold.token,
                                                   valid_until_boot_ns=self.lease_until))

    def acquire(self, session_id: int, name: Name, *, priority: int = 0, try_only: bool = False,
                timeout_ms: int = 0, now: int) -> None:
        session = self.sessions[session_id]
        problem = acquire_problem(name, priority, name in session.holds or name in session.waits)
        if problem:
            self._fail(session_id, name, lp.FAIL_INVALID, problem)
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
            slot, lock = slot_lock(name)
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
                             f"ended holding {names_text(session.holds)}: kept for the next "
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
                group=group, leader=candidate, term=token,
                elected=bool(session and session == mine),
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
                    slot, lock = slot_lock(name)
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
                    slot, lock = slot_lock(name)
                    self._event(body.session_id, lost=lp.Lost(slot=slot, lock=lock,
                                                              reason=body.reason,
                                                              detail=body.detail))
                self._forget_if_empty_orphan(session)
