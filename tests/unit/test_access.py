"""Read-only calls for the skyge group: the list in services/common/access.py, the protos'
comments and the services' real methods agree, and any other call is refused on that socket."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from skyge.services.common.access import READ_ONLY, ReadOnly
from skyge.v1 import ha_pb2, ha_pb2_grpc

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "skyge" / "v1"
MARK = "// Read-only:"


def marked_in_protos() -> tuple[set[str], set[str]]:
    """(every rpc, the rpcs whose comment says read-only), as full method names."""
    every, marked = set(), set()
    for proto in PROTOS.glob("*.proto"):
        service, previous = "", ""
        for line in proto.read_text().splitlines():
            if match := re.match(r"^service (\w+) \{", line):
                service = match.group(1)
            elif match := re.match(r"^\s*rpc (\w+)\(", line):
                name = f"/skyge.v1.{service}/{match.group(1)}"
                every.add(name)
                if previous.strip().startswith(MARK):
                    marked.add(name)
            previous = line
    return every, marked


def test_the_protos_comments_mark_exactly_the_read_only_calls():
    every, marked = marked_in_protos()
    ours = {m for m in READ_ONLY if m.startswith("/skyge.")}
    assert ours <= every, f"not rpcs of the protos: {sorted(ours - every)}"
    assert marked == ours


class Ha(ha_pb2_grpc.HaServicer):
    async def Status(self, request, context):
        return ha_pb2.StatusResponse()

    async def StopAll(self, request, context):
        raise AssertionError("a state-changing call reached the servicer")


def test_the_read_only_socket_serves_reads_and_refuses_changes(tmp_path):
    async def main() -> None:
        server = grpc.aio.server(interceptors=[ReadOnly()])
        ha_pb2_grpc.add_HaServicer_to_server(Ha(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(f"unix:{tmp_path / 'ro.sock'}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'ro.sock'}") as channel:
                await ha_pb2_grpc.HaStub(channel).Status(ha_pb2.StatusRequest(), timeout=5)
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await ha_pb2_grpc.HaStub(channel).StopAll(ha_pb2.StopAllRequest(), timeout=5)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "StopAll changes the cluster: root only" in refused.value.details()
        finally:
            await server.stop(None)

    asyncio.run(main())
