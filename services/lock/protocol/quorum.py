"""Quorum: the majority of the expected nodes, and the two-node rule (a lone node of two acts
alone while a reference IP answers, or while the witness's vote is its own, and a fence ran).

`QuorumRules` is a part of `Node` (node.py), kept apart because it is where a node decides
whether it may act at all; it reads the node's view, peers and timing and keeps the lone state.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .timing import MS, Timing

if TYPE_CHECKING:
    from .member import Member
    from .node import PeerInfo


class QuorumRules:
    """The quorum part of a `Node` (which sets these attributes in its __init__)."""

    domain: int
    timing: Timing
    view: set[int] | None
    peers: dict[int, PeerInfo]
    joined_ns: dict[int, int]
    member: Member
    log: list[str]
    expected_config: int
    expected_learned: int
    expected_version: int
    next_idle_ns: int
    lone_until: int
    lone_arbitrated: bool
    lone_possible: bool
    lone_by_witness: bool
    lone_since: int
    lone_failed: bool
    lone_rejoin_at: int | None
    lone_checked: int
    was_lone: bool

    def _save(self) -> None:
        raise NotImplementedError

    def _check_lease(self, now: int) -> None:
        raise NotImplementedError

    def expected(self) -> int:
        return self.expected_config or self.expected_learned

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
                how = "the witness's vote" if self.lone_arbitrated else "reference IP reachable"
                return f"two-node: {alone}, {how}"
            if self.lone_by_witness:
                return f"two-node: {alone}, no witness vote (or fence not done)"
            return f"two-node: {alone}, no reference IP reachable (or fence not done)"
        return f"majority: {expected // 2 + 1} of {expected} (members seen: {seen})"

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
