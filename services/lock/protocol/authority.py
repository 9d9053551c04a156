"""The authority side of a lock daemon: the grants of one term, the table rebuilt from the
members' reports, the members' hold leases, fencing of lost members."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

from .names import name_of, name_proto, names_text
from .table import Entry, Grant, LockTable, Name
from .timing import US

if TYPE_CHECKING:
    from .node import Node



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

    def __init__(self, node: Node, term: int, now: int, next_token: int, prev_authority: int,
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
        self._serve(now)

    def _serve(self, now: int) -> None:
        """Granting (again): tokens up to the confirmed floor, every free lock with waiters
        served, then the requests buffered meanwhile."""
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
                self._fence(domain, f"its lease ran out while it held {names_text(held)}")
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
        """Lock daemons this node has heard of (directly, or through the previous authority's
        relay: members do not beat each other) and the previous authority, that neither
        reported nor were fenced since: they may hold locks granted by an earlier authority.
        Returns those to fence, and when one still alive (in the membership view, heard of
        within `switch_ns` and not stopped: its report is on the way) should be checked again."""
        node = self.node
        timing = node.timing
        heard = {d for d, peer in node.peers.items() if peer.last_word_ns >= 0}
        if self.prev_authority:
            heard.add(self.prev_authority)
        lost: list[int] = []
        check_at: int | None = None
        for domain in sorted(heard - self._accounted() - node.fenced - {node.domain}):
            peer = node.peers.get(domain)
            if peer is not None and peer.last_word_ns >= 0 and not peer.left and \
                    domain in (node.view or ()) and now - peer.last_word_ns < timing.switch_ns:
                silent_at = peer.last_word_ns + timing.switch_ns
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
        return (f"locks {names_text(self.table.names_held_by_node(domain))} (held by node "
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
        self._serve(now)
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
