"""The Bus service over real gRPC in one process: two "nodes" (servers on loopback TCP) with a
scripted membership, so routing, relaying and the membership reactions are tested without a lab."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from skyge.services.bus.core import BusCore, BusStore, SequenceStore
from skyge.services.bus.server import BusServer, is_bus_error
from skyge.services.common.membership import Peer, PeerChannels
from skyge.services.common.paths import NodePaths
from skyge.v1 import bus_pb2 as pb, bus_pb2_grpc


class FakeFollower:
    """What BusServer and PeerChannels read of a MembershipFollower."""

    def __init__(self, local: int) -> None:
        self.local_domain = local
        self.known = True
        self.peers: dict[int, Peer] = {}
        self.listeners: list[Any] = []

    def set(self, peers: dict[int, Peer]) -> None:
        self.peers = dict(peers)
        for listener in self.listeners:
            listener.on_view(self)


class Node:
    def __init__(self, domain: int, root: Path) -> None:
        self.domain = domain
        self.paths = NodePaths.at(root / f"n{domain}")
        self.follower = FakeFollower(domain)
        self.core = BusCore(BusStore(root / f"n{domain}" / "etc"),
                            SequenceStore(root / f"n{domain}" / "lib"), domain=lambda: domain)
        self.channels = PeerChannels(self.follower, "bus")  # type: ignore[arg-type]
        self.bus = BusServer(self.core, self.follower, self.channels,  # type: ignore[arg-type]
                             lambda: domain)
        self.follower.listeners.append(self.bus)
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self.bus.handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.paths.run.mkdir(parents=True, exist_ok=True)
        self.server.add_insecure_port(f"unix:{self.paths.socket('bus')}")
        await self.server.start()

    def peer(self) -> Peer:
        return Peer(domain=self.domain, incarnation=1, local=False,
                    addresses={1: ["127.0.0.1"]}, up_paths={1}, grpc_ports={"bus": self.port})

    async def stop(self) -> None:
        await self.bus.stop()
        await self.channels.close()
        if self.server is not None:
            await self.server.stop(0)


async def cluster(tmp_path: Path, count: int = 2) -> list[Node]:
    nodes = [Node(d, tmp_path) for d in range(1, count + 1)]
    for node in nodes:
        await node.start()
    for node in nodes:
        node.follower.set({n.domain: n.peer() for n in nodes})
    return nodes


def stub(node: Node, channel_holder: list) -> Any:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.port}")
    channel_holder.append(channel)
    return bus_pb2_grpc.BusStub(channel)


def run(test):
    """Run an async test with a two-node cluster; everything closed afterwards."""
    def wrapper(tmp_path):
        async def main():
            nodes = await cluster(tmp_path)
            channels: list = []
            try:
                await asyncio.wait_for(test(nodes, lambda n: stub(n, channels)), 20)
            finally:
                for channel in channels:
                    await channel.close()
                for node in nodes:
                    await node.stop()
        asyncio.run(main())
    wrapper.__name__ = test.__name__
    return wrapper


async def first_delivery(call) -> pb.Delivery:
    delivery = await call.read()
    assert isinstance(delivery, pb.Delivery) and not delivery.messages
    return delivery


@run
async def test_every_bus_call_works_through_a_node_that_does_not_own_the_bus(nodes, stub_of):
    n1, n2 = nodes
    s1, s2 = stub_of(n1), stub_of(n2)
    info = await s1.CreateBus(pb.CreateBusRequest(domain=2, name="Mytestmb"))
    assert (info.domain, info.slot, info.type) == (2, 64, "collector")
    assert "Mytestmb" in n2.core.buses and "Mytestmb" not in n1.core.buses
    listed = await s1.ListBuses(pb.ListBusesRequest(domain=2))
    assert [b.name for b in listed.buses] == ["Mytestmb"]
    call = s1.Subscribe(pb.SubscribeRequest(domain=2, name="Mytestmb"))
    await first_delivery(call)
    ack = await s1.Publish(pb.PublishRequest(domain=2, name="Mytestmb",
                                            messages=[pb.Payload(data=b"Hello")]))
    assert (ack.first_sequence, ack.count) == (1, 1)
    await s2.Publish(pb.PublishRequest(domain=0, name="Mytestmb", messages=[pb.Payload(data=b"2")]))
    got = []
    while len(got) < 2:
        got += (await call.read()).messages
    assert [(m.sequence, m.data, m.sender_domain) for m in got] == [(1, b"Hello", 1), (2, b"2", 2)]
    assert (await s2.ListBuses(pb.ListBusesRequest())).buses[0].subscribers == 1
    call.cancel()
    deleted = await s1.DeleteBus(pb.DeleteBusRequest(domain=2, name="Mytestmb"))
    assert deleted.deleted.last_sequence == 2
    init = await s1.InitBuses(pb.InitBusesRequest(domain=2, subsystems=["lock"]))
    assert list(init.created) == ["log.buluos.skyge.com"]


@run
async def test_routing_errors_name_the_field(nodes, stub_of):
    n1, _ = nodes
    s1 = stub_of(n1)
    cases = [
        (pb.ListBusesRequest(domain=65), grpc.StatusCode.INVALID_ARGUMENT,
         "domain: must be 0 (this node) or 1-64, got 65"),
        (pb.ListBusesRequest(domain=9), grpc.StatusCode.NOT_FOUND,
         "domain: domain 9 is not in the membership (members: 1, 2)"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await s1.ListBuses(request)
        assert error.value.code() == code and error.value.details() == message
        assert is_bus_error(error.value)
    with pytest.raises(grpc.aio.AioRpcError) as error:  # the owner's refusal, relayed unchanged
        await s1.CreateBus(pb.CreateBusRequest(domain=2, name="bad name"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("name: must be 1-64 characters")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await s1.Publish(pb.PublishRequest(domain=2, name="nope", messages=[pb.Payload()]))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no bus 'nope' on domain 2" in error.value.details()
    n1.follower.known = False
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await s1.ListBuses(pb.ListBusesRequest(domain=2))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "membership is unknown" in error.value.details()
    n1.follower.known = True


@run
async def test_relayed_requests_are_never_relayed_again(nodes, stub_of):
    n1, _ = nodes
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub_of(n1).ListBuses(pb.ListBusesRequest(domain=2),
                                    metadata=(("skyge-bus-relayed", "1"),))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "serves domain 1, not 2" in error.value.details()


@run
async def test_owner_down_is_unavailable_with_its_domain(nodes, stub_of):
    n1, n2 = nodes
    await n2.server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub_of(n1).ListBuses(pb.ListBusesRequest(domain=2), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details().startswith("cannot reach the bus daemon of domain 2")


@run
async def test_owner_leaving_ends_relayed_streams(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b")
    call = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b"))
    await first_delivery(call)
    n1.follower.set({1: n1.peer()})  # domain 2 left
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details().startswith("owner domain 2 left the membership")


@run
async def test_subscriber_node_leaving_drops_its_subscriptions(nodes, stub_of):
    n1, n2 = nodes
    bus = n2.core.create("b")
    call = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b"))
    await first_delivery(call)
    local = stub_of(n2).Subscribe(pb.SubscribeRequest(name="b"))
    await first_delivery(local)
    assert len(bus.subscribers) == 2
    n2.follower.set({2: n2.peer()})  # domain 1 left, as seen by the owner
    for _ in range(100):
        if len(bus.subscribers) == 1:
            break
        await asyncio.sleep(0.01)
    assert len(bus.subscribers) == 1  # the owner's own subscriber stays
    local.cancel()
    call.cancel()


@run
async def test_delete_ends_streams_with_not_found(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b")
    call = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b"))
    await first_delivery(call)
    await stub_of(n1).DeleteBus(pb.DeleteBusRequest(domain=2, name="b"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "was deleted" in error.value.details()


@run
async def test_resume_and_out_of_range_through_a_relay(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b", retain=4)
    s1 = stub_of(n1)
    for i in range(6):
        await s1.Publish(pb.PublishRequest(domain=2, name="b",
                                           messages=[pb.Payload(data=b"%d" % i)]))
    call = s1.Subscribe(pb.SubscribeRequest(domain=2, name="b", from_sequence=4))
    await first_delivery(call)
    delivery = await call.read()
    assert [m.sequence for m in delivery.messages] == [4, 5, 6]
    call.cancel()
    call = s1.Subscribe(pb.SubscribeRequest(domain=2, name="b", from_sequence=1))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "from_sequence: must be from 3 to 7" in error.value.details()


@run
async def test_publish_stream_mixes_owners_and_keeps_ack_order(nodes, stub_of):
    n1, n2 = nodes
    n1.core.create("here")
    n2.core.create("there")
    call = stub_of(n1).PublishStream()
    requests = [pb.PublishRequest(domain=d, name=n, messages=[pb.Payload(data=b"x")] * k)
                for d, n, k in [(2, "there", 3), (1, "here", 1), (2, "there", 2), (0, "here", 4)]]
    for request in requests:
        await call.write(request)
    await call.done_writing()
    acks = [ack async for ack in call]
    assert [(a.first_sequence, a.count) for a in acks] == [(1, 3), (1, 1), (4, 2), (2, 4)]
    assert await call.code() == grpc.StatusCode.OK
    assert n2.core.buses["there"].last == 5 and n1.core.buses["here"].last == 5


@run
async def test_publish_stream_stops_at_the_first_refused_request(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("there", max_payload=3)
    call = stub_of(n1).PublishStream()
    await call.write(pb.PublishRequest(domain=2, name="there", messages=[pb.Payload(data=b"ok")]))
    await call.write(pb.PublishRequest(domain=2, name="there", messages=[pb.Payload(data=b"long")]))
    await call.write(pb.PublishRequest(domain=2, name="there", messages=[pb.Payload(data=b"no")]))
    acks = []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for ack in call:
            acks.append(ack)
    assert [a.first_sequence for a in acks] == [1]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0].data: 4 bytes is over the limit" in error.value.details()
    assert n2.core.buses["there"].last == 1  # the request after the refused one is not published


@run
async def test_slow_subscriber_through_a_relay_is_told_its_gap(nodes, stub_of):
    n1, n2 = nodes
    bus = n2.core.create("b", retain=16)
    call = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b", max_batch=1024))
    await first_delivery(call)
    total = 20000
    for _ in range(0, total, 500):  # published faster than anyone reads
        bus.publish([pb.Payload(data=b"x" * 200)] * 500, sender=2)
        await asyncio.sleep(0)
    received = missed = 0
    last = 0
    while received + missed < total:
        delivery = await asyncio.wait_for(call.read(), 5)
        missed += delivery.missed
        for message in delivery.messages:
            assert message.sequence == last + 1 + (delivery.missed if message is
                                                   delivery.messages[0] else 0)
            last = message.sequence
        received += len(delivery.messages)
    assert received + missed == total and missed > 0
    call.cancel()


@run
async def test_a_path_going_down_ends_relayed_streams_on_it(nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b")
    two_paths = n2.peer()
    two_paths.addresses = {1: ["127.0.0.1"], 2: ["127.0.0.1"]}
    two_paths.up_paths = {1, 2}
    n1.follower.set({1: n1.peer(), 2: two_paths})
    call = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b"))
    await first_delivery(call)
    two_paths.up_paths = {2}  # path 1 down, the peer still a member
    n1.bus.on_link(n1.follower)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), 5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the heartbeat path it used went down" in error.value.details()
    again = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b"))  # over path 2
    await first_delivery(again)
    again.cancel()


@run
async def test_a_flow_controlled_subscriber_through_a_relay_gets_a_burst_whole_and_in_order(
        nodes, stub_of):
    """The publisher (through n1's relay) is slowed to the subscriber's pace: no gap."""
    n1, n2 = nodes
    n2.core.create("b", retain=16)
    call = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b", max_batch=64,
                                                     flow_control=True))
    await first_delivery(call)
    total = 5000

    async def burst() -> None:
        publish = stub_of(n1).PublishStream()
        for start in range(0, total, 10):
            await publish.write(pb.PublishRequest(domain=2, name="b", messages=[
                pb.Payload(data=str(i).encode()) for i in range(start, start + 10)]))
        await publish.done_writing()
        acks = [ack async for ack in publish]
        assert sum(ack.count for ack in acks) == total

    publisher = asyncio.create_task(burst())
    received: list[bytes] = []
    while len(received) < total:
        delivery = await asyncio.wait_for(call.read(), 10)
        assert delivery.missed == 0
        received += [m.data for m in delivery.messages]
    await publisher
    assert received == [str(i).encode() for i in range(total)]
    call.cancel()


@run
async def test_a_subscriber_that_stops_reading_is_dropped_and_the_publisher_goes_on(
        nodes, stub_of):
    n1, n2 = nodes
    n2.core.create("b", retain=8)
    dead = stub_of(n1).Subscribe(pb.SubscribeRequest(domain=2, name="b", flow_control=True))
    await first_delivery(dead)  # then it never reads again
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # more than the bus retains at once
        await stub_of(n2).Publish(pb.PublishRequest(domain=2, name="b", messages=[
            pb.Payload(data=b"x")] * 9), timeout=15)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for _ in range(60):  # far more than gRPC buffers: the owner's writes to it block
        ack = await stub_of(n2).Publish(pb.PublishRequest(domain=2, name="b", messages=[
            pb.Payload(data=b"x" * 60000)] * 4), timeout=15)
        assert ack.count == 4
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while True:
            await asyncio.wait_for(dead.read(), 15)
    assert ended.value.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED)
