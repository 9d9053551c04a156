"""The Heartbeat gRPC servicer: proto <-> core, nothing else.

Every call copies what it needs from the core under the app's lock (held for microseconds: the
heartbeat thread waits on it) and builds the reply outside it. Bad fields answer INVALID_ARGUMENT
naming the field and its range; a full name table RESOURCE_EXHAUSTED; an unknown publication id
NOT_FOUND. Watch streams start with a snapshot taken atomically with their registration (see
`HeartbeatHost.watch`), then carry every event after it, with no gap and no repeat.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc

from skyge import __version__
from skyge.services.common.runner import DaemonContext
from skyge.v1 import common_pb2, heartbeat_pb2 as pb, heartbeat_pb2_grpc

from .core import (Event, HeartbeatCore, LeaveReason, LinkDown, LinkState, LinkUp, Member,
                   MemberJoined, MemberLeft)
from .names import NamePublished, NameTableError, NameTableFull, NameWithdrawn, Publication, Scope
from .nics import NicInfo, nic_up
from .transport import UdpTransport

__all__ = ["Emitted", "HeartbeatHost", "HeartbeatServicer", "Watcher"]

U32_MAX = 0xFFFF_FFFF
#: events a watch stream may have queued before the client is judged too slow (RESOURCE_EXHAUSTED)
WATCH_QUEUE_EVENTS = 4096
_LEAVE_REASONS = {LeaveReason.CLEAN: pb.LEAVE_CLEAN, LeaveReason.FAILED: pb.LEAVE_FAILED,
                  LeaveReason.RESTARTED: pb.LEAVE_RESTARTED}
_SCOPES = {Scope.NODE: common_pb2.SCOPE_NODE, Scope.CLUSTER: common_pb2.SCOPE_CLUSTER}

T = TypeVar("T")


@dataclass(frozen=True)
class Emitted:
    """An event as the watchers get it: numbered, stamped with Unix time and the view id."""

    seq: int
    event: Event
    unix_ns: int
    view_id: int
    paths_up: frozenset[int] = frozenset()  # for MemberJoined: the member's paths up


def _watch_queue() -> asyncio.Queue[Emitted | None]:
    return asyncio.Queue(WATCH_QUEUE_EVENTS)


@dataclass(eq=False)  # identity: watchers live in a set
class Watcher:
    """One watch stream: events numbered above `after_seq` go to its queue; None ends it."""

    kind: str  # "membership" or "names"
    after_seq: int
    type_filter: int | None = None
    queue: asyncio.Queue[Emitted | None] = field(default_factory=_watch_queue)
    overflowed: bool = False


class HeartbeatHost(Protocol):
    """What the servicer uses of the daemon (`daemon.HeartbeatApp`): the core and the lock
    shared with the heartbeat thread, this node's facts, and the watch streams' registry."""

    @property
    def ctx(self) -> DaemonContext: ...
    @property
    def core(self) -> HeartbeatCore: ...
    @property
    def lock(self) -> threading.Lock: ...
    @property
    def nics(self) -> Mapping[int, NicInfo]: ...
    @property
    def transport(self) -> UdpTransport: ...
    @property
    def started_unix_ns(self) -> int: ...

    def unix_ns(self, monotonic_ns: int) -> int:
        """A monotonic time as Unix time."""
        ...

    def watch(self, kind: str, snapshot: Callable[[], T],
              type_filter: int | None = None) -> tuple[Watcher, T]:
        """Register a watcher and take its snapshot atomically (nothing missed, nothing twice)."""
        ...

    def unwatch(self, watcher: Watcher) -> None: ...

    def changed(self, events: list[Event]) -> None:
        """After a call changed the core (lock held): emit the events, wake the thread."""
        ...


def _node_id(netid: int, domain: int) -> common_pb2.NodeId:
    return common_pb2.NodeId(netid=netid, domain=domain)


def publication_pb(p: Publication) -> pb.Publication:
    return pb.Publication(type=p.type, lower=p.lower, upper=p.upper, scope=_SCOPES[p.scope],
                          publisher=_node_id(*p.publisher), publication_id=p.publication_id,
                          value=p.value, published_unix_ns=p.published_unix_ns)


class HeartbeatServicer(heartbeat_pb2_grpc.HeartbeatServicer):
    def __init__(self, app: HeartbeatHost) -> None:
        self.app = app
        self.core = app.core

    # ---- conversions

    def _link(self, link: LinkState) -> pb.Link:
        return pb.Link(peer_domain=link.peer.domain, path=link.path, local_nic=link.local_nic,
                       peer_nic=link.peer_nic, state=pb.LINK_UP if link.up else pb.LINK_DOWN,
                       rtt_ms=(link.rtt_ns or 0.0) / 1e6, loss_percent=link.loss_percent,
                       since_unix_ns=self.app.unix_ns(link.since_ns), received=link.received,
                       missed=link.missed)

    def _member(self, member: Member, paths_up: Iterable[int]) -> pb.Member:
        up = set(paths_up)
        if member.local:
            up = {p.path for p in member.info.paths if nic_up(p.nic)}
            joined = self.app.started_unix_ns
        else:
            joined = self.app.unix_ns(member.joined_at_ns)
        return pb.Member(
            node=_node_id(member.node.netid, member.node.domain),
            incarnation=member.incarnation, local=member.local, joined_unix_ns=joined,
            paths=[pb.PeerPath(path=p.path, nic=p.nic, addresses=p.addresses, up=p.path in up)
                   for p in member.info.paths],
            grpc_ports=dict(member.info.grpc_ports))

    def _view(self, view_id: int, members: list[Member],
              links: list[LinkState]) -> pb.MembershipView:
        up: dict[int, set[int]] = {}
        for link in links:
            if link.up:
                up.setdefault(link.peer.domain, set()).add(link.path)
        return pb.MembershipView(view_id=view_id, members=[
            self._member(m, up.get(m.node.domain, ())) for m in members])

    def _membership_event(self, item: Emitted) -> pb.MembershipEvent:
        event = item.event
        reply = pb.MembershipEvent(view_id=item.view_id, time_unix_ns=item.unix_ns)
        if isinstance(event, MemberJoined):
            reply.joined.CopyFrom(self._member(event.member, item.paths_up))
        elif isinstance(event, MemberLeft):
            reply.left.member.CopyFrom(self._member(event.member, ()))
            reply.left.reason = _LEAVE_REASONS[event.reason]
        elif isinstance(event, (LinkUp, LinkDown)):
            reply.link_changed.CopyFrom(self._link(event.link))
        return reply

    # ---- membership

    async def GetIdentity(self, request: pb.GetIdentityRequest,
                          context: grpc.aio.ServicerContext) -> pb.Identity:
        app = self.app
        config = self.core.config
        return pb.Identity(
            node=_node_id(config.netid, config.domain), incarnation=self.core.incarnation,
            paths=[pb.LocalPath(path=path, nic=info.name, hw_code=info.mac,
                                addresses=info.addresses)
                   for path, info in sorted(app.nics.items())],
            daemon=common_pb2.DaemonInfo(daemon="heartbeat", version=__version__,
                                         pid=os.getpid(), started_unix_ns=app.started_unix_ns,
                                         node_root=str(app.ctx.paths.root)),
            grpc_ports=dict(config.grpc_ports))

    async def ListMembers(self, request: pb.ListMembersRequest,
                          context: grpc.aio.ServicerContext) -> pb.MembershipView:
        with self.app.lock:
            view_id, members, links = self.core.view_id, self.core.members(), self.core.links()
        return self._view(view_id, members, links)

    async def ListLinks(self, request: pb.ListLinksRequest,
                        context: grpc.aio.ServicerContext) -> pb.ListLinksResponse:
        with self.app.lock:
            links = self.core.links()
        return pb.ListLinksResponse(links=[self._link(link) for link in links])

    async def WatchMembership(self, request: pb.WatchMembershipRequest,
                              context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[pb.MembershipEvent]:
        core = self.core
        watcher, (view_id, members, links) = self.app.watch(
            "membership", lambda: (core.view_id, core.members(), core.links()))
        try:
            yield pb.MembershipEvent(view_id=view_id, time_unix_ns=time.time_ns(),
                                     snapshot=self._view(view_id, members, links))
            while True:
                item = await self._next(watcher, context)
                yield self._membership_event(item)
        finally:
            self.app.unwatch(watcher)

    async def _next(self, watcher: Watcher, context: grpc.aio.ServicerContext) -> Emitted:
        item = await watcher.queue.get()
        if item is None:
            if watcher.overflowed:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    "the client fell too far behind the events; watch again "
                                    "for a fresh snapshot")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "skyge-heartbeat is stopping")
        return item

    # ---- names

    async def PublishName(self, request: pb.PublishNameRequest,
                          context: grpc.aio.ServicerContext) -> pb.Publication:
        error: NameTableError | None = None
        with self.app.lock:
            try:
                publication, events = self.core.publish(
                    request.type, request.lower, request.upper, request.scope, request.value,
                    now_ns=time.monotonic_ns(), unix_ns=time.time_ns())
                self.app.changed(events)
            except NameTableError as caught:
                error = caught
        if error is not None:
            if isinstance(error, NameTableFull):
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            if error.field == "scope":
                error = NameTableError("scope", f"must be SCOPE_NODE ({Scope.NODE:d}) or "
                                                f"SCOPE_CLUSTER ({Scope.CLUSTER:d}), got "
                                                f"{request.scope}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return publication_pb(publication)

    async def WithdrawName(self, request: pb.WithdrawNameRequest,
                           context: grpc.aio.ServicerContext) -> pb.WithdrawNameResponse:
        if request.publication_id < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "publication_id: must be >= 1 (a Publication.publication_id of "
                                "this node)")
        missing: str | None = None
        with self.app.lock:
            try:
                withdrawn, events = self.core.withdraw(request.publication_id,
                                                       now_ns=time.monotonic_ns())
                self.app.changed(events)
            except NameTableError as error:
                missing = str(error)
        if missing is not None:
            await context.abort(grpc.StatusCode.NOT_FOUND, missing)
        return pb.WithdrawNameResponse(withdrawn=publication_pb(withdrawn))

    def _lookup(self, type_: int | None, instance: int | None) -> list[Publication]:
        names = self.core.names
        return names.all() if type_ is None else names.lookup(type_, instance)

    async def LookupName(self, request: pb.LookupNameRequest,
                         context: grpc.aio.ServicerContext) -> pb.LookupNameResponse:
        type_ = request.type if request.HasField("type") else None
        instance = request.instance if request.HasField("instance") else None
        if type_ is None and instance is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"instance: needs type (0..{U32_MAX}) to be set too")
        with self.app.lock:
            found = self._lookup(type_, instance)
        return pb.LookupNameResponse(publications=[publication_pb(p) for p in found])

    async def WatchNames(self, request: pb.WatchNamesRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.NameEvent]:
        type_ = request.type if request.HasField("type") else None
        watcher, found = self.app.watch("names", lambda: self._lookup(type_, None), type_)
        try:
            yield pb.NameEvent(time_unix_ns=time.time_ns(), snapshot=pb.NameSnapshot(
                publications=[publication_pb(p) for p in found]))
            while True:
                item = await self._next(watcher, context)
                event = item.event
                reply = pb.NameEvent(time_unix_ns=item.unix_ns)
                if isinstance(event, NamePublished):
                    reply.published.CopyFrom(publication_pb(event.publication))
                elif isinstance(event, NameWithdrawn):
                    reply.withdrawn.CopyFrom(publication_pb(event.publication))
                yield reply
        finally:
            self.app.unwatch(watcher)

    # ---- counters

    async def GetStats(self, request: pb.GetStatsRequest,
                       context: grpc.aio.ServicerContext) -> pb.HeartbeatStats:
        app, core = self.app, self.core
        with app.lock:
            counters = {path: (c.received, c.sent, c.received_bytes, c.sent_bytes)
                        for path, c in core.stats.paths.items()}
            dropped = dict(core.stats.dropped)
            view_id = core.view_id
        send_errors = app.transport.send_errors
        return pb.HeartbeatStats(
            paths=[pb.PathStats(path=path, nic=app.nics[path].name, datagrams_received=rx,
                                datagrams_sent=tx, received_bytes=rx_bytes, sent_bytes=tx_bytes,
                                send_errors=send_errors.get(path, 0))
                   for path, (rx, tx, rx_bytes, tx_bytes) in sorted(counters.items())],
            dropped=dropped, membership_changes=view_id - 1)
