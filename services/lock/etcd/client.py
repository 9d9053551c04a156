"""A small asyncio client of etcd's v3 API: the calls the lock backend makes, over stubs that
protos/generate.py generates from etcd's own protos (protos/skyge/etcd/).

Why not a client library: python-etcd3 does not import with protobuf >= 4, and the maintained
async ones pull their own gRPC/protobuf pins; the lock backend needs seven calls, and generating
the stubs from etcd's published protos keeps one grpcio and one protobuf in the project.

One channel per endpoint; a call that fails with UNAVAILABLE or DEADLINE_EXCEEDED moves to the
next endpoint for the next call (a member cut off from its leader answers "no leader", and the
`hasleader` metadata makes a watch on such a member end rather than hang).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from skyge.etcd import kv_pb2, rpc_pb2, rpc_pb2_grpc

__all__ = ["EtcdClient", "EtcdError", "EtcdTls", "LeaseGone", "kv_pb2", "rpc_pb2"]

REQUIRE_LEADER = (("hasleader", "true"),)
SWITCH_ON = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
#: a renewal the current endpoint has not answered within this is asked of every endpoint
HEDGE_S = 0.1
#: a watch silent this long asks the member for a progress notice; silent as long again, it ends
WATCH_QUIET_S = 0.5


class EtcdError(Exception):
    """etcd did not answer, or refused: the message names the endpoint and etcd's words."""


class LeaseGone(EtcdError):
    """etcd no longer knows the lease (it expired or was revoked)."""


@dataclass(frozen=True)
class EtcdTls:
    """PEM files: the CA that signed etcd's certificates, and this client's certificate."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None)


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], tls: EtcdTls | None = None,
                 timeout_s: float = 1.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        credentials = tls.credentials() if tls else None
        self._channels = [grpc.aio.secure_channel(e, credentials) if credentials
                          else grpc.aio.insecure_channel(e) for e in self.endpoints]
        self._current = 0

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def _channel(self) -> grpc.aio.Channel:
        return self._channels[self._current]

    def _next_endpoint(self, failed: str) -> None:
        """The next call goes to the endpoint after `failed` (unless another call moved on)."""
        if self.endpoint == failed:
            self._current = (self._current + 1) % len(self._channels)

    def _failed(self, error: grpc.aio.AioRpcError) -> EtcdError:
        endpoint = self.endpoint
        if error.code() in SWITCH_ON:
            self._next_endpoint(endpoint)
        details = error.details() or error.code().name
        if "requested lease not found" in details:
            return LeaseGone(f"etcd at {endpoint}: {details}")
        return EtcdError(f"etcd at {endpoint}: {error.code().name}: {details}")

    async def _unary(self, stub: Any, method: str, request: Any,
                     timeout_s: float | None = None) -> Any:
        try:
            return await getattr(stub(self._channel()), method)(
                request, timeout=timeout_s or self.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise self._failed(error) from None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    # -- KV -------------------------------------------------------------------------------------
    async def range(self, key: bytes, range_end: bytes = b"", *,
                    timeout_s: float | None = None) -> rpc_pb2.RangeResponse:
        return await self._unary(rpc_pb2_grpc.KVStub, "Range",
                                 rpc_pb2.RangeRequest(key=key, range_end=range_end), timeout_s)

    async def txn(self, compare: Sequence[rpc_pb2.Compare],
                  success: Sequence[rpc_pb2.RequestOp],
                  failure: Sequence[rpc_pb2.RequestOp] = ()) -> rpc_pb2.TxnResponse:
        return await self._unary(rpc_pb2_grpc.KVStub, "Txn",
                                 rpc_pb2.TxnRequest(compare=compare, success=success,
                                                    failure=failure))

    # -- leases ---------------------------------------------------------------------------------
    async def lease_grant(self, ttl_s: int) -> tuple[int, int]:
        """A new lease: (id, TTL in s)."""
        reply = await self._unary(rpc_pb2_grpc.LeaseStub, "LeaseGrant",
                                  rpc_pb2.LeaseGrantRequest(TTL=ttl_s))
        if reply.error:
            raise EtcdError(f"etcd at {self.endpoint}: lease grant: {reply.error}")
        return int(reply.ID), int(reply.TTL)

    async def lease_revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseGone):
            await self._unary(rpc_pb2_grpc.LeaseStub, "LeaseRevoke",
                              rpc_pb2.LeaseRevokeRequest(ID=lease))

    async def lease_keepalive(self, lease: int, timeout_s: float) -> int:
        """Renew the lease once: the first TTL (in s from etcd's receipt) that comes back.
        LeaseGone when etcd no longer has it; EtcdError when no endpoint answered within
        timeout_s. The current endpoint is asked first and, when it has not answered within
        HEDGE_S, every other one too: a dead member never answers, and a member whose leader
        just died holds a renewal (forwarded to that leader) until its timeout, while any
        member with a live leader answers in a few ms. (One short stream per renewal: a stream
        kept open would pin one endpoint.)"""
        order = [*range(self._current, len(self._channels)), *range(self._current)]
        attempts = [asyncio.ensure_future(self._keepalive(
            self._channels[order[0]], self.endpoints[order[0]], lease, timeout_s))]
        errors: list[EtcdError] = []
        try:
            await asyncio.wait(attempts, timeout=min(HEDGE_S, timeout_s))
            if not attempts[0].done() or attempts[0].exception() is not None:
                attempts += [asyncio.ensure_future(self._keepalive(
                    self._channels[i], self.endpoints[i], lease, timeout_s)) for i in order[1:]]
            for attempt in asyncio.as_completed(attempts):
                try:
                    return await attempt
                except LeaseGone:
                    raise
                except EtcdError as error:
                    errors.append(error)
            raise errors[0]
        finally:
            for task in attempts:
                task.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    @staticmethod
    async def _keepalive(channel: grpc.aio.Channel, endpoint: str, lease: int,
                         timeout_s: float) -> int:
        call = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive(  # type: ignore[call-arg]
            timeout=timeout_s, metadata=REQUIRE_LEADER)
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
            reply = await call.read()
        except grpc.aio.AioRpcError as error:
            details = error.details() or error.code().name
            if "requested lease not found" in details:
                raise LeaseGone(f"etcd at {endpoint}: {details}") from None
            raise EtcdError(f"etcd at {endpoint}: {error.code().name}: {details}") from None
        finally:
            call.cancel()
        if not isinstance(reply, rpc_pb2.LeaseKeepAliveResponse):  # grpc.aio.EOF
            raise EtcdError(f"etcd at {endpoint}: the keep-alive stream ended")
        if reply.TTL <= 0:
            raise LeaseGone(f"etcd at {endpoint}: lease {lease:x} expired or was revoked")
        return int(reply.TTL)

    # -- watch, cluster -------------------------------------------------------------------------
    async def watch(self, key: bytes, range_end: bytes, start_revision: int,
                    quiet_s: float = WATCH_QUIET_S) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """Every change of [key, range_end) from start_revision on, with the previous values;
        ends (EtcdError) when the stream breaks, etcd cancels the watch (compaction), or the
        member stops answering: after `quiet_s` without a message the watch asks for a progress
        notice, and without one `quiet_s` later it gives up and the next call uses the next
        endpoint (a crashed or frozen member never closes the stream)."""
        endpoint = self.endpoint
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, prev_kv=True))
        progress = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
        requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        requests.put_nowait(create)
        replies: asyncio.Queue[rpc_pb2.WatchResponse | EtcdError] = asyncio.Queue()

        async def feed() -> AsyncIterator[rpc_pb2.WatchRequest]:
            while (request := await requests.get()) is not None:
                yield request

        call = rpc_pb2_grpc.WatchStub(self._channel()).Watch(feed(), metadata=REQUIRE_LEADER)

        async def read() -> None:
            try:
                async for reply in call:
                    replies.put_nowait(reply)
                replies.put_nowait(EtcdError(f"etcd at {endpoint}: the watch stream ended"))
            except grpc.aio.AioRpcError as error:
                replies.put_nowait(self._failed(error))

        reader = asyncio.create_task(read(), name="etcd-watch-reader")
        asked = False
        try:
            while True:
                try:
                    # (asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    # that comes as its timeout fires, and this loop would run on)
                    async with asyncio.timeout(quiet_s):
                        reply = await replies.get()
                except TimeoutError:
                    if asked:
                        self._next_endpoint(endpoint)
                        raise EtcdError(f"etcd at {endpoint}: the watch got no answer for "
                                        f"{2 * quiet_s:g} s") from None
                    requests.put_nowait(progress)
                    asked = True
                    continue
                asked = False
                if isinstance(reply, EtcdError):
                    raise reply
                if reply.canceled:
                    raise EtcdError(f"etcd at {endpoint} ended the watch: "
                                    f"{reply.cancel_reason or 'compacted'}")
                yield reply
        finally:
            # (the reader is not awaited: a read of a call being cancelled may not return)
            requests.put_nowait(None)
            call.cancel()
            reader.cancel()

    async def status(self) -> rpc_pb2.StatusResponse:
        return await self._unary(rpc_pb2_grpc.MaintenanceStub,
                                 "Status", rpc_pb2.StatusRequest())

    async def members(self) -> rpc_pb2.MemberListResponse:
        return await self._unary(rpc_pb2_grpc.ClusterStub,
                                 "MemberList", rpc_pb2.MemberListRequest(linearizable=True))


def compare_created(key: bytes, revision: int, range_end: bytes = b"") -> rpc_pb2.Compare:
    """key's create revision is `revision` (0: the key does not exist; with range_end: every
    key of the range, and true for an empty range when revision is 0)."""
    return rpc_pb2.Compare(key=key, range_end=range_end, target=rpc_pb2.Compare.CREATE,
                           result=rpc_pb2.Compare.EQUAL, create_revision=revision)


def compare_unchanged_since(key: bytes, range_end: bytes, revision: int) -> rpc_pb2.Compare:
    """No key of [key, range_end) was written after `revision`."""
    return rpc_pb2.Compare(key=key, range_end=range_end, target=rpc_pb2.Compare.MOD,
                           result=rpc_pb2.Compare.LESS, mod_revision=revision + 1)


def put(key: bytes, value: bytes, lease: int) -> rpc_pb2.RequestOp:
    """A put on `lease` (never 0: a lock key without a lease would outlive its node)."""
    if not lease:
        raise ValueError(f"no lease for {key!r}")
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))


def get(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))
