"""The Lock servicer of the etcd backend: the same contract as the built-in one (server.py),
over `EtcdLocks`. The authority is etcd: GetAuthority describes it, and SetExpectedVotes is
refused (etcd's own membership sets its quorum)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_pb2_grpc

from ..protocol.table import LOCKS_PER_SLOT, SLOTS
from ..server import (EOF, LeaderStreams, SessionItem, StreamHost, check_leader_request,
                      distinct_leader_events, read_open, write_session)
from .client import EtcdError
from .engine import EtcdLocks, OpenRefused

__all__ = ["EtcdHost", "EtcdLockServicer"]


class EtcdHost(StreamHost, Protocol):
    @property
    def engine(self) -> EtcdLocks | None: ...

    def new_session_id(self) -> int: ...

    def new_watcher_id(self) -> int: ...

    async def authority_info(self) -> lp.AuthorityInfo: ...


class EtcdLockServicer(LeaderStreams, lock_pb2_grpc.LockServicer):
    def __init__(self, app: EtcdHost) -> None:
        self.app = app

    async def _engine(self, context: grpc.aio.ServicerContext) -> EtcdLocks:
        engine = self.app.engine
        if engine is None or engine.stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "skyge-lock is not ready or stops")
        assert engine is not None
        return engine

    async def Session(self, request_iterator: AsyncIterator[lp.SessionRequest],  # type: ignore[override]
                      context: grpc.aio.ServicerContext) -> None:
        app = self.app
        request = await read_open(context)
        if request is None:
            return
        engine = await self._engine(context)
        try:
            session, adopted = engine.open_session(app.new_session_id(), request.label,
                                                   request.client_pid,
                                                   keep_holds=request.keep_holds)
        except OpenRefused as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"open.keep_holds: {error}")
        queue: asyncio.Queue[SessionItem] = asyncio.Queue()
        app.queues[session] = queue
        reader = asyncio.create_task(self._read(context, engine, session, queue))
        try:
            opened = lp.Opened(session_id=session, node=engine.node_id(engine.domain))
            for name, token in adopted:
                slot, lock = name if isinstance(name, tuple) else (0, 0)
                opened.adopted.append(lp.Granted(slot=slot, lock=lock, fencing_token=token,
                                                 valid_until_boot_ns=engine.safe_until))
            await context.write(lp.SessionEvent(opened=opened))
            await write_session(context, queue)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            app.queues.pop(session, None)
            app.stream_gone.set()
            engine.close_session(session)

    async def _read(self, context: grpc.aio.ServicerContext, engine: EtcdLocks, session: int,
                    queue: asyncio.Queue[SessionItem]) -> None:
        """Requests in order: each is done (its etcd transaction answered) before the next."""
        try:
            while True:
                request = await context.read()
                if request is EOF:
                    return
                kind = request.WhichOneof("request")
                if kind == "acquire":
                    body = request.acquire
                    await engine.acquire(session, (body.slot, body.lock), priority=body.priority,
                                         try_only=body.try_only, timeout_ms=body.timeout_ms)
                elif kind == "release":
                    body = request.release
                    if body.slot >= SLOTS or body.lock >= LOCKS_PER_SLOT:
                        queue.put_nowait(lp.SessionEvent(released=lp.Released(
                            slot=body.slot, lock=body.lock)))
                        continue
                    await engine.release(session, (body.slot, body.lock))
                elif kind == "open":
                    queue.put_nowait("open was sent twice on one session")
                    return
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            queue.put_nowait(None)

    # -- queries --------------------------------------------------------------------------------
    async def _states(self, context: grpc.aio.ServicerContext,
                      name: tuple[int, int] | None) -> list[lp.LockState]:
        engine = await self._engine(context)
        try:
            return await engine.states(name)
        except EtcdError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        raise AssertionError  # abort raises

    async def Inspect(self, request: lp.InspectRequest,
                      context: grpc.aio.ServicerContext) -> lp.LockState:
        if request.slot >= SLOTS or request.lock >= LOCKS_PER_SLOT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"slot must be 0 to {SLOTS - 1} and lock 0 to "
                                f"{LOCKS_PER_SLOT - 1}; got slot {request.slot}, "
                                f"lock {request.lock}")
        return (await self._states(context, (request.slot, request.lock)))[0]

    async def ListLocks(self, request: lp.ListLocksRequest,
                        context: grpc.aio.ServicerContext) -> lp.ListLocksResponse:
        if request.HasField("slot") and request.slot >= SLOTS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"slot must be 0 to {SLOTS - 1}, got {request.slot}")
        states = await self._states(context, None)
        return lp.ListLocksResponse(locks=[s for s in states if not request.HasField("slot")
                                           or s.slot == request.slot])

    async def GetAuthority(self, request: lp.GetAuthorityRequest,
                           context: grpc.aio.ServicerContext) -> lp.AuthorityInfo:
        await self._engine(context)
        return await self.app.authority_info()

    async def SetExpectedVotes(self, request: lp.SetExpectedVotesRequest,
                               context: grpc.aio.ServicerContext) -> lp.AuthorityInfo:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            "lock.cfg has backend = \"etcd\": etcd's own membership sets the "
                            "quorum (etcdctl member remove), not expected votes")
        raise AssertionError  # abort raises

    # -- elections ------------------------------------------------------------------------------
    async def _leader_stream(self, context: grpc.aio.ServicerContext, group: str,
                             candidate: str | None) -> AsyncIterator[lp.LeaderEvent]:
        app = self.app
        engine = await self._engine(context)
        problem = check_leader_request(group, candidate)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        watcher = app.new_watcher_id()
        queue: asyncio.Queue[lp.LeaderEvent | None] = asyncio.Queue()
        app.watchers[watcher] = queue
        session = 0
        if candidate is not None:
            session, _ = engine.open_session(app.new_session_id(), candidate, 0, campaign=group)
        engine.watch(watcher, group, session)
        try:
            if session:
                await engine.acquire(session, group)
            async for event in distinct_leader_events(queue):
                yield event
        finally:
            app.watchers.pop(watcher, None)
            app.stream_gone.set()
            engine.unwatch(watcher)
            if session:
                engine.close_session(session)
