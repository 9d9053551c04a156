"""Following the cluster membership from the local heartbeat daemon, and reaching peers'
daemons.

The bus, lock and HA daemons learn who is up, and where each peer's daemons listen, from one
stream: the local heartbeat daemon's WatchMembership (a snapshot, then events). `MembershipFollower`
keeps that view current and calls listeners on changes; `PeerChannels` opens gRPC channels to a
peer's daemon over every heartbeat path, up paths first, so a call rides whichever path works.

When the local heartbeat daemon is unreachable the view is *unknown*, not empty: `known` is False
and listeners get `on_lost()`, so a daemon can act conservatively (the lock daemon stops granting)
instead of believing every peer died.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Protocol
from collections.abc import Awaitable, Callable

import grpc

from skyge.services.common.paths import NodePaths
from skyge.services.common.tls import Credentials, channel_factory
from skyge.v1 import heartbeat_pb2, heartbeat_pb2_grpc

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
#: gRPC options of the channels to peers' daemons: reconnect fast after a peer restarts
PEER_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
)

logger = logging.getLogger("skyge.membership")


@dataclass
class Peer:
    """One member as the other daemons need it: id, incarnation, addresses per path, ports."""

    domain: int
    incarnation: int
    local: bool
    addresses: dict[int, list[str]]  # path -> addresses
    up_paths: set[int]
    grpc_ports: dict[str, int]

    @classmethod
    def from_proto(cls, member: heartbeat_pb2.Member) -> Peer:
        return cls(domain=member.node.domain, incarnation=member.incarnation, local=member.local,
                   addresses={p.path: list(p.addresses) for p in member.paths},
                   up_paths={p.path for p in member.paths if p.up or member.local},
                   grpc_ports=dict(member.grpc_ports))


class MembershipListener(Protocol):
    def on_view(self, follower: MembershipFollower) -> Awaitable[None] | None:
        """The view changed (or was first learned): read `follower.peers` / `view_id`."""

    def on_lost(self, follower: MembershipFollower) -> Awaitable[None] | None:
        """The local heartbeat daemon is unreachable: the view is unknown until `on_view`."""


@dataclass
class MembershipFollower:
    """Keeps `peers` (domain -> Peer) in step with the local heartbeat daemon."""

    paths: NodePaths
    listeners: list[MembershipListener] = field(default_factory=list)
    peers: dict[int, Peer] = field(default_factory=dict)
    view_id: int = 0
    known: bool = False
    local_domain: int = 0
    _task: asyncio.Task | None = field(default=None, init=False, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="membership-follower")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_known(self, timeout_s: float) -> bool:
        """Wait until a view is known (the heartbeat daemon answered); False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.known:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return self.known
        return True

    async def _notify(self, method: str) -> None:
        """Call `method` on every listener; `on_link` (a link went up or down, membership
        unchanged: `peers[d].up_paths` changed) only on listeners that define it."""
        self._changed.set()
        for listener in list(self.listeners):
            if not hasattr(listener, method):
                continue
            try:
                result = getattr(listener, method)(self)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("membership listener %r failed in %s", listener, method)

    def _apply(self, event: heartbeat_pb2.MembershipEvent) -> bool:
        kind = event.WhichOneof("event")
        if kind == "snapshot":
            self.peers = {m.node.domain: Peer.from_proto(m) for m in event.snapshot.members}
            self.local_domain = next((d for d, p in self.peers.items() if p.local), 0)
        elif kind == "joined":
            self.peers[event.joined.node.domain] = Peer.from_proto(event.joined)
        elif kind == "left":
            self.peers.pop(event.left.member.node.domain, None)
        elif kind == "link_changed":
            link = event.link_changed
            peer = self.peers.get(link.peer_domain)
            if peer is None:
                return False
            if link.state == heartbeat_pb2.LINK_UP:
                peer.up_paths.add(link.path)
            else:
                peer.up_paths.discard(link.path)
            return False  # a path change is no membership change
        else:
            return False
        self.view_id = event.view_id
        return True

    async def _follow(self) -> None:
        delay = RECONNECT_MIN_S
        target = f"unix:{self.paths.socket('heartbeat')}"
        while True:
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    stub = heartbeat_pb2_grpc.HeartbeatStub(channel)
                    async for event in stub.WatchMembership(heartbeat_pb2.WatchMembershipRequest()):
                        if self._apply(event):
                            self.known = True
                            delay = RECONNECT_MIN_S
                            await self._notify("on_view")
                        elif event.WhichOneof("event") == "link_changed":
                            await self._notify("on_link")
            except grpc.aio.AioRpcError as error:
                logger.debug("membership stream: %s", error.code().name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("membership stream failed")
            if self.known:
                self.known = False
                logger.warning("local heartbeat daemon unreachable: membership unknown")
                await self._notify("on_lost")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)


class PeerChannels:
    """gRPC channels to peers' daemons: one per peer per heartbeat path.

    `channel(domain)` gives the channel of the peer's first up path (lowest path number first),
    so new calls follow the paths that work. A path's channel is kept while its path is up, even
    when another path becomes preferred, so calls in flight on a healthy path are not disturbed;
    `prune()` (also done by `channel()`) closes the channels of paths that went down, or of peers
    that left, cancelling their calls: over a dead path they would hang until TCP gave up.
    Channels use TLS with the node's certificate when it has one (see `tls`).
    """

    def __init__(self, follower: MembershipFollower, daemon: str,
                 tls: Credentials | None = None, *,
                 make_channel: Callable[[str], grpc.aio.Channel] | None = None) -> None:
        self._follower, self._daemon = follower, daemon
        self._make = make_channel or channel_factory(tls, PEER_CHANNEL_OPTIONS)
        self._channels: dict[tuple[int, int], tuple[str, grpc.aio.Channel]] = {}
        self._closing: set[asyncio.Task[None]] = set()  # channels being closed (see `_drop`)

    def _targets(self, peer: Peer) -> dict[int, str]:
        """path -> target of the peer's daemon on that path (IPv4 addresses only)."""
        port = peer.grpc_ports.get(self._daemon)
        if not port:
            return {}
        found = {}
        for path, addresses in peer.addresses.items():
            hosts = [a for a in addresses if ":" not in a]
            if hosts:
                found[path] = f"ipv4:{','.join(f'{h}:{port}' for h in hosts)}"
        return found

    def channel(self, domain: int) -> grpc.aio.Channel | None:
        """A channel to `domain`'s daemon, or None when that domain is not a member (or announces
        no address for the daemon)."""
        self.prune(domain)
        peer = self._follower.peers.get(domain)
        if peer is None:
            return None
        targets = self._targets(peer)
        if not targets:
            return None
        path = min(targets, key=lambda p: (p not in peer.up_paths, p))
        cached = self._channels.get((domain, path))
        if cached and cached[0] == targets[path]:
            return cached[1]
        if cached:
            self._drop(cached[1])
        channel = self._make(targets[path])
        self._channels[(domain, path)] = (targets[path], channel)
        return channel

    def prune(self, domain: int | None = None) -> int:
        """Close channels whose path is down (while another is up), whose address changed, or
        whose peer left; for one domain or all. Returns how many were closed."""
        closed = 0
        for key in list(self._channels):
            peer_domain, path = key
            if domain is not None and peer_domain != domain:
                continue
            peer = self._follower.peers.get(peer_domain)
            target, channel = self._channels[key]
            stale = (peer is None or self._targets(peer).get(path) != target
                     or (path not in peer.up_paths and bool(peer.up_paths)))
            if stale:
                del self._channels[key]
                self._drop(channel)
                closed += 1
        return closed

    def _drop(self, channel: grpc.aio.Channel) -> None:
        """Close `channel` in the background (its calls end CANCELLED); `close` waits for it."""
        task = asyncio.create_task(channel.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
