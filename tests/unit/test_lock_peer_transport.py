"""Lock peer transport pieces: in-order exactly-once channels over a lossy, reordering network,
datagram assembly and checks (links.py), signing and a closed socket (peer.py), reference-IP
parsing, the fence command and its lock.cfg keys."""
from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from skyge.services.common.config import ConfigError, Schema, parse_config
from skyge.services.lock.protocol import MS, MemoryStore, Node
from skyge.services.lock.channel import InChannel, OutChannel, pack
from skyge.services.lock.links import Links
from skyge.services.lock.peer import MAC_BYTES, PeerSocket, run_fence, sign, verify
from skyge.services.common.reference import parse_reference_ips
from skyge.services.lock.daemon import FIELDS
from skyge.v1 import lock_peer_pb2 as pp
from tests.unit.lock_timing import COMPACT


def test_channel_delivers_in_order_exactly_once_despite_loss_and_reordering():
    rng = random.Random(7)
    out, inn = OutChannel[int](), InChannel()
    received: list[int] = []
    network: list[tuple[int, int, list[int]]] = []  # (deliver_at, first, messages)
    now = 0
    sent = 0
    while len(received) < 500 and now < 10_000 * MS:
        now += MS
        for _ in range(rng.randrange(0, 4)):
            if sent < 500:
                out.push(sent, 8)
                sent += 1
        batches = []
        first, batch = out.take(now)
        if batch:
            batches += pack(first, batch, 40)
        if out.retransmit_due(now, 15 * MS):
            first, batch = out.retransmit(now)
            batches += pack(first, batch, 40)
        for first, messages in batches:
            if rng.random() < 0.3:
                continue  # lost
            network.append((now + rng.randrange(1, 5) * MS, first, list(messages)))
        due = [d for d in network if d[0] <= now]
        network = [d for d in network if d[0] > now]
        rng.shuffle(due)
        for _, first, messages in due:
            received += inn.accept(first, messages)
        out.ack(inn.acked, now)
    assert received == list(range(500))
    assert out.retransmissions > 0 and not out.unacked


def test_pack_respects_the_budget_and_keeps_numbers_consecutive():
    batch = [(i, 30) for i in range(10)]
    runs = pack(5, batch, 100)
    assert [first for first, _ in runs] == [5, 8, 11, 14]
    assert sum(len(m) for _, m in runs) == 10
    assert pack(1, [("big", 5000)], 100) == [(1, ["big"])]


def test_in_channel_drops_gaps_and_duplicates():
    inn = InChannel()
    assert inn.accept(1, ["a", "b"]) == ["a", "b"]
    assert inn.accept(1, ["a", "b"]) == []
    assert inn.accept(4, ["d"]) == []  # 3 missing: wait for the retransmission
    assert inn.accept(2, ["b", "c", "d"]) == ["c", "d"]
    assert inn.acked == 4


def _node(domain: int, instance: int = 1) -> Node:
    node = Node(domain, instance, netid=7, store=MemoryStore(), expected_nodes=2, timing=COMPACT)
    node.on_view({1, 2}, 0)
    return node


def _exchange(a: Links, b: Links, now: int) -> None:
    for source, target in ((a, b), (b, a)):
        for outgoing in source.flush(now):
            target.receive(pp.PeerDatagram.FromString(outgoing.datagram.SerializeToString()), now)


def test_links_elect_over_datagrams_and_reset_on_a_restart():
    n1, n2 = _node(1), _node(2)
    l1, l2 = Links(n1), Links(n2)
    now = 0
    for _ in range(100):
        now += MS
        n1.tick(now)
        n2.tick(now)
        _exchange(l1, l2, now)
    assert n1.established and n2.member.authority == 1 and n2.member.connected
    # node 2's daemon restarts: a new instance; node 1 resets the channel and its state
    n2b = _node(2, instance=2)
    l2b = Links(n2b)
    for _ in range(100):
        now += MS
        n1.tick(now)
        n2b.tick(now)
        _exchange(l1, l2b, now)
    assert l1.instances[2] == 2 and n2b.member.authority == 1 and n2b.member.connected
    assert any("restarted" in line for line in n1.log)


def test_links_drop_foreign_and_misaddressed_datagrams():
    node = _node(1)
    links = Links(node)
    for datagram in (pp.PeerDatagram(netid=8, from_domain=2, from_instance=1, to_domain=1),
                     pp.PeerDatagram(netid=7, from_domain=2, from_instance=1, to_domain=3),
                     pp.PeerDatagram(netid=7, from_domain=1, from_instance=1, to_domain=1),
                     pp.PeerDatagram(netid=7, from_domain=65, from_instance=1, to_domain=1)):
        links.receive(datagram, MS)
    assert links.dropped == 4 and not node.peers


def test_links_ignore_an_older_instance():
    node = _node(1)
    links = Links(node)
    links.receive(pp.PeerDatagram(netid=7, from_domain=2, from_instance=5, to_domain=1,
                                  beat=pp.Beat(seq=1)), MS)
    links.receive(pp.PeerDatagram(netid=7, from_domain=2, from_instance=4, to_domain=1,
                                  beat=pp.Beat(seq=9)), 2 * MS)
    assert node.peers[2].instance == 5 and node.peers[2].last_seq == 1 and links.dropped == 1


def test_signing_refuses_tampered_and_unsigned_datagrams():
    key = b"k" * 32
    data = sign(key, b"payload")
    assert len(data) == len(b"payload") + MAC_BYTES
    assert verify(key, data) == b"payload"
    assert verify(key, data[:-1] + bytes([data[-1] ^ 1])) is None
    assert verify(key, b"payload") is None
    assert verify(b"x" * 32, data) is None
    assert verify(None, b"plain") == b"plain" and sign(None, b"plain") == b"plain"


def test_sending_after_the_socket_closed_does_nothing():
    """A clean stop closes the UDP socket; anything that still tries to send (a late flush)
    must not raise."""
    sock = PeerSocket(None)
    sock.bind(0, "127.0.0.1")
    sock.set_peer(2, {1: ["127.0.0.1"]}, 9)
    sock.send(2, b"before", True, 0)
    sock.close()
    sock.send(2, b"closed", True, 0)
    assert sock.stats["sent"] == 1 and sock.stats["send_errors"] == 0


def test_the_socket_returns_verified_datagrams_and_counts_the_others():
    key = b"k" * 32
    sock = PeerSocket(key)
    sock.bind(0, "127.0.0.1")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        target = ("127.0.0.1", sock.sock.getsockname()[1])
        sender.sendto(sign(key, b"good"), target)
        sender.sendto(b"forged" + b"\0" * MAC_BYTES, target)
        deadline = time.monotonic() + 10
        received: list = []
        while len(received) < 1 or sock.stats["bad_mac"] < 1:
            assert time.monotonic() < deadline, (received, sock.stats)
            received += sock.receive()
            time.sleep(0.001)
        assert [payload for payload, _ in received] == [b"good"]
    finally:
        sender.close()
        sock.close()


def test_reference_ips_in_the_seed_format():
    assert parse_reference_ips("192.168.1.1:192.168.1.254") == ["192.168.1.1", "192.168.1.254"]
    assert parse_reference_ips(" 10.0.0.1, 10.0.0.2 ") == ["10.0.0.1", "10.0.0.2"]
    assert parse_reference_ips("") == []
    with pytest.raises(ValueError):
        parse_reference_ips("192.168.1.300")


def test_lock_cfg_fence_timeout_defaults_to_60_and_must_be_1_to_600():
    schema = Schema(list(FIELDS))
    values = schema.validate(parse_config('fence_command = "ipmitool power off"; '
                                          'fence_timeout = 5;'))
    assert (values["fence_command"], values["fence_timeout"]) == ("ipmitool power off", 5)
    assert schema.validate([])["fence_timeout"] == 60
    for bad in ("0", "601", '"soon"'):
        with pytest.raises(ConfigError, match=r"fence_timeout: must be .*from 1 to 600"):
            schema.validate(parse_config(f"fence_timeout = {bad};"))


def test_fence_command_runs_with_the_domain_and_a_time_limit(tmp_path):
    out = tmp_path / "fenced"
    done = asyncio.run(run_fence(f'echo "node $SKYGE_FENCE_DOMAIN" > {out}', 7, 5))
    assert done.ok and out.read_text() == "node 7\n"
    failed = asyncio.run(run_fence("echo no switch; exit 3", 7, 5))
    assert not failed.ok and failed.status == 3 and failed.output == "no switch"
    hung = asyncio.run(run_fence("sleep 30", 7, 1))
    assert not hung.ok and hung.timed_out
