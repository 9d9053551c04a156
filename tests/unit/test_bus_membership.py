"""What the bus daemon relies on in services/common/membership.py: the follower's view against a
scripted heartbeat daemon (a real gRPC server on the node's socket), peers' targets, channels."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import grpc

from skyge.services.common import membership
from skyge.services.common.membership import MembershipFollower, Peer, PeerChannels
from skyge.services.common.paths import NodePaths
from skyge.v1 import common_pb2, heartbeat_pb2 as hb, heartbeat_pb2_grpc


def member(domain: int, local: bool = False, up: tuple[bool, bool] = (True, True)) -> hb.Member:
    return hb.Member(node=common_pb2.NodeId(netid=1000, domain=domain), incarnation=7, local=local,
                     paths=[hb.PeerPath(path=1, nic="eth0", addresses=[f"192.168.1.{10 + domain}"],
                                        up=up[0]),
                            hb.PeerPath(path=2, nic="eth1", addresses=[f"10.0.0.{10 + domain}"],
                                        up=up[1])],
                     grpc_ports={"bus": 7411})


def test_peer_up_paths_are_the_paths_up():
    assert Peer.from_proto(member(2, up=(False, True))).up_paths == {2}
    assert Peer.from_proto(member(2)).up_paths == {1, 2}


def test_the_follower_applies_snapshots_joins_link_changes_and_leaves():
    follower = MembershipFollower(NodePaths.at("/nonexistent"))
    snapshot = hb.MembershipEvent(view_id=1, snapshot=hb.MembershipView(
        view_id=1, members=[member(1, local=True), member(2)]))
    assert follower._apply(snapshot) and follower.local_domain == 1
    assert set(follower.peers) == {1, 2}
    assert follower._apply(hb.MembershipEvent(view_id=2, joined=member(3)))
    link = hb.MembershipEvent(view_id=2, link_changed=hb.Link(peer_domain=3, path=1,
                                                              state=hb.LINK_DOWN))
    assert not follower._apply(link) and follower.peers[3].up_paths == {2}
    assert follower._apply(hb.MembershipEvent(view_id=3, left=hb.MemberLeft(member=member(2))))
    assert set(follower.peers) == {1, 3} and follower.view_id == 3


class ScriptedHeartbeat(heartbeat_pb2_grpc.HeartbeatServicer):
    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()

    async def WatchMembership(self, request, context):
        while True:
            event = await self.events.get()
            if event is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "stopping")
            yield event


def test_follower_against_a_heartbeat_daemon(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(membership, "RECONNECT_MIN_S", 0.01)
    paths = NodePaths.at(tmp_path)
    paths.run.mkdir(parents=True)

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_view(self, follower):
            self.calls.append(f"view {sorted(follower.peers)}")

        def on_lost(self, follower):
            self.calls.append("lost")

    class Broken:
        def on_view(self, follower):
            raise RuntimeError("listener bug")

        def on_lost(self, follower):
            raise RuntimeError("listener bug")

    async def main() -> list[str]:
        script = ScriptedHeartbeat()
        server = grpc.aio.server()
        heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(script, server)
        server.add_insecure_port(f"unix:{paths.socket('heartbeat')}")
        await server.start()
        recorder = Recorder()
        follower = MembershipFollower(paths, listeners=[Broken(), recorder])
        follower.start()
        try:
            assert not await follower.wait_known(0.05)
            await script.events.put(hb.MembershipEvent(view_id=1, snapshot=hb.MembershipView(
                view_id=1, members=[member(1, local=True), member(2)])))
            assert await follower.wait_known(5)
            await script.events.put(hb.MembershipEvent(view_id=2, joined=member(3)))
            await script.events.put(None)  # the stream breaks: view unknown, then re-watched
            for _ in range(200):
                if "lost" in recorder.calls:
                    break
                await asyncio.sleep(0.01)
            assert not follower.known
            await script.events.put(hb.MembershipEvent(view_id=5, snapshot=hb.MembershipView(
                view_id=5, members=[member(1, local=True)])))
            assert await follower.wait_known(5)
            return recorder.calls
        finally:
            await follower.stop()
            await server.stop(0)

    calls = asyncio.run(asyncio.wait_for(main(), 20))
    assert calls == ["view [1, 2]", "view [1, 2, 3]", "lost", "view [1]"]


def test_peer_channels_follow_the_up_paths():
    made: list[FakeChannel] = []

    class FakeChannel:
        def __init__(self, target: str) -> None:
            self.target, self.closed = target, False
            made.append(self)

        async def close(self, grace=None) -> None:
            self.closed = True

    class Follower:
        peers: ClassVar[dict[int, Peer]] = {2: Peer.from_proto(member(2))}

    async def main() -> None:
        channels = PeerChannels(Follower(), "bus",  # type: ignore[arg-type]
                                make_channel=FakeChannel)
        eth0 = channels.channel(2)
        assert channels.channel(2) is eth0 and eth0.target == "ipv4:192.168.1.12:7411"
        assert channels.channel(5) is None
        Follower.peers[2].up_paths = {2}  # eth0 path down: its calls end, new ones use eth1
        eth1 = channels.channel(2)
        await asyncio.sleep(0)
        assert eth1.target == "ipv4:10.0.0.12:7411" and eth0.closed
        Follower.peers[2].up_paths = {1, 2}  # back up: preferred again, eth1 calls undisturbed
        eth0_again = channels.channel(2)
        await asyncio.sleep(0)
        assert eth0_again.target == eth0.target and eth0_again is not eth0 and not eth1.closed
        del Follower.peers[2]  # left the membership
        assert channels.prune() == 2
        await asyncio.sleep(0)
        assert eth1.closed and eth0_again.closed
        await channels.close()

    asyncio.run(main())
