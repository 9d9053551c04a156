"""The Bus gRPC service: local buses from the core, every other domain's relayed to its owner.

Any node's bus daemon accepts every RPC. A request for this node's domain (or domain 0) is served
by the core; one for another member is forwarded to that member's bus daemon over TCP (the
membership says where it listens, every heartbeat path, up paths first) and its answer, stream or
error comes back unchanged. Forwarding passes the serialized bytes through without decoding them
again: the handlers take and give raw bytes (see `_bytes_out`).

Failure handling:
- a relayed Subscribe ends with UNAVAILABLE "owner domain N left the membership" when the owner
  leaves, and with the owner's status when the owner ends it;
- the owner cancels the subscriptions of a node that leaves the membership (a crashed node never
  closes its TCP streams);
- errors the bus daemons raise carry the trailing metadata `skyge-origin: bus`, so a relay (and
  the CLI) can tell an owner's refusal from a transport failure.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from skyge.services.bus.core import (FLOW_WAIT_S, MAX_DOMAIN, BusCore, BusError, Closed,
                                     Subscription, check_domain)
from skyge.services.common.membership import MembershipFollower, PeerChannels
from skyge.services.common.tls import caller, over_tls
from skyge.v1 import bus_pb2 as pb

#: the end of a read from a stream (missing from grpc-stubs 1.53, present in grpc.aio)
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
SERVICE = "skyge.v1.Bus"
ORIGIN_KEY = "skyge-bus-origin"
RELAYED_KEY = "skyge-bus-relayed"
ERROR_ORIGIN = (("skyge-origin", "bus"),)
#: requests a PublishStream reads ahead of the acks it has written
PUBLISH_READ_AHEAD = 256
#: deadline of a forwarded unary call when the client gave none
FORWARD_TIMEOUT_S = 30.0
#: delay between a link going down and closing the channels of its path (see on_link)
PRUNE_DELAY_S = 0.3
#: a dropped subscription's stream that is still stuck writing after this long is cancelled
DROP_GRACE_S = 1.0

logger = logging.getLogger("skyge-bus.server")
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _identity(data: bytes) -> bytes:
    return data


def _bytes_out(reply: Any) -> bytes:
    """Replies are either serialized already (relayed, or built as bytes) or messages."""
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (acks after a failure are never awaited)."""
    if not future.cancelled():
        future.exception()


def is_bus_error(error: grpc.RpcError) -> bool:
    """True when a bus daemon raised this status (not the transport)."""
    try:
        # (key, value) pairs at run time, from grpc.aio as from plain grpc; grpc-stubs 1.53
        # types them as _Metadatum objects (with .key and .value) only
        metadata = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    except Exception:
        return False
    return any(key == "skyge-origin" and value == "bus" for key, value in metadata)


class _Relay:
    """A call forwarded to an owner; `lost` is set (and the call cancelled) when it leaves."""

    def __init__(self, domain: int, call: Any) -> None:
        self.domain, self.call = domain, call
        self.lost: str | None = None

    def end(self, reason: str) -> None:
        self.lost = reason
        self.call.cancel()


class _Upstream(_Relay):
    """One RelayPublish stream to an owner, carrying a client stream's requests for that owner."""

    def __init__(self, server: BusServer, domain: int, channel: grpc.aio.Channel,
                 metadata: tuple[tuple[str, str], ...]) -> None:
        call = channel.stream_stream(f"/{SERVICE}/RelayPublish", request_serializer=_identity,
                                     response_deserializer=pb.RelayAck.FromString)(
            None, metadata=metadata)  # no request iterator: requests go by call.write
        super().__init__(domain, call)
        self.server = server
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.error: BusError | None = None
        self.reader = asyncio.create_task(self._read())

    async def send(self, raw: bytes, future: asyncio.Future[Any]) -> None:
        if self.error is not None:
            future.set_exception(self.error)
            return
        self.waiting.append(future)
        try:
            await self.call.write(raw)
        except Exception:
            await asyncio.sleep(0)

    async def _read(self) -> None:
        error: BusError
        try:
            while True:
                ack = await self.call.read()
                if ack is EOF:
                    error = BusError("UNAVAILABLE", f"the bus daemon of domain {self.domain} "
                                                    f"ended the publish stream early")
                    break
                if not self.waiting:
                    continue
                future = self.waiting.popleft()
                if ack.status_code == 0:
                    future.set_result(ack.ack)
                else:
                    code = _CODES.get(ack.status_code, grpc.StatusCode.UNKNOWN)
                    future.set_exception(BusError(code.name, ack.status_message))
        except grpc.aio.AioRpcError as rpc_error:
            error = self.lost_error() or self.server.relay_error(rpc_error, self.domain)
        except asyncio.CancelledError:
            error = self.lost_error() or BusError("UNAVAILABLE",
                                                  self.server.closed_message(self.domain))
        self.error = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def lost_error(self) -> BusError | None:
        return BusError("UNAVAILABLE", self.lost) if self.lost else None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        self.call.cancel()
        self.reader.cancel()


class BusServer:
    """The Bus service of one node."""

    def __init__(self, core: BusCore, follower: MembershipFollower, channels: PeerChannels,
                 local_domain: Callable[[], int]) -> None:
        self.core, self.follower, self.channels = core, follower, channels
        self.local_domain = local_domain
        self.relays: set[_Relay] = set()
        self.subscriptions: dict[Subscription, asyncio.Task[Any]] = {}
        self.forwarded = 0
        self._prune_handle: asyncio.TimerHandle | None = None

    # -- registration
    def handler(self) -> grpc.GenericRpcHandler:
        unary = {"CreateBus": self.CreateBus, "ListBuses": self.ListBuses,
                 "DeleteBus": self.DeleteBus, "InitBuses": self.InitBuses,
                 "Publish": self.Publish}
        handlers = {name: grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=_identity, response_serializer=_bytes_out)
            for name, method in unary.items()}
        handlers["PublishStream"] = grpc.stream_stream_rpc_method_handler(
            self.PublishStream, request_deserializer=_identity, response_serializer=_bytes_out)
        handlers["RelayPublish"] = grpc.stream_stream_rpc_method_handler(
            self.RelayPublish, request_deserializer=_identity, response_serializer=_bytes_out)
        handlers["Subscribe"] = grpc.unary_stream_rpc_method_handler(
            self.Subscribe, request_deserializer=_identity, response_serializer=_bytes_out)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # -- helpers
    @staticmethod
    async def abort(context: grpc.aio.ServicerContext, code: str, message: str) -> None:
        await context.abort(grpc.StatusCode[code], message, trailing_metadata=ERROR_ORIGIN)

    def caller(self, context: grpc.aio.ServicerContext) -> tuple[int, bool]:
        """(origin domain of the request, whether a peer relayed it). Over TLS the origin is the
        caller's certificate (a node's domain; the local one for an administrator), never a
        header; local callers (the Unix socket, root only) and insecure clusters may name it."""
        origin, relayed = 0, False
        for key, value in context.invocation_metadata() or ():
            if key == ORIGIN_KEY and str(value).isdigit():
                origin = int(value)
            elif key == RELAYED_KEY:
                relayed = True
        if over_tls(context):
            identity = caller(context)
            origin = identity.domain if identity is not None else 0
        if not 1 <= origin <= MAX_DOMAIN:
            origin = self.local_domain()
        return origin, relayed

    def route(self, domain: int, context: grpc.aio.ServicerContext
              ) -> tuple[int, grpc.aio.Channel] | None:
        """None to serve locally, or (owner, channel) to forward; BusError when impossible."""
        check_domain(domain)
        local = self.local_domain()
        if domain == 0 or domain == local:
            return None
        _, relayed = self.caller(context)
        if relayed:
            raise BusError("FAILED_PRECONDITION",
                           f"domain: this bus daemon serves domain {local or 'unknown'}, not "
                           f"{domain} (the relaying node's membership view is out of date)")
        if not self.follower.known:
            raise BusError("UNAVAILABLE", f"domain: cannot reach domain {domain}: the membership "
                                          f"is unknown (is skyge-heartbeat running on this node?)")
        if domain not in self.follower.peers:
            members = ", ".join(str(d) for d in sorted(self.follower.peers)) or "none"
            raise BusError("NOT_FOUND", f"domain: domain {domain} is not in the membership "
                                        f"(members: {members})")
        channel = self.channels.channel(domain)
        if channel is None:
            raise BusError("UNAVAILABLE", f"domain: domain {domain} announces no bus daemon "
                                          f"address")
        return domain, channel

    def forward_metadata(self, context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
        origin, _ = self.caller(context)
        return ((ORIGIN_KEY, str(origin)), (RELAYED_KEY, "1"))

    def relay_error(self, error: grpc.aio.AioRpcError, domain: int) -> BusError:
        """A forwarded call's failure as this daemon reports it."""
        code = error.code()
        if is_bus_error(error):
            return BusError(code.name, error.details() or code.name)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return BusError(code.name, f"the bus daemon of domain {domain} did not answer in time")
        if code == grpc.StatusCode.CANCELLED:  # not by our client: the channel was closed
            return BusError("UNAVAILABLE", self.closed_message(domain))
        return BusError("UNAVAILABLE", f"cannot reach the bus daemon of domain {domain}: "
                                       f"{error.details() or code.name}")

    @staticmethod
    def closed_message(domain: int) -> str:
        return (f"the connection to the bus daemon of domain {domain} was closed (the heartbeat "
                f"path it used went down); retry")

    @staticmethod
    def parse(message_type: Any, raw: bytes) -> Any:
        try:
            return message_type.FromString(raw)
        except DecodeError:
            raise BusError("INVALID_ARGUMENT",
                           f"request: not a valid {message_type.__name__}") from None

    async def unary(self, method: str, message_type: Any, raw: bytes,
                    context: grpc.aio.ServicerContext, serve: Callable[[Any, int], Any]) -> Any:
        try:
            request = self.parse(message_type, raw)
            route = self.route(request.domain, context)
            if route is None:
                served = serve(request, self.caller(context)[0])
                return await served if inspect.isawaitable(served) else served
            domain, channel = route
            remaining = context.time_remaining()
            timeout = FORWARD_TIMEOUT_S if remaining is None else max(0.001, remaining)
            self.forwarded += 1
            try:
                return await channel.unary_unary(
                    f"/{SERVICE}/{method}", request_serializer=_identity,
                    response_deserializer=_identity)(raw, metadata=self.forward_metadata(context),
                                                     timeout=timeout)
            except grpc.aio.AioRpcError as error:
                raise self.relay_error(error, domain) from None
        except BusError as error:
            await self.abort(context, error.code, error.message)

    # -- unary RPCs
    async def CreateBus(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        def serve(request: pb.CreateBusRequest, origin: int) -> pb.BusInfo:
            bus = self.core.create(request.name, request.slot, request.retain_messages,
                                   request.max_payload_bytes)
            return bus.info(self.local_domain())
        return await self.unary("CreateBus", pb.CreateBusRequest, raw, context, serve)

    async def ListBuses(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary("ListBuses", pb.ListBusesRequest, raw, context,
                                lambda request, origin: pb.ListBusesResponse(
                                    buses=self.core.list()))

    async def DeleteBus(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary("DeleteBus", pb.DeleteBusRequest, raw, context,
                                lambda request, origin: pb.DeleteBusResponse(
                                    deleted=self.core.delete(request.name)))

    async def InitBuses(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        def serve(request: pb.InitBusesRequest, origin: int) -> pb.InitBusesResponse:
            buses, created = self.core.init(request.subsystems)
            domain = self.local_domain()
            return pb.InitBusesResponse(buses=[b.info(domain) for b in buses], created=created)
        return await self.unary("InitBuses", pb.InitBusesRequest, raw, context, serve)

    async def Publish(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        async def serve(request: pb.PublishRequest, origin: int) -> pb.PublishAck:
            remaining = context.time_remaining()
            first = await self.core.get(request.name).publish_waiting(
                request.messages, origin,
                wait_s=FLOW_WAIT_S if remaining is None else min(FLOW_WAIT_S, remaining))
            return pb.PublishAck(first_sequence=first, count=len(request.messages))
        return await self.unary("Publish", pb.PublishRequest, raw, context, serve)

    # -- streams
    async def PublishStream(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        loop = asyncio.get_running_loop()
        origin, _ = self.caller(context)
        pending: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()
        room = asyncio.Semaphore(PUBLISH_READ_AHEAD)
        upstreams: dict[int, _Upstream] = {}

        async def read() -> None:
            try:
                async for raw in requests:
                    await room.acquire()
                    future = loop.create_future()
                    future.add_done_callback(_retrieved)
                    pending.put_nowait(future)
                    try:
                        request = self.parse(pb.PublishRequest, raw)
                        route = self.route(request.domain, context)
                        if route is None:
                            first = await self.core.get(request.name).publish_waiting(
                                request.messages, origin)
                            future.set_result(pb.PublishAck(first_sequence=first,
                                                            count=len(request.messages)))
                            continue
                        domain, channel = route
                        upstream = upstreams.get(domain)
                        if upstream is not None and upstream.error is not None:
                            raise upstream.error  # it failed: nothing more goes to that owner
                        if upstream is None:
                            upstream = _Upstream(self, domain, channel,
                                                 self.forward_metadata(context))
                            upstreams[domain] = upstream
                            self.relays.add(upstream)
                        self.forwarded += 1
                        await upstream.send(raw, future)
                    except BusError as error:
                        if not future.done():
                            future.set_exception(error)
                        return  # nothing after a refused request is published
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                future = await pending.get()
                if future is None:
                    break
                try:
                    ack = await future
                except BusError as error:
                    await self.abort(context, error.code, error.message)
                room.release()
                await context.write(ack)
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            reader.cancel()
            for upstream in upstreams.values():
                self.relays.discard(upstream)
                await upstream.close()

    async def RelayPublish(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        origin, _ = self.caller(context)
        refused = False
        async for raw in requests:
            if refused:
                await context.write(pb.RelayAck(
                    status_code=grpc.StatusCode.ABORTED.value[0],
                    status_message="not published: an earlier request of this stream was refused"))
                continue
            try:
                request = self.parse(pb.PublishRequest, raw)
                if self.route(request.domain, context) is not None:  # never relayed again
                    raise BusError("FAILED_PRECONDITION", "domain: not this node's")
                first = await self.core.get(request.name).publish_waiting(request.messages,
                                                                          origin)
                reply = pb.RelayAck(ack=pb.PublishAck(first_sequence=first,
                                                      count=len(request.messages)))
            except BusError as error:
                refused = True
                reply = pb.RelayAck(status_code=grpc.StatusCode[error.code].value[0],
                                    status_message=error.message)
            await context.write(reply)

    async def Subscribe(self, raw: bytes, context: grpc.aio.ServicerContext) -> None:
        try:
            request = self.parse(pb.SubscribeRequest, raw)
            route = self.route(request.domain, context)
            if route is not None:
                await self._relay_subscribe(raw, route, context)
                return
            origin, _ = self.caller(context)
            subscription = self.core.subscribe(request.name, request.from_sequence,
                                               request.max_batch, origin,
                                               flow=request.flow_control)
        except BusError as error:
            await self.abort(context, error.code, error.message)
            return
        task = asyncio.current_task()
        assert task is not None
        self.subscriptions[subscription] = task
        # dropped while stuck writing to a client that does not read: end the call
        def end_if_stuck() -> None:
            asyncio.get_running_loop().call_later(DROP_GRACE_S, task.cancel)

        subscription.on_drop = end_if_stuck
        try:
            await context.write(b"")  # the empty first Delivery: the subscription is in place
            while True:
                await context.write(await subscription.next_delivery())
        except Closed as closed:
            await self.abort(context, closed.code, closed.message)
        finally:
            subscription.close()
            self.subscriptions.pop(subscription, None)

    async def _relay_subscribe(self, raw: bytes, route: tuple[int, grpc.aio.Channel],
                               context: grpc.aio.ServicerContext) -> None:
        domain, channel = route
        call = channel.unary_stream(f"/{SERVICE}/Subscribe", request_serializer=_identity,
                                    response_deserializer=_identity)(
            raw, metadata=self.forward_metadata(context))
        relay = _Relay(domain, call)
        self.relays.add(relay)
        self.forwarded += 1
        error: BusError | None = None
        try:
            async for chunk in call:
                await context.write(chunk)
            error = BusError("UNAVAILABLE", f"the bus daemon of domain {domain} ended the stream")
        except grpc.aio.AioRpcError as rpc_error:
            error = (BusError("UNAVAILABLE", relay.lost) if relay.lost
                     else self.relay_error(rpc_error, domain))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this handler is cancelled: the client went away
            # the upstream call was cancelled under us: we ended it, or its channel was closed
            error = BusError("UNAVAILABLE", relay.lost or self.closed_message(domain))
        finally:
            call.cancel()
            self.relays.discard(relay)
        await self.abort(context, error.code, error.message)

    # -- membership
    def on_view(self, follower: MembershipFollower) -> None:
        members = set(follower.peers)
        local = self.local_domain()
        for relay in list(self.relays):
            if relay.domain not in members and relay.lost is None:
                relay.end(f"owner domain {relay.domain} left the membership: its buses are "
                          f"unavailable until it is back (resubscribe then)")
        for subscription, task in list(self.subscriptions.items()):
            if subscription.origin != local and subscription.origin not in members:
                logger.info("dropping a subscription to bus %s of domain %d: left the "
                            "membership", subscription.bus.name, subscription.origin)
                task.cancel()

        self.channels.prune()

    def on_link(self, follower: MembershipFollower) -> None:
        """A path to a peer went up or down: calls on a dead path's channel end shortly. Not at
        once: when every path of a peer goes down, the peer leaves the membership a moment
        later, and its streams should end saying so (see on_view)."""
        if self._prune_handle is not None:
            self._prune_handle.cancel()
        self._prune_handle = asyncio.get_running_loop().call_later(PRUNE_DELAY_S,
                                                                   self.channels.prune)

    def on_lost(self, follower: MembershipFollower) -> None:
        """Membership unknown: keep everything as it is (the streams' own errors still count)."""

    async def stop(self) -> None:
        """End relays (the owner-side subscriptions end through the core)."""
        if self._prune_handle is not None:
            self._prune_handle.cancel()
        for relay in list(self.relays):
            relay.end(f"the bus daemon of domain {self.local_domain()} is stopping")
