"""The bus client library against two in-process nodes (see test_bus_server): the direct route
to owners, its membership guard, batching publisher, and the fallback through the local daemon."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from skyge.services.bus.client import BusClient
from skyge.v1 import bus_pb2 as pb
from tests.unit.test_bus_server import run


def client_of(node, direct: bool = True) -> BusClient:
    return BusClient(node.paths.root, direct=direct, follower=node.follower)


@run
async def test_direct_route_publishes_and_subscribes_without_relaying(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b", retain=65536)
    client = client_of(n1)
    try:
        stream = client.subscribe(2, "b", max_batch=1024)
        assert not (await stream.__anext__()).messages  # in place
        publisher = client.publisher(2, "b", max_batch=100)
        for i in range(1000):
            await publisher.publish(b"%d" % i)
        await publisher.flush()
        assert publisher.acked == 1000 and publisher.last_ack.first_sequence == 901
        got = []
        while len(got) < 1000:
            got += (await stream.__anext__()).messages
        assert [m.sequence for m in got] == list(range(1, 1001))
        assert {m.sender_domain for m in got} == {1}
        assert n1.bus.forwarded == 0  # nothing went through node 1's daemon
        await stream.aclose()
        listed = await client.call("ListBuses", pb.ListBusesRequest(domain=2))
        assert [b.name for b in listed.buses] == ["b"]
    finally:
        await client.close()


@run
async def test_direct_streams_end_when_the_owner_leaves(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b")
    client = client_of(n1)
    try:
        stream = client.subscribe(2, "b")
        await stream.__anext__()
        n1.follower.set({1: n1.peer()})
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await asyncio.wait_for(stream.__anext__(), 5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error.value.details().startswith("owner domain 2 left the membership")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.publish(2, "b", [pb.Payload()])
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert "domain 2 is not in the membership (members: 1)" in error.value.details()
    finally:
        await client.close()


@run
async def test_publisher_reports_the_refusal(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b", max_payload=3)
    for direct in (True, False):
        client = client_of(n1, direct)
        try:
            publisher = client.publisher(2, "b")
            await publisher.publish(b"ok")
            await publisher.publish(b"too long")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await asyncio.wait_for(publisher.flush(), 5)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "].data: 8 bytes is over the limit of bus 'b'" in error.value.details()
            with pytest.raises(grpc.aio.AioRpcError):
                await publisher.publish(b"x")
            await asyncio.gather(publisher.close(), return_exceptions=True)
        finally:
            await client.close()


@run
async def test_without_direct_everything_goes_through_the_local_daemon(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b")
    client = client_of(n1, direct=False)
    try:
        ack = await client.publish(2, "b", [pb.Payload(data=b"x")])
        assert ack.first_sequence == 1 and n1.bus.forwarded == 1
    finally:
        await client.close()
