"""One lock daemon's protocol state: membership view and quorum (the two-node rule included),
votes and leases (the election), and the member and authority sides it drives."""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

from .authority import Authority
from .member import Member
from .quorum import QuorumRules
from .store import MemoryStore, Store
from .table import Name, sort_key
from .timing import MS, US, Timing



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
    #: the authority said it heard this peer at about this time (its `live_bits`, backdated by
    #: a peer beat): members following an authority do not beat each other
    relayed_ns: int = -1
    left: bool = False  # this instance stopped cleanly (its last beat said `leaving`)

    @property
    def last_word_ns(self) -> int:
        """When it was last heard of, directly or through the relay (-1: never)."""
        return max(self.heard_ns, self.relayed_ns)


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



@dataclass
class Outputs:
    """What a node produced since it was last asked (`Node.take_outputs`), for the daemon (or
    the simulator) to act on in one go. Datagrams are not in it: `Links` drains `out_beats` and
    `out_data` itself, with retransmission."""

    events: list[tuple[int, lp.SessionEvent]]  # (session, event)
    leader_events: list[tuple[int, lp.LeaderEvent]]  # (watcher, event)
    fence_requests: list[int]  # nodes to fence (the daemon runs the command)
    log: list[str]  # notable transitions, for the daemon's log


class Node(QuorumRules):
    """One lock daemon: election, authority (when established) and member side; the quorum
    and the two-node rule are `QuorumRules`."""

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
        self.next_peer_beat_ns = 0  # idle beats go to every peer from then on (else: `_close`)
        #: receipt of the last `live_bits` from the authority this node follows, and those
        #: bits: while recent, its idle beats go to `_close` peers, and every peer beat to the
        #: peers the authority does not vouch for (it may not hear them, nor they it: this
        #: node's beats keep them from campaigning alone)
        self.relay_ns = -1
        self.relay_bits = 0
        #: peers this instance has sent a beat to: the first idle beat goes to each directly,
        #: whatever the relay (a relay cannot say a peer restarted, nor undo its `leaving`)
        self.greeted: set[int] = set()
        #: when this node last answered each peer's established round (the answer, on every
        #: path, stands in for the idle beat to that peer)
        self.answered_ns: dict[int, int] = {}
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
        self.lone_possible = False  # reference IPs or a witness are configured (the daemon)
        self.lone_by_witness = False  # a witness decides, not a reference IP (the daemon)
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

    def _peer(self, domain: int) -> PeerInfo:
        peer = self.peers.get(domain)
        if peer is None:
            peer = self.peers[domain] = PeerInfo()
        return peer

    def _fresh(self, domain: int, now: int) -> bool:
        """Heard from lately, directly or through the authority's `live_bits`: within switch_ns,
        or for a peer whose last beat said it runs, within candidate_silence_ns (a candidate
        beats every beat_ns, so a few missed rounds mean it stalled or died; an established
        authority every authority_beat_ns, so its silence is counted in those)."""
        peer = self.peers.get(domain)
        if peer is None or peer.left:
            return False
        timing = self.timing
        if peer.relayed_ns > peer.candidate_ns and now - peer.relayed_ns < timing.switch_ns:
            return True
        if peer.heard_ns < 0 or now - peer.heard_ns >= timing.switch_ns:
            return False
        if peer.candidate_term:
            silence = (timing.authority_silence_ns if peer.established_ns == peer.candidate_ns
                       else timing.candidate_silence_ns)
            return now - peer.candidate_ns < silence
        return True

    def _knows_membership(self, domain: int) -> bool:
        """The peer's last word (its beat, or the authority's relay if later) says its view is
        known (a node whose view is unknown does not campaign)."""
        peer = self.peers[domain]
        return peer.relayed_ns > peer.heard_ns or bool(peer.view_bits >> (domain - 1) & 1)

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

    def _live_bits(self, now: int) -> int:
        """The authority's relay (`Beat.live_bits`): peers heard within a peer beat that know
        their membership and do not run for authority."""
        bits = 0
        for domain, peer in self.peers.items():
            if 1 <= domain <= 64 and not peer.left and not peer.candidate_term and \
                    peer.heard_ns >= 0 and now - peer.heard_ns < self.timing.peer_beat_ns and \
                    peer.view_bits >> (domain - 1) & 1:
                bits |= 1 << (domain - 1)
        return bits

    def _take_relay(self, authority: int, bits: int, now: int) -> None:
        """The authority's `live_bits`: each peer in it counts as heard a peer beat ago."""
        self.relay_ns, self.relay_bits = now, bits
        at = now - self.timing.peer_beat_ns
        while bits:
            low = bits & -bits
            bits ^= low
            domain = low.bit_length()
            if domain not in (self.domain, authority):
                peer = self._peer(domain)
                peer.relayed_ns = max(peer.relayed_ns, at)

    def send_info_beat(self, to: int, now: int) -> None:
        """An immediate beat that needs no answer (after a report, a first confirmation)."""
        self.out_beats.append((to, self._beat(to, self._next_seq(now), now), False))

    def _close(self, now: int) -> set[int]:
        """Peers an idle beat goes to every time: the authority (its beats confirm this node's
        hold lease), whom this node votes for or promised, and every candidate (whose rounds
        this node answers anyway)."""
        close = {self.member.authority, self.vote_for, self.promise_to}
        close |= {d for d, peer in self.peers.items() if peer.candidate_term and
                  self._fresh(d, now)}
        return close

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
        live = self._live_bits(now) if self.established else 0
        for to in self._targets(now):
            beat = self._beat(to, seq, now)
            beat.round = True
            if beat.established:
                beat.live_bits = live
            self.out_beats.append((to, beat, True))
            self.greeted.add(to)
        self.next_round_ns = now + (self.timing.authority_beat_ns if self.established
                                    else self.timing.beat_ns)
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
                    member.extend(sent + self.timing.hold_lease_counted_ns
                                  - self.timing.early_ns, now)
            if beat.live_bits:
                self._take_relay(frm, beat.live_bits, now)
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
        if (self.vote_for == frm
                and (self.promise_to in (0, frm) or now >= self.promise_end)
                and (beat.established or term > self.highest_term
                     or (term == self.highest_term and self.highest_owner == frm))):
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
        # an established authority's round comes every authority beat: the answer (on every
        # path, which it also tells) is this node's beat to it
        self.out_beats.append((frm, reply, beat.established))
        self.greeted.add(frm)
        if beat.established:
            self.answered_ns[frm] = now

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
        next_token = max(floors) + 1
        if self.expected() == 2 and not round_.votes:
            # the two-node rule: the other node may have granted alone too, above any floor this
            # node knows. A lone term starts above the µs clock and uses far fewer tokens than
            # µs, so starting above the clock now keeps tokens rising (clocks set by NTP agree
            # far better than the switch time that parts two lone terms)
            next_token = max(next_token, self.wall_ns() // US)
        self.auth = Authority(self, term, now, next_token, prev if prev_term else 0,
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
                                       self._knows_membership(d)})

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
            self.greeted.clear()  # tell every peer at once that it runs no more, relay or not
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
            idle = self.timing.idle_beat_ns
            relayed = self.relay_ns >= 0 and now - self.relay_ns < self.timing.peer_beat_ns
            vouched = self.relay_bits if relayed else 0
            peer_beat = now >= self.next_peer_beat_ns
            if peer_beat:
                self.next_peer_beat_ns = now + self.timing.peer_beat_ns
            close = self._close(now)
            for to in self._targets(now):
                due = (to in close or to not in self.greeted or
                       (peer_beat and not vouched >> (to - 1) & 1))
                if due and now - self.answered_ns.get(to, -idle) >= idle:
                    self.out_beats.append((to, self._beat(to, seq, now), True))
                    self.greeted.add(to)
            self.next_idle_ns = now + idle
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
        lowest domain of the view fences it; it is the next candidate). Only from a side with a
        quorum; never the two-node rule's peer (the daemon's lone check fences that one)."""
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

    def take_outputs(self) -> Outputs:
        """Everything produced since the last call; the node starts afresh."""
        taken = Outputs(self.events, self.leader_events, self.fence_requests, self.log)
        self.events, self.leader_events, self.fence_requests, self.log = [], [], [], []
        return taken

    def next_wakeup(self) -> int:
        return self._wake if self._wake is not None else self.last_now + self.timing.beat_ns

    # -- a clean stop -----------------------------------------------------------------------------
    def stop_sessions(self, now: int) -> bool:
        """First step of a clean stop: every session loses what it holds and awaits (told at
        once) and no acquire is taken any more. Returns whether a lock was held: then the daemon
        waits `leave_warning_ns` before `leave`, so its sessions are told at least that long
        before the locks can pass on, as on a lease end."""
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
        elif (kind in ("acquire", "release", "end_session", "report", "watch")
              and self.auth is not None):
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
