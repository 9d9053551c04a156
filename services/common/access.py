"""Who may call what on a node's Unix sockets: root everything, the `skyge` group reads.

- ROOT/run/skyge/NAME.sock, mode 0600 root: every call.
- ROOT/run/skyge/NAME.ro.sock, mode 0660 root:skyge: the read-only calls below (status, list,
  watch); any other answers PERMISSION_DENIED. Made only where the group exists
  (`deploy/install.sh` creates it), with ROOT/run/skyge at 0710 root:skyge, so that members reach
  these sockets and nothing else there. Monitoring then runs without root.

A new RPC is state-changing (root only) until it is listed here; the protos' comments say which
calls are read-only, and a test checks that both agree.
"""
from __future__ import annotations

import grp
from typing import Any
from collections.abc import Awaitable, Callable

import grpc

GROUP = "skyge"
READ_ONLY = frozenset({
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/skyge.v1.Heartbeat/GetIdentity", "/skyge.v1.Heartbeat/ListMembers",
    "/skyge.v1.Heartbeat/ListLinks", "/skyge.v1.Heartbeat/WatchMembership",
    "/skyge.v1.Heartbeat/LookupName", "/skyge.v1.Heartbeat/WatchNames",
    "/skyge.v1.Heartbeat/GetStats",
    "/skyge.v1.Bus/ListBuses", "/skyge.v1.Bus/Subscribe",
    "/skyge.v1.Lock/Inspect", "/skyge.v1.Lock/ListLocks", "/skyge.v1.Lock/GetAuthority",
    "/skyge.v1.Lock/Observe", "/skyge.v1.LockPeer/GetPeerState",
    "/skyge.v1.Ha/Query", "/skyge.v1.Ha/Status", "/skyge.v1.Ha/WatchStatus",
    "/skyge.v1.HaPeer/NodeStatus",
    "/skyge.v1.Emon/ListProbes", "/skyge.v1.Emon/GetCurrent", "/skyge.v1.Emon/GetHistory",
    "/skyge.v1.Emon/Watch", "/skyge.v1.Emon/ListWatermarks", "/skyge.v1.Emon/GetStats",
    "/skyge.v1.Witness/Status",
})


def group_id() -> int | None:
    """The `skyge` group's id, None when the group does not exist here."""
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return None


class ReadOnly(grpc.aio.ServerInterceptor):
    """Lets the read-only calls through; answers any other PERMISSION_DENIED, naming it."""

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in READ_ONLY:
            return handler
        method = details.method

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{method.rsplit('/', 1)[-1]} changes the cluster: root only (the "
                                f"{GROUP} group may only read: status, lists, watches)")

        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[
            (handler.request_streaming, handler.response_streaming)]
        return make(deny, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
