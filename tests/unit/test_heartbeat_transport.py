"""UdpTransport's loop on a real loopback UDP socket with a fake monotonic clock: a stall of the
heartbeat thread (the GIL held by a descheduled thread of the daemon, a loaded CPU) must not
make a link expire while its peer's datagrams keep arriving."""
from __future__ import annotations

import logging
import select
import socket
import threading

from skyge.services.heartbeat.core import HeartbeatConfig, HeartbeatCore, MemberLeft, PathConfig
from skyge.services.heartbeat.transport import SO_TIMESTAMPNS, UdpTransport

MS = 1_000_000
START_NS = 7_000 * 1_000 * MS
KEY = b"cluster-key-for-tests-0123456789"


def _config(domain: int) -> HeartbeatConfig:
    return HeartbeatConfig(netid=1000, domain=domain, key=KEY,
                           paths={1: PathConfig(nic="lo", addresses=(f"127.0.0.{domain}",))})


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _joined_pair(clock: FakeClock) -> tuple[HeartbeatCore, HeartbeatCore]:
    """A local core that has the peer (domain 2) as a member with its link up, at clock time."""
    local = HeartbeatCore(_config(1), incarnation=11, now_ns=clock.now_ns)
    peer = HeartbeatCore(_config(2), incarnation=22, now_ns=clock.now_ns)
    for _, _, data in peer.outgoing(clock.now_ns):  # ANNOUNCE and heartbeat
        local.receive(1, data, "127.0.0.2", clock.now_ns)
    assert [m.node.domain for m in local.members()] == [1, 2]
    return local, peer


def test_a_stall_after_the_drain_does_not_expire_links_whose_datagrams_were_read(caplog):
    """The loop drains the sockets, then ticks. If the thread stalls between the two (longer
    than a link timeout), the tick must judge the links as of the drain: every datagram queued
    until then was read. Judged as of the end of the stall, every peer whose datagrams arrived
    meanwhile (still unread in the socket) expires at once: the node's view drops to itself."""
    clock = FakeClock(START_NS)
    local, peer = _joined_pair(clock)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    emitted: list = []
    transport = UdpTransport(local, threading.Lock(), {1: "lo"}, port, {1: "127.0.0.1"},
                             emitted.extend, logging.getLogger("test"), clock=clock)
    transport._sockets[1] = receiver  # as open() would, without binding to a NIC
    transport._poll_all.register(receiver.fileno(), select.EPOLLIN)
    transport._poll_all.register(transport._wake.read_fd, select.EPOLLIN)
    transport._poll_wake.register(transport._wake.read_fd, select.EPOLLIN)

    clock.now_ns += 10 * MS  # the peer's next heartbeat, queued when the loop turns
    queued = peer.outgoing(clock.now_ns)
    assert queued
    for _, _, data in queued:
        sender.sendto(data, ("127.0.0.1", port))
    accepted = local.stats.accepted
    drain, turn = transport._drain_all, transport._turn

    def drain_then_stall() -> None:
        drain()
        clock.now_ns += 200 * MS  # far beyond any link timeout (the peer keeps sending)

    def one_turn(expire_as_of: int, now_ns: int) -> None:
        transport._stopping = True  # one turn only, even if it raises (the loop logs, goes on)
        assert expire_as_of < now_ns  # expiry as of before the drain, sending as of after it
        turn(expire_as_of, now_ns)

    transport._drain_all, transport._turn = drain_then_stall, one_turn
    try:
        transport._run()
    finally:
        transport.close()
        sender.close()
    assert local.stats.accepted == accepted + len(queued)  # the drain read the peer's heartbeat
    assert not [e for e in emitted if isinstance(e, MemberLeft)]
    assert "heartbeat loop error" not in caplog.text  # (echo hold times from the later clock)
    assert [m.node.domain for m in local.members()] == [1, 2]
