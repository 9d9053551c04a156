"""The heartbeat membership state machine: datagrams and time in, events and datagrams out.

No sockets, threads or clock (the memberlist / etcd-raft style): the transport feeds `receive`
with what a socket read, calls `tick` and `outgoing` when `next_wakeup_ns` comes, and sends what
`outgoing` returns. Every time is a monotonic clock reading in ns passed in by the caller, so a
test drives a whole cluster deterministically with a fake clock.

Model:
- Per peer and per path a link, up while datagrams arrive, down when its failure detector
  expires. A peer is a member while any of its links is up; losing one path changes nothing else.
- A peer becomes a member once one of its ANNOUNCE datagrams arrived (until then it cannot be
  named nor reached): heartbeats from an unknown peer make this node ask for it (`want_domain`).
- A higher incarnation of a member means it restarted: it leaves (RESTARTED) and the new life
  joins. A LEAVE ends the member at once (CLEAN); datagrams of that life are ignored afterwards.
- Every membership change bumps `view_id`.
- Datagrams that fail decoding, authentication or the replay check are counted in
  `stats.dropped` by reason and change nothing.
"""
from __future__ import annotations

import ipaddress
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import Enum
from collections.abc import Callable, Mapping

from skyge.services.common.keys import MIN_KEY_BYTES

from .detector import FailureDetector, FixedDetector
from .names import NameEvent, NamePublished, NameTable, NameWithdrawn, Publication, Scope
from .wire import (MAX_DOMAIN, MAX_INTERVAL_US, MAX_NETID, MAX_PATHS, MIN_INTERVAL_US, Announce,
                   Datagram, Kind, NodeInfo, PathInfo, ReplayGuard, WireError, decode, encode,
                   encode_announce_payloads)

__all__ = [
    "DEFAULT_ANNOUNCE_MIN_GAP_NS",
    "DEFAULT_ANNOUNCE_REFRESH_NS",
    "DEFAULT_DISCOVERY_INTERVAL_NS",
    "DEFAULT_MAX_RECEIVE_RATE_PER_S",
    "DEFAULT_MIN_INTERVAL_NS",
    "MIN_KEY_BYTES",
    "DomainConflict",
    "Event",
    "HeartbeatConfig",
    "HeartbeatCore",
    "LeaveReason",
    "LinkDown",
    "LinkState",
    "LinkUp",
    "Member",
    "MemberJoined",
    "MemberLeft",
    "NodeId",
    "PathConfig",
    "PathCounters",
    "Stats",
    "Timing",
]

MS = 1_000_000
SECOND = 1_000_000_000

# Send interval = max(min interval, links / max receive rate): every node receives at most
# that rate, whatever the cluster size. The trade-off: detection takes a few intervals, while CPU
# is ~25 µs per received datagram end to end (this core ~5 µs of it). A 3-node, 2-path cluster
# (4 links -> 6.7 ms) detects a crash in 20-27 ms with the fixed detector; 600 datagrams/s is
# ~1.5% of a core. At 64 nodes and 2 paths (126 links) the interval grows to 210 ms: the cost
# stays flat and detection slows to 0.6-0.84 s, instead of the CPU growing 40-fold.
DEFAULT_MIN_INTERVAL_NS = 5 * MS
# A node that hears no peer sends at this interval: nobody needs its fast heartbeats yet, and
# 64 nodes broadcasting every 5 ms to each other at once (a cluster power-on, a switch back from
# a reboot) is 1.6 million deliveries a second, more than a small machine's kernel can carry.
# A joining node is found within one such interval; its interval shrinks as soon as it hears one.
DEFAULT_DISCOVERY_INTERVAL_NS = 100 * MS
DEFAULT_MAX_RECEIVE_RATE_PER_S = 600
# Full re-announce period (only the first ANNOUNCE chunk: peers missing more ask with want).
DEFAULT_ANNOUNCE_REFRESH_NS = 1 * SECOND
# Full ANNOUNCEs are coalesced: 64 nodes discovering each other send a few, not 64 each.
DEFAULT_ANNOUNCE_MIN_GAP_NS = 50 * MS
# An interval may grow by at most this factor per heartbeat: a receiver that missed the one
# datagram announcing a longer interval still gets the next one before its timeout of
# several (old) intervals. Shrinking is immediate (it only makes receivers safer).
INTERVAL_GROWTH_PER_HEARTBEAT = 1.5
# The interval counts every link heard within this long, up or not. Counting only links that
# are up feeds a storm: when many nodes discover each other at once (a cluster power-on, a
# switch back from a reboot) receivers fall behind, links expire while their datagrams wait in
# the socket, every expiry shrinks the senders' intervals back to the minimum, and the load
# that caused the expiries grows. Measured on the 64-node lab: never converging in 30 s,
# versus ~2 s with this. The cost: after a peer fails, the interval shrinks this much later.
RECENT_LINK_NS = 10 * SECOND
LEAVE_COPIES = 2  # a LEAVE lost on every path would cost a full timeout; two copies make it rare
LOSS_WINDOW_DATAGRAMS = 256
RTT_WEIGHT = 1 / 8  # as TCP's SRTT
MAX_ECHO_HOLD_NS = 0xFFFF_FFFF  # u32 on the wire; a peer not heard for 4 s is not echoed


@dataclass(frozen=True)
class Timing:
    min_interval_ns: int = DEFAULT_MIN_INTERVAL_NS
    max_receive_rate_per_s: int = DEFAULT_MAX_RECEIVE_RATE_PER_S
    announce_refresh_ns: int = DEFAULT_ANNOUNCE_REFRESH_NS
    announce_min_gap_ns: int = DEFAULT_ANNOUNCE_MIN_GAP_NS
    detector: Callable[[], FailureDetector] = FixedDetector  # one new detector per link
    discovery_interval_ns: int = DEFAULT_DISCOVERY_INTERVAL_NS

    def __post_init__(self) -> None:
        low, high = MIN_INTERVAL_US * 1000, MAX_INTERVAL_US * 1000
        if not low <= self.min_interval_ns <= high:
            raise ValueError(f"min_interval_ns: must be {low}..{high}, got {self.min_interval_ns}")
        if not self.min_interval_ns <= self.discovery_interval_ns <= high:
            raise ValueError(f"discovery_interval_ns: must be {self.min_interval_ns}..{high}, "
                             f"got {self.discovery_interval_ns}")
        if self.max_receive_rate_per_s < 1:
            raise ValueError(f"max_receive_rate_per_s: must be >= 1, "
                             f"got {self.max_receive_rate_per_s}")
        if self.announce_refresh_ns < 1 or self.announce_min_gap_ns < 0:
            raise ValueError("announce_refresh_ns must be > 0 and announce_min_gap_ns >= 0")


@dataclass(frozen=True)
class PathConfig:
    nic: str
    addresses: tuple[str, ...] = ()  # this node's addresses on the path, announced to peers
    peers: tuple[str, ...] = ()  # static peer addresses (routed networks); empty: broadcast


@dataclass(frozen=True)
class HeartbeatConfig:
    netid: int
    domain: int
    paths: Mapping[int, PathConfig]
    key: bytes | None = None
    grpc_ports: Mapping[str, int] = field(default_factory=dict)
    timing: Timing = Timing()
    #: during a key rotation, the earlier key: accepted, never used to sign
    other_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.netid, int) or not 1 <= self.netid <= MAX_NETID:
            raise ValueError(f"netid: must be 1..{MAX_NETID}, got {self.netid!r}")
        if not isinstance(self.domain, int) or not 1 <= self.domain <= MAX_DOMAIN:
            raise ValueError(f"domain: must be 1..{MAX_DOMAIN}, got {self.domain!r}")
        if not self.paths:
            raise ValueError(f"paths: at least one path (1..{MAX_PATHS}) is needed")
        if self.key is not None and len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"key: must be at least {MIN_KEY_BYTES} bytes, got {len(self.key)}")
        for number, path in self.paths.items():
            try:
                [ipaddress.ip_address(peer) for peer in path.peers]
            except ValueError as error:
                raise ValueError(f"peers of path {number}: {error}") from None
        self.node_info()  # validates path numbers, NIC names, addresses and ports

    def node_info(self) -> NodeInfo:
        return NodeInfo(tuple(PathInfo(number, p.nic, p.addresses)
                              for number, p in sorted(self.paths.items())),
                        tuple(sorted(self.grpc_ports.items())))


class LeaveReason(Enum):
    FAILED = "failed"  # every link timed out
    CLEAN = "clean"  # it said LEAVE
    RESTARTED = "restarted"  # a newer incarnation of it appeared


@dataclass(frozen=True)
class NodeId:
    netid: int
    domain: int

    def __str__(self) -> str:
        return f"{self.netid}.{self.domain}"


@dataclass(frozen=True)
class Member:
    node: NodeId
    incarnation: int
    joined_at_ns: int
    info: NodeInfo  # NIC and addresses per path, gRPC ports
    local: bool = False


@dataclass(frozen=True)
class LinkState:
    local: NodeId
    peer: NodeId
    path: int
    local_nic: str
    peer_nic: str  # "" until the peer's ANNOUNCE arrived
    up: bool
    since_ns: int  # when it last went up or down
    rtt_ns: float | None
    loss_percent: float
    peer_address: str | None  # source address of the latest datagram
    received: int
    missed: int  # the peer's datagrams on this path that never arrived (sequence gaps)

    @property
    def name(self) -> str:
        return f"<{self.local}:{self.local_nic}-{self.peer}:{self.peer_nic}>"


@dataclass(frozen=True)
class LinkUp:
    at_ns: int
    link: LinkState

    @property
    def text(self) -> str:
        return f"Established link {self.link.name}"


@dataclass(frozen=True)
class LinkDown:
    at_ns: int
    link: LinkState
    reason: LeaveReason  # FAILED: this link timed out; otherwise why its member went

    @property
    def text(self) -> str:
        return f"Lost link {self.link.name}"


@dataclass(frozen=True)
class MemberJoined:
    at_ns: int
    member: Member
    view_id: int

    @property
    def text(self) -> str:
        return (f"Member <{self.member.node}> joined (incarnation {self.member.incarnation}), "
                f"view {self.view_id}")


@dataclass(frozen=True)
class MemberLeft:
    at_ns: int
    member: Member
    view_id: int
    reason: LeaveReason

    @property
    def text(self) -> str:
        return f"Member <{self.member.node}> left ({self.reason.value}), view {self.view_id}"


@dataclass(frozen=True)
class DomainConflict:
    """Another node sends with this node's netid and domain: a configuration error to fix."""

    at_ns: int
    path: int
    incarnation: int
    source: str | None

    @property
    def text(self) -> str:
        return (f"Domain conflict: another node (incarnation {self.incarnation}) uses this "
                f"node's domain, from {self.source} on path {self.path}")


Event = (LinkUp | LinkDown | MemberJoined | MemberLeft | DomainConflict | NamePublished
         | NameWithdrawn)


@dataclass
class PathCounters:
    received: int = 0  # accepted and dropped
    sent: int = 0  # one per destination
    received_bytes: int = 0
    sent_bytes: int = 0


@dataclass
class Stats:
    """Datagram counters. `dropped` reasons: wire.REASONS, plus `replayed` (replay guard or an
    older incarnation), `after_leave` (a life that said LEAVE), `path_mismatch` (read on
    another path's NIC), `looped_back` (our own broadcast), `domain_conflict`."""

    paths: dict[int, PathCounters]
    accepted: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class _Link:
    __slots__ = (
        "detector",
        "last_rx_at_ns",
        "last_rx_send_time_ns",
        "last_sequence",
        "loss_window",
        "missed",
        "path",
        "peer_address",
        "received",
        "rtt_ns",
        "since_ns",
        "up",
        "window_expected",
        "window_lost",
    )

    def __init__(self, path: int, now_ns: int) -> None:
        self.path = path
        self.up = False
        self.since_ns = now_ns
        self.last_sequence = 0
        self.last_rx_send_time_ns = 0
        self.last_rx_at_ns = 0
        self.rtt_ns: float | None = None
        self.received = self.missed = 0
        self.peer_address: str | None = None
        self.detector: FailureDetector
        self.loss_window: deque[int]
        self.window_expected = self.window_lost = 0

    def restart(self, detector: FailureDetector, now_ns: int) -> None:
        """Up again after being down: fresh detector and loss window (the outage is not loss)."""
        self.detector = detector
        self.up, self.since_ns = True, now_ns
        self.loss_window = deque()
        self.window_expected = self.window_lost = 0

    def count(self, lost: int) -> None:
        lost = min(lost, LOSS_WINDOW_DATAGRAMS)
        self.received += 1
        self.missed += lost
        self.loss_window.append(lost)
        self.window_expected += lost + 1
        self.window_lost += lost
        while self.window_expected > LOSS_WINDOW_DATAGRAMS and len(self.loss_window) > 1:
            dropped = self.loss_window.popleft()
            self.window_expected -= dropped + 1
            self.window_lost -= dropped

    def loss_percent(self) -> float:
        return 100.0 * self.window_lost / self.window_expected if self.window_expected else 0.0


class _Peer:
    __slots__ = (
        "chunk_count",
        "chunks",
        "chunks_version",
        "domain",
        "incarnation",
        "info",
        "joined_at_ns",
        "links",
    )

    def __init__(self, domain: int, incarnation: int) -> None:
        self.domain, self.incarnation = domain, incarnation
        self.info: NodeInfo | None = None  # None until its first ANNOUNCE: not a member yet
        self.joined_at_ns = 0
        self.links: dict[int, _Link] = {}
        self.chunks_version: int | None = None  # names version being assembled from chunks
        self.chunk_count = 0
        self.chunks: dict[int, tuple[Publication, ...]] = {}


class HeartbeatCore:
    """Membership of one node. See the module docstring for the model."""

    def __init__(self, config: HeartbeatConfig, incarnation: int, now_ns: int) -> None:
        self.config = config
        self.incarnation = incarnation
        self.local = NodeId(config.netid, config.domain)
        self.started_ns = now_ns
        self.view_id = 1  # the view of this node alone
        self.stats = Stats({number: PathCounters() for number in sorted(config.paths)})
        self.names = NameTable(config.netid, config.domain)
        self._key, self._other_key = config.key, config.other_key
        self._timing = config.timing
        self._info = config.node_info()
        self._paths = sorted(config.paths)
        self._destinations = {number: tuple(p.peers) or (None,)
                              for number, p in config.paths.items()}
        self._sequence = dict.fromkeys(self._paths, 0)
        self._peers: dict[int, _Peer] = {}
        self._guards: dict[tuple[int, int], ReplayGuard] = {}
        self._latest_incarnation: dict[int, int] = {}  # per domain, for the process's life
        self._clean_left: dict[int, int] = {}  # domain -> incarnation that said LEAVE
        self._conflicts_reported: set[int] = set()
        self._interval_ns = self._timing.min_interval_ns
        self._heard: dict[tuple[int, int], int] = {}  # (domain, path) -> last accepted, ns
        self._next_heartbeat_ns = now_ns
        self._earliest_deadline_ns: int | None = None  # never later than the true earliest
        self._announce_payloads = self._build_announce()
        self._full_announce_due_ns: int | None = now_ns
        self._last_full_announce_ns: int | None = None
        self._next_refresh_ns = now_ns + self._timing.announce_refresh_ns
        self._echo_turn = 0
        self._want_turn = 0
        self._left = False

    # ---- input

    def rekey(self, key: bytes | None, other_key: bytes | None = None) -> None:
        """Sign with *key* from now on and accept *other_key* too (a key rotation)."""
        self.config = replace(self.config, key=key, other_key=other_key)
        self._key, self._other_key = key, other_key

    def receive(self, path: int, data: bytes, src_addr: str | None, now_ns: int) -> list[Event]:
        """Handle one datagram read on `path`. Never raises for any `data`."""
        if path not in self._sequence:
            raise ValueError(f"path: {path} is not configured (configured: {self._paths})")
        counters = self.stats.paths[path]
        counters.received += 1
        counters.received_bytes += len(data)
        try:
            d = decode(data, self._key, self.config.netid, other_key=self._other_key)
        except WireError as error:
            return self._drop(error.reason)
        if d.path != path:  # NICs cabled to another path's network: refuse rather than mix
            return self._drop("path_mismatch")
        if d.domain == self.config.domain:
            return self._own_domain(d, src_addr, now_ns)
        guard = self._guards.get((d.domain, path))
        if guard is None:
            guard = self._guards[(d.domain, path)] = ReplayGuard()
        if not guard.accept(d.incarnation, d.sequence):
            return self._drop("replayed")
        latest = self._latest_incarnation.get(d.domain, 0)
        if d.incarnation < latest:  # an older life, replayed (or very late) on another path
            return self._drop("replayed")
        self._latest_incarnation[d.domain] = d.incarnation
        if self._clean_left.get(d.domain) == d.incarnation:
            return self._drop("after_leave")
        self.stats.accepted += 1

        events: list[Event] = []
        peer = self._peers.get(d.domain)
        if peer is not None and d.incarnation > peer.incarnation:
            events += self._remove_peer(peer, now_ns, LeaveReason.RESTARTED)
            peer = None
        if d.kind is Kind.LEAVE:
            self._clean_left[d.domain] = d.incarnation
            for number in self._paths:  # gone on purpose: it no longer counts for the interval
                self._heard.pop((d.domain, number), None)
            if peer is not None:
                events += self._remove_peer(peer, now_ns, LeaveReason.CLEAN)
            return events
        if peer is None:
            peer = self._peers[d.domain] = _Peer(d.domain, d.incarnation)
            self._request_full_announce(now_ns)  # it needs our addresses and names too

        link = peer.links.get(path)
        if link is None:
            link = peer.links[path] = _Link(path, now_ns)
        self._heard[(d.domain, path)] = now_ns
        was_up = link.up
        self._arrival(link, d, src_addr, now_ns)
        if d.want_domain == self.config.domain:
            self._request_full_announce(now_ns)
        name_events: list[NameEvent] = []
        was_member = peer.info is not None
        if d.announce is not None:
            peer.info = d.announce.node
            name_events = self._apply_names(peer, d.announce, now_ns)
        if peer.info is None:
            return events
        if not was_member:  # nameable at last: its links are established, then it joins
            events += [LinkUp(now_ns, self._link_state(peer, other))
                       for other in peer.links.values() if other.up]
            peer.joined_at_ns = now_ns
            self.view_id += 1
            events.append(MemberJoined(now_ns, self._member(peer), self.view_id))
        elif not was_up:
            events.append(LinkUp(now_ns, self._link_state(peer, link)))
        return events + name_events

    def tick(self, now_ns: int) -> list[Event]:
        """Expire links whose detector ran out; a peer with no link left is a failed member.

        Walks every link: call it when `next_wakeup_ns` has come, not after every datagram."""
        events: list[Event] = []
        earliest: int | None = None
        for peer in list(self._peers.values()):
            for link in peer.links.values():
                if not link.up:
                    continue
                if link.detector.is_down(now_ns):
                    link.up, link.since_ns = False, now_ns
                    if peer.info is not None:
                        events.append(LinkDown(now_ns, self._link_state(peer, link),
                                               LeaveReason.FAILED))
                else:
                    deadline = link.detector.deadline()
                    if deadline is not None and (earliest is None or deadline < earliest):
                        earliest = deadline
            if not any(link.up for link in peer.links.values()):
                events += self._remove_peer(peer, now_ns, LeaveReason.FAILED)
        self._earliest_deadline_ns = earliest
        return events

    # ---- output

    def outgoing(self, now_ns: int) -> list[tuple[int, str | None, bytes]]:
        """Datagrams due now as (path, destination or None for broadcast, bytes)."""
        if self._left:
            return []
        out: list[tuple[int, str | None, bytes]] = []
        full = self._full_announce_due_ns is not None and now_ns >= self._full_announce_due_ns
        if full or now_ns >= self._next_refresh_ns:
            payloads = self._announce_payloads if full else self._announce_payloads[:1]
            for path in self._paths:
                for payload in payloads:
                    out += self._datagrams(path, Kind.ANNOUNCE, now_ns, payload)
            if full:
                self._full_announce_due_ns, self._last_full_announce_ns = None, now_ns
            self._next_refresh_ns = now_ns + self._timing.announce_refresh_ns
        if now_ns >= self._next_heartbeat_ns:
            self._adapt_interval(now_ns)
            want = self._pick_wanted()
            for path in self._paths:
                echo_domain, echo_send_ns, hold_ns = self._pick_echo(path, now_ns)
                out += self._datagrams(path, Kind.HEARTBEAT, now_ns, b"", echo_domain,
                                       echo_send_ns, hold_ns, want)
            self._next_heartbeat_ns = now_ns + self._interval_ns
        return out

    def next_wakeup_ns(self) -> int:
        """When `tick` and `outgoing` must run next (earlier if a datagram arrives)."""
        times = [self._next_heartbeat_ns, self._next_refresh_ns]
        if self._full_announce_due_ns is not None:
            times.append(self._full_announce_due_ns)
        if self._earliest_deadline_ns is not None:
            times.append(self._earliest_deadline_ns)
        return min(times)

    def leave(self, now_ns: int) -> list[tuple[int, str | None, bytes]]:
        """LEAVE datagrams for a clean stop; after this `outgoing` sends nothing."""
        out: list[tuple[int, str | None, bytes]] = []
        for _ in range(LEAVE_COPIES):
            for path in self._paths:
                out += self._datagrams(path, Kind.LEAVE, now_ns)
        self._left = True
        return out

    # ---- names

    def publish(self, type_: int, lower: int, upper: int, scope: int, value: bytes, *,
                now_ns: int, unix_ns: int) -> tuple[Publication, list[Event]]:
        """Raises names.NameTableError (naming the field) for invalid input (`scope` is
        checked: a Scope value) or a full table."""
        publication, events = self.names.publish(type_, lower, upper, scope, value,
                                                 now_ns=now_ns, unix_ns=unix_ns)
        if publication.scope is Scope.CLUSTER:
            self._names_changed(now_ns)
        return publication, list(events)

    def withdraw(self, publication_id: int, *, now_ns: int) -> tuple[Publication, list[Event]]:
        """The publication withdrawn and the events; NameTableError when there is none."""
        events = self.names.withdraw(publication_id, now_ns=now_ns)
        publication = events[0].publication
        if publication.scope is Scope.CLUSTER:
            self._names_changed(now_ns)
        return publication, list(events)

    # ---- queries

    def members(self) -> list[Member]:
        """The view: every member, this node included, by domain."""
        members = [self._member(p) for p in self._peers.values() if p.info is not None]
        members.append(Member(self.local, self.incarnation, self.started_ns, self._info, True))
        return sorted(members, key=lambda m: m.node.domain)

    def links(self) -> list[LinkState]:
        """Every link to a peer heard from (a failed or departed peer's links go with it)."""
        return [self._link_state(peer, link) for _, peer in sorted(self._peers.items())
                for _, link in sorted(peer.links.items())]

    @property
    def interval_ns(self) -> int:
        """The current heartbeat interval, as announced to peers."""
        return self._interval_ns

    # ---- internals

    def _drop(self, reason: str) -> list[Event]:
        self.stats.dropped[reason] += 1
        return []

    def _own_domain(self, d: Datagram, src_addr: str | None, now_ns: int) -> list[Event]:
        if d.incarnation == self.incarnation:
            return self._drop("looped_back")  # our own broadcast, seen by our own socket
        self._drop("domain_conflict")
        if d.incarnation in self._conflicts_reported:
            return []
        self._conflicts_reported.add(d.incarnation)
        return [DomainConflict(now_ns, d.path, d.incarnation, src_addr)]

    def _arrival(self, link: _Link, d: Datagram, src_addr: str | None, now_ns: int) -> None:
        if link.up:
            lost = max(d.sequence - link.last_sequence - 1, 0)
        else:
            link.restart(self._timing.detector(), now_ns)
            lost = 0
        link.count(lost)
        link.last_sequence = max(link.last_sequence, d.sequence)
        link.detector.arrival(now_ns, d.interval_ns, lost)
        deadline = link.detector.deadline()
        if deadline is not None and (self._earliest_deadline_ns is None
                                     or deadline < self._earliest_deadline_ns):
            self._earliest_deadline_ns = deadline
        link.last_rx_send_time_ns, link.last_rx_at_ns = d.send_time_ns, now_ns
        link.peer_address = src_addr
        if d.echo_domain == self.config.domain and d.echo_send_time_ns >= self.started_ns:
            rtt = now_ns - d.echo_send_time_ns - d.echo_hold_ns
            if rtt >= 0:
                link.rtt_ns = rtt if link.rtt_ns is None else \
                    link.rtt_ns + RTT_WEIGHT * (rtt - link.rtt_ns)

    def _apply_names(self, peer: _Peer, announce: Announce, now_ns: int) -> list[NameEvent]:
        """Assemble a peer's name set from ANNOUNCE chunks; apply it once complete."""
        publisher = (self.config.netid, peer.domain)
        held = self.names.peer_version(publisher)
        version = announce.names_version
        if held is not None and version <= held:
            return []
        if peer.chunks_version != version:
            if peer.chunks_version is not None and version < peer.chunks_version:
                return []
            peer.chunks_version, peer.chunk_count, peer.chunks = version, announce.chunk_count, {}
        if announce.chunk_count != peer.chunk_count:
            return []  # same version must chunk the same: ignore the inconsistent one
        peer.chunks[announce.chunk_index] = announce.publications
        if len(peer.chunks) < peer.chunk_count:
            return []
        publications = [p for index in range(peer.chunk_count) for p in peer.chunks[index]]
        peer.chunks_version, peer.chunks = None, {}
        return self.names.apply_peer(publisher, version, publications, now_ns=now_ns)

    def _remove_peer(self, peer: _Peer, now_ns: int, reason: LeaveReason) -> list[Event]:
        del self._peers[peer.domain]
        events: list[Event] = []
        if peer.info is not None:
            for link in peer.links.values():
                if link.up:
                    link.up, link.since_ns = False, now_ns
                    events.append(LinkDown(now_ns, self._link_state(peer, link), reason))
            self.view_id += 1
            events.append(MemberLeft(now_ns, self._member(peer), self.view_id, reason))
        events += self.names.drop_peer((self.config.netid, peer.domain), now_ns=now_ns)
        return events

    def _member(self, peer: _Peer) -> Member:
        assert peer.info is not None
        return Member(NodeId(self.config.netid, peer.domain), peer.incarnation,
                      peer.joined_at_ns, peer.info)

    def _link_state(self, peer: _Peer, link: _Link) -> LinkState:
        peer_nic = peer.info.nic(link.path) if peer.info is not None else None
        return LinkState(self.local, NodeId(self.config.netid, peer.domain), link.path,
                         self.config.paths[link.path].nic, peer_nic or "", link.up,
                         link.since_ns, link.rtt_ns, link.loss_percent(), link.peer_address,
                         link.received, link.missed)

    def _request_full_announce(self, now_ns: int) -> None:
        earliest = now_ns if self._last_full_announce_ns is None else max(
            now_ns, self._last_full_announce_ns + self._timing.announce_min_gap_ns)
        if self._full_announce_due_ns is None or earliest < self._full_announce_due_ns:
            self._full_announce_due_ns = earliest

    def _names_changed(self, now_ns: int) -> None:
        self._announce_payloads = self._build_announce()
        self._request_full_announce(now_ns)

    def _build_announce(self) -> list[bytes]:
        return encode_announce_payloads(self._info, self.names.version,
                                        self.names.cluster_publications())

    def _adapt_interval(self, now_ns: int) -> None:
        horizon = now_ns - RECENT_LINK_NS
        for key in [key for key, heard_ns in self._heard.items() if heard_ns < horizon]:
            del self._heard[key]
        if self._heard:
            target = max(self._timing.min_interval_ns,
                         math.ceil(len(self._heard) * SECOND / self._timing.max_receive_rate_per_s))
        else:
            target = self._timing.discovery_interval_ns
        target = min(target, MAX_INTERVAL_US * 1000)
        self._interval_ns = min(target, int(self._interval_ns * INTERVAL_GROWTH_PER_HEARTBEAT))

    def _pick_echo(self, path: int, now_ns: int) -> tuple[int, int, int]:
        """Echo one peer per heartbeat, round robin, so every peer gets RTT samples."""
        candidates = [domain for domain, peer in sorted(self._peers.items())
                      if (link := peer.links.get(path)) is not None and link.up
                      and now_ns - link.last_rx_at_ns <= MAX_ECHO_HOLD_NS]
        if not candidates:
            return 0, 0, 0
        domain = candidates[self._echo_turn % len(candidates)]
        if path == self._paths[-1]:
            self._echo_turn += 1
        link = self._peers[domain].links[path]
        return domain, link.last_rx_send_time_ns, now_ns - link.last_rx_at_ns

    def _pick_wanted(self) -> int:
        """A peer whose ANNOUNCE (node info or a complete name set) is missing, round robin."""
        publisher_netid = self.config.netid
        wanted = [domain for domain, peer in sorted(self._peers.items())
                  if peer.info is None or peer.chunks_version is not None
                  or self.names.peer_version((publisher_netid, domain)) is None]
        if not wanted:
            return 0
        self._want_turn += 1
        return wanted[self._want_turn % len(wanted)]

    def _datagrams(self, path: int, kind: Kind, now_ns: int, payload: bytes = b"",
                   echo_domain: int = 0, echo_send_time_ns: int = 0, echo_hold_ns: int = 0,
                   want_domain: int = 0) -> list[tuple[int, str | None, bytes]]:
        self._sequence[path] += 1
        data = encode(kind, self.config.netid, self.config.domain, path, self.incarnation,
                      self._sequence[path], now_ns, self._interval_ns, self._key, payload,
                      echo_domain, echo_send_time_ns, echo_hold_ns, want_domain)
        destinations = self._destinations[path]
        counters = self.stats.paths[path]
        counters.sent += len(destinations)
        counters.sent_bytes += len(data) * len(destinations)
        return [(path, destination, data) for destination in destinations]
