"""The thin gRPC servicers of skyge-lock (Lock, LockPeer): requests in, the node (under the app's
lock) or the authority's daemon (forwarded), answers out. The app is a `LockHost` (daemon.py's
`LockApp`, which makes the servicers).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import grpc

from skyge.services.common.clock import boot_ns
from skyge.services.common.membership import PeerChannels
from skyge.v1 import common_pb2
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_pb2_grpc
from skyge.v1 import lock_peer_pb2 as pp
from skyge.v1 import lock_peer_pb2_grpc

from .links import Links
from .peer import PeerSocket
from .protocol import Node, OpenRefused
from .protocol.names import slot_lock
from .protocol.table import (FIFO, LOCKS_PER_SLOT, PRIORITY, RANDOM, SLOTS, STACK, Entry, Name,
                             order_of)

__all__ = ["TWO_NODES_UNPROTECTED", "LeaderStreams", "LockHost", "LockPeerServicer", "LockServicer",
           "SessionItem", "check_leader_request", "check_open", "distinct_leader_events",
           "read_open", "write_session"]

#: the end of a read from a stream (missing from grpc-stubs 1.53, present in grpc.aio)
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
FORWARDED = "x-skyge-forwarded"
GROUP_RE = re.compile(r"[A-Za-z0-9._/-]{1,128}")
#: said at start and in AuthorityInfo.unprotected (so in `skyge ha status`)
TWO_NODES_UNPROTECTED = ("two nodes and neither fence_command nor witness: if both heartbeat "
                         "paths between the nodes fail while both still reach a reference IP, "
                         "both run the services (a ping target cannot pick one); configure a "
                         "fence_command or a witness (lock.cfg) to protect the cluster against "
                         "that cut")

logger = logging.getLogger("skyge.lock")
_ORDERS = {RANDOM: lp.WAIT_RANDOM, FIFO: lp.WAIT_FIFO, STACK: lp.WAIT_STACK,
           PRIORITY: lp.WAIT_PRIORITY}

#: what a session's stream writes: an event, a reason to end it (FAILED_PRECONDITION) or None
#: (the end: the client or the daemon stops)
SessionItem = lp.SessionEvent | str | None
#: a clean stop waits this long at most for its sessions' streams to carry their Lost out
STREAMS_END_S = 1.0


class StreamHost(Protocol):
    """A lock daemon's session and leader streams (either backend), for a clean stop."""

    @property
    def queues(self) -> dict[int, asyncio.Queue[SessionItem]]:
        """Session id -> its stream's queue (the daemon delivers the node's events there)."""
        ...
    @property
    def watchers(self) -> dict[int, asyncio.Queue[lp.LeaderEvent | None]]:
        """Watcher id -> its Campaign or Observe stream's queue."""
        ...
    @property
    def stream_gone(self) -> asyncio.Event:
        """Set by a servicer each time a stream wrote its last event and dropped its queue."""
        ...


async def end_streams(host: StreamHost, bound_s: float = STREAMS_END_S) -> bool:
    """End every session and leader stream after the events already queued (a clean stop told
    them Lost), and whether each wrote its last event within `bound_s`. A stop's warning to its
    sessions counts from then: a stall of the daemon before the writes must not eat it (the
    simulator found two owners for 17 ms that way)."""
    for queue in host.queues.values():
        queue.put_nowait(None)
    for watcher_queue in host.watchers.values():
        watcher_queue.put_nowait(None)
    try:
        async with asyncio.timeout(bound_s):
            while host.queues or host.watchers:
                host.stream_gone.clear()
                await host.stream_gone.wait()
    except TimeoutError:
        return False
    return True


class LockHost(StreamHost, Protocol):
    """What the servicers use of the daemon (`daemon.LockApp`): the node and the lock it is
    shared under with the protocol thread, the streams' queues, the peers' channels."""

    @property
    def node(self) -> Node | None:
        """None until the membership is known (then for good)."""
        ...
    @property
    def node_ready(self) -> asyncio.Event:
        """Set once `node` is made."""
        ...
    @property
    def lock(self) -> threading.RLock: ...
    @property
    def sock(self) -> PeerSocket | None: ...
    @property
    def links(self) -> Links | None: ...
    @property
    def channels(self) -> PeerChannels: ...
    @property
    def protected(self) -> bool:
        """Two nodes cut apart cannot both act alone: a fence or a witness decides."""
        ...
    def node_id(self, domain: int) -> common_pb2.NodeId: ...

    def new_session_id(self) -> int: ...

    def new_watcher_id(self) -> int: ...

    def flush_soon(self) -> None:
        """The node changed: flush (datagrams out, events to the streams) once the loop's
        current callbacks ran."""
        ...


def _lock_state(app: LockHost, name: Name) -> lp.LockState:
    node = app.node
    assert node is not None and node.auth is not None
    table = node.auth.table

    def holder(entry: Entry, held: bool) -> lp.Holder:
        return lp.Holder(session_id=entry.session, node=app.node_id(entry.node), label=entry.label,
                         fencing_token=entry.token if held else 0,
                         granted_unix_ns=entry.granted_ns if held else 0,
                         queued_unix_ns=entry.queued_ns, priority=entry.priority,
                         client_pid=entry.pid)

    slot, lock = name if isinstance(name, tuple) else (0, 0)
    state = lp.LockState(slot=slot, lock=lock, order=_ORDERS[order_of(name)])
    current = table.holder(name)
    if current is not None:
        state.holder.CopyFrom(holder(current, True))
    state.waiters.extend(holder(w, False) for w in table.waiters(name))
    return state


def _mark_orphans(app: LockHost, states: Iterable[lp.LockState]) -> None:
    """Flag the holders this node keeps for a gone client (only the holder's node knows)."""
    node = app.node
    if node is None:
        return
    orphans = node.member.orphaned_sessions()
    for state in states:
        if state.holder.session_id in orphans and state.holder.node.domain == node.domain:
            state.holder.orphaned = True


class LeaderStreams:
    """Campaign and Observe over a servicer's `_leader_stream` (both backends)."""

    def _leader_stream(self, context: grpc.aio.ServicerContext, group: str,
                       candidate: str | None) -> AsyncIterator[lp.LeaderEvent]:
        raise NotImplementedError

    async def Campaign(self, request: lp.CampaignRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[lp.LeaderEvent]:
        async for event in self._leader_stream(context, request.group, request.candidate):
            yield event

    async def Observe(self, request: lp.ObserveRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[lp.LeaderEvent]:
        async for event in self._leader_stream(context, request.group, None):
            yield event


class LockServicer(LeaderStreams, lock_pb2_grpc.LockServicer):
    def __init__(self, app: LockHost) -> None:
        self.app = app

    async def _node(self, context: grpc.aio.ServicerContext, wait_s: float = 0.0) -> Node:
        if self.app.node is None and wait_s > 0:  # just started: the membership is on its way
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.app.node_ready.wait(), wait_s)
        node = self.app.node
        if node is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "skyge-lock has no membership yet (is skyge-heartbeat running?)")
        return node

    # -- sessions -------------------------------------------------------------------------------
    # grpc.aio also takes a handler that reads and writes with context.read/write and returns
    # None; the generated stub knows only the iterator form, hence the ignore
    async def Session(self, request_iterator: AsyncIterator[lp.SessionRequest],  # type: ignore[override]
                      context: grpc.aio.ServicerContext) -> None:
        """One session: this coroutine writes events; a reader task feeds requests to the node.
        (context.read/write rather than iterators: measurably cheaper per message.)"""
        app = self.app
        request = await read_open(context)
        if request is None:
            return
        node = await self._node(context, wait_s=5.0)
        if node.stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "skyge-lock is stopping")
        try:
            with app.lock:
                session, adopted = node.open_session(app.new_session_id(), request.label,
                                                     request.client_pid, boot_ns(),
                                                     keep_holds=request.keep_holds)
                lease_until = node.member.lease_until
        except OpenRefused as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"open.keep_holds: {error}")
        app.flush_soon()  # the adoption's log line
        queue: asyncio.Queue[SessionItem] = asyncio.Queue()
        app.queues[session] = queue
        reader = asyncio.create_task(self._read(context, session, queue))
        try:
            opened = lp.Opened(session_id=session, node=app.node_id(node.domain))
            for name, token in adopted:
                slot, lock = slot_lock(name)
                opened.adopted.append(lp.Granted(slot=slot, lock=lock, fencing_token=token,
                                                 valid_until_boot_ns=lease_until))
            await context.write(lp.SessionEvent(opened=opened))
            await write_session(context, queue)
        finally:
            reader.cancel()
            app.queues.pop(session, None)
            app.stream_gone.set()
            with app.lock:
                node.close_session(session, boot_ns())
            app.flush_soon()

    async def _read(self, context: grpc.aio.ServicerContext, session: int,
                    queue: asyncio.Queue[SessionItem]) -> None:
        app = self.app
        node = app.node
        assert node is not None
        read, flush, lock = context.read, app.flush_soon, app.lock
        try:
            while True:
                request = await read()
                if request is EOF:
                    return
                kind = request.WhichOneof("request")
                if kind == "acquire":
                    body = request.acquire
                    with lock:
                        node.acquire(session, (body.slot, body.lock), boot_ns(),
                                     priority=body.priority, try_only=body.try_only,
                                     timeout_ms=body.timeout_ms)
                elif kind == "release":
                    body = request.release
                    if body.slot >= SLOTS or body.lock >= LOCKS_PER_SLOT:
                        queue.put_nowait(lp.SessionEvent(released=lp.Released(
                            slot=body.slot, lock=body.lock)))
                        continue
                    with lock:
                        node.release(session, (body.slot, body.lock), boot_ns())
                elif kind == "open":
                    queue.put_nowait("open was sent twice on one session")
                    return
                flush()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            queue.put_nowait(None)

    # -- queries --------------------------------------------------------------------------------
    async def _forward(self, rpc: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self._node(context)
        metadata = dict(context.invocation_metadata() or ())
        with self.app.lock:
            info = node.authority_info(boot_ns())
        authority = info["authority"]
        if metadata.get(FORWARDED) or not authority or authority == node.domain:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "no lock authority is reachable from this node (no quorum, or an "
                                "election is under way)")
        channel = self.app.channels.channel(authority)
        if channel is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the authority (node {authority}) has no known address")
        stub = lock_pb2_grpc.LockStub(channel)
        try:
            return await getattr(stub, rpc)(request, metadata=((FORWARDED, "1"),), timeout=3)
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), f"authority node {authority}: {error.details()}")

    def _local_table(self) -> bool:
        """This node is the active authority (call under the lock)."""
        node = self.app.node
        return node is not None and node.auth is not None and node.auth.active and \
            boot_ns() < node.lease_end

    async def Inspect(self, request: lp.InspectRequest,
                      context: grpc.aio.ServicerContext) -> lp.LockState:
        if request.slot >= SLOTS or request.lock >= LOCKS_PER_SLOT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"slot must be 0 to {SLOTS - 1} and lock 0 to "
                                f"{LOCKS_PER_SLOT - 1}; got slot {request.slot}, "
                                f"lock {request.lock}")
        with self.app.lock:
            state = _lock_state(self.app, (request.slot, request.lock)) \
                if self._local_table() else None
        if state is None:
            state = await self._forward("Inspect", request, context)
        with self.app.lock:
            _mark_orphans(self.app, [state])
        return state

    async def ListLocks(self, request: lp.ListLocksRequest,
                        context: grpc.aio.ServicerContext) -> lp.ListLocksResponse:
        if request.HasField("slot") and request.slot >= SLOTS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"slot must be 0 to {SLOTS - 1}, got {request.slot}")
        reply = None
        with self.app.lock:
            if self._local_table():
                node = self.app.node
                assert node is not None and node.auth is not None
                names = sorted(n for n in node.auth.table.names() if isinstance(n, tuple) and
                               (not request.HasField("slot") or n[0] == request.slot))
                reply = lp.ListLocksResponse(locks=[_lock_state(self.app, n) for n in names])
        if reply is None:
            reply = await self._forward("ListLocks", request, context)
        with self.app.lock:
            _mark_orphans(self.app, reply.locks)
        return reply

    def _authority_info(self, node: Node) -> lp.AuthorityInfo:
        with self.app.lock:
            info = node.authority_info(boot_ns())
        reply = lp.AuthorityInfo(term=info["term"], has_quorum=info["has_quorum"],
                                 expected_votes=info["expected"], member_domains=info["members"],
                                 quorum_rule=info["rule"])
        if info["authority"]:
            reply.authority.CopyFrom(self.app.node_id(info["authority"]))
        if info["expected"] == 2 and not self.app.protected:
            reply.unprotected = TWO_NODES_UNPROTECTED
        return reply

    async def GetAuthority(self, request: lp.GetAuthorityRequest,
                           context: grpc.aio.ServicerContext) -> lp.AuthorityInfo:
        return self._authority_info(await self._node(context))

    async def SetExpectedVotes(self, request: lp.SetExpectedVotesRequest,
                               context: grpc.aio.ServicerContext) -> lp.AuthorityInfo:
        node = await self._node(context)
        if not 1 <= request.expected_votes <= 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"expected_votes must be 1 to 64, got {request.expected_votes}")
        try:
            with self.app.lock:
                node.set_expected(request.expected_votes, boot_ns())
        except ValueError as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        logger.log(25, "expected votes set to %d by an operator", request.expected_votes)
        self.app.flush_soon()
        return self._authority_info(node)

    # -- elections ------------------------------------------------------------------------------
    async def _leader_stream(self, context: grpc.aio.ServicerContext, group: str,
                             candidate: str | None) -> AsyncIterator[lp.LeaderEvent]:
        app = self.app
        node = await self._node(context)
        if node.stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "skyge-lock is stopping")
        problem = check_leader_request(group, candidate)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        watcher = app.new_watcher_id()
        queue: asyncio.Queue[lp.LeaderEvent | None] = asyncio.Queue()
        app.watchers[watcher] = queue
        session = 0
        with app.lock:
            now = boot_ns()
            if candidate is not None:
                session = app.new_session_id()
                node.open_session(session, candidate, 0, now, campaign=group)
            node.watch(watcher, group, session, now)
            if session:
                node.acquire(session, group, now)
        app.flush_soon()
        try:
            async for event in distinct_leader_events(queue):
                yield event
        finally:
            app.watchers.pop(watcher, None)
            app.stream_gone.set()
            with app.lock:
                now = boot_ns()
                node.unwatch(watcher, now)
                if session:
                    node.close_session(session, now)
            app.flush_soon()


class LockPeerServicer(lock_peer_pb2_grpc.LockPeerServicer):
    def __init__(self, app: LockHost) -> None:
        self.app = app

    async def GetPeerState(self, request: pp.GetPeerStateRequest,
                           context: grpc.aio.ServicerContext) -> pp.PeerState:
        app = self.app
        node = app.node
        if node is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no membership yet")
        assert node is not None
        with app.lock:
            return self._peer_state(node)

    def _peer_state(self, node: Node) -> pp.PeerState:
        app = self.app
        now = boot_ns()
        holds, waits = node.member.counts()

        def left(until: int) -> float:
            return max(0.0, (until - now) / 1e6)

        state = pp.PeerState(
            node=app.node_id(node.domain), instance=node.instance, vote_for=node.vote_for,
            promise_left_ms=left(node.promise_end), candidate=node.vote_for == node.domain,
            established=node.established and now < node.lease_end,
            authority_lease_left_ms=left(node.lease_end) if node.established else 0.0,
            active=bool(node.auth and node.auth.active), authority=node.member.authority,
            term=node.member.term, hold_lease_left_ms=left(node.member.lease_until),
            expected=node.expected(), quorum=node.quorum_needed(now),
            highest_term=node.highest_term, token_floor=node.token_floor,
            view=sorted(node.view or ()), local_holds=holds, local_waits=waits,
            sessions=len(node.member.sessions), lone_ok_left_ms=left(node.lone_until))
        sock = app.sock
        for domain, info in sorted(node.peers.items()):
            heard = []
            if sock is not None and domain in sock.peers:
                entry = sock.peers[domain]
                for path in sorted(p for p in entry.paths if p < 100) or [1, 2]:
                    t = entry.heard.get(path)
                    heard.append((now - t) / 1e6 if t is not None else -1.0)
            state.peers.append(pp.PeerLinkState(
                domain=domain, instance=info.instance, heard_ms_ago=heard,
                unacked=app.links.unacked(domain) if app.links else 0, vote_for=info.vote_for,
                relayed_ms_ago=(now - info.relayed_ns - node.timing.peer_beat_ns) / 1e6
                if info.relayed_ns >= 0 else -1.0))
        return state


async def read_open(context: grpc.aio.ServicerContext) -> lp.Open | None:
    """A session's first message, its Open (None: the client closed at once); a bad one ends
    the stream with the reason."""
    first = await context.read()
    if first is EOF:
        return None
    problem = check_open(first)
    if problem is not None:
        await context.abort(*problem)
    return first.open


def check_open(first: lp.SessionRequest) -> tuple[grpc.StatusCode, str] | None:
    """Why a session's first message cannot open it (status and text), or None."""
    if first.WhichOneof("request") != "open":
        return grpc.StatusCode.FAILED_PRECONDITION, "the first message of a session must be open"
    if len(first.open.label) > 64:
        return grpc.StatusCode.INVALID_ARGUMENT, "open.label: at most 64 characters"
    if first.open.keep_holds and not first.open.label:
        return (grpc.StatusCode.INVALID_ARGUMENT, "open.keep_holds needs a non-empty open.label "
                "(the next session with that label adopts the holds)")
    return None


def check_leader_request(group: str, candidate: str | None) -> str | None:
    """What is wrong with a Campaign's or Observe's group and candidate, or None."""
    if not GROUP_RE.fullmatch(group):
        return "group: 1-128 characters of A-Z a-z 0-9 . _ / -"
    if candidate is not None and not 1 <= len(candidate.encode()) <= 256:
        return "candidate: 1 to 256 UTF-8 bytes"
    return None


async def write_session(context: grpc.aio.ServicerContext,
                        queue: asyncio.Queue[SessionItem]) -> None:
    """Write a session's events until its end (None) or a reason to end it (a str:
    FAILED_PRECONDITION)."""
    get, write = queue.get, context.write
    while True:
        event = await get()
        if event is None:
            return
        if isinstance(event, str):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, event)
        await write(event)


async def distinct_leader_events(
        queue: asyncio.Queue[lp.LeaderEvent | None]) -> AsyncIterator[lp.LeaderEvent]:
    """A watcher's leader events, each change once, until the daemon stops (None)."""
    last = None
    while (event := await queue.get()) is not None:
        key = (event.leader, event.term, event.elected)
        if key != last:
            last = key
            yield event
