"""The heartbeat datagram: round trips, every refusal reason, fuzzing, replay guard, cost."""
from __future__ import annotations

import random
import time

import pytest

from skyge.services.heartbeat import wire
from skyge.services.heartbeat.names import Publication, Scope
from skyge.services.heartbeat.wire import Kind, WireError

KEY = b"k" * 32
NETID = 1000
NODE = wire.NodeInfo((wire.PathInfo(1, "eth0", ("10.1.0.3", "fd00::3")),
                      wire.PathInfo(2, "bond0", ("192.168.7.3",))),
                     (("bus", 7101), ("heartbeat", 7100)))


def heartbeat(key: bytes | None = KEY, **overrides) -> bytes:
    fields = dict(kind=Kind.HEARTBEAT, netid=NETID, domain=3, path=1, incarnation=1_700_000_000,
                  sequence=42, send_time_ns=123_456_789, interval_ns=6_666_667, key=key,
                  payload=b"", echo_domain=2, echo_send_time_ns=111, echo_hold_ns=222,
                  want_domain=1)
    fields.update(overrides)
    return wire.encode(**fields)


def publications(count: int, value_bytes: int = 10) -> list[Publication]:
    return [Publication(7, i, i + 1, Scope.CLUSTER, bytes([i % 256]) * value_bytes, (NETID, 3),
                        i + 1, 1_700_000_000_000_000_000 + i) for i in range(count)]


def announces(pubs: list[Publication], key: bytes | None = KEY) -> list[bytes]:
    return [heartbeat(key, kind=Kind.ANNOUNCE, payload=payload, sequence=i)
            for i, payload in enumerate(wire.encode_announce_payloads(NODE, 9, pubs))]


def reason(data: bytes, key: bytes | None = KEY, netid: int = NETID) -> str:
    with pytest.raises(WireError) as refused:
        wire.decode(data, key, netid)
    assert refused.value.reason in wire.REASONS
    return refused.value.reason


def test_heartbeat_round_trip_signed_and_unsigned():
    for key, size in ((KEY, wire.HEADER_BYTES + wire.MAC_BYTES), (None, wire.HEADER_BYTES)):
        data = heartbeat(key)
        assert len(data) == size
        d = wire.decode(data, key, NETID)
        assert (d.kind, d.netid, d.domain, d.path) == (Kind.HEARTBEAT, NETID, 3, 1)
        assert (d.incarnation, d.sequence, d.send_time_ns) == (1_700_000_000, 42, 123_456_789)
        assert d.interval_ns == 6_667_000  # rounded up to the µs: never expected too early
        assert (d.echo_domain, d.echo_send_time_ns, d.echo_hold_ns) == (2, 111, 222)
        assert d.want_domain == 1 and d.announce is None


def test_announce_round_trip_carries_node_info_and_names():
    pubs = publications(5)
    [data] = announces(pubs)
    d = wire.decode(data, KEY, NETID)
    assert d.kind is Kind.ANNOUNCE
    assert d.announce.node == NODE
    assert d.announce.node.nic(2) == "bond0" and d.announce.node.nic(5) is None
    assert (d.announce.names_version, d.announce.chunk_index, d.announce.chunk_count) == (9, 0, 1)
    assert list(d.announce.publications) == pubs


def test_full_name_set_is_chunked_into_unfragmented_datagrams():
    pubs = publications(256, value_bytes=256)
    datagrams = announces(pubs)
    assert len(datagrams) > 40
    assert all(len(data) <= wire.MAX_DATAGRAM_BYTES for data in datagrams)
    decoded = [wire.decode(data, KEY, NETID).announce for data in datagrams]
    assert [a.chunk_index for a in decoded] == list(range(len(datagrams)))
    assert {a.chunk_count for a in decoded} == {len(datagrams)}
    assert [p for a in decoded for p in a.publications] == pubs
    assert announces([])  # an empty set is still one announce


def test_the_largest_node_info_leaves_room_for_the_largest_publication():
    paths = tuple(wire.PathInfo(p, "x" * wire.MAX_NIC_NAME_BYTES,
                                tuple(f"fd00::{p}:{i}" for i in range(wire.MAX_ADDRESSES_PER_PATH)))
                  for p in range(1, wire.MAX_PATHS + 1))
    ports = tuple((f"{i}" * 16, 7000 + i) for i in range(wire.MAX_GRPC_PORTS))
    payloads = wire.encode_announce_payloads(wire.NodeInfo(paths, ports), 1,
                                             publications(3, value_bytes=256))
    assert all(wire.HEADER_BYTES + len(p) + wire.MAC_BYTES <= wire.MAX_DATAGRAM_BYTES
               for p in payloads)


@pytest.mark.parametrize("bad, message", [
    (lambda: wire.PathInfo(9, "eth0"), "path: must be 1..8"),
    (lambda: wire.PathInfo(1, "eth 0"), "nic"),
    (lambda: wire.PathInfo(1, "eth0", ("10.0.0.300",)), "addresses of path 1"),
    (lambda: wire.PathInfo(1, "eth0", ("10.0.0.1",) * 5), "at most 4"),
    (lambda: wire.NodeInfo((wire.PathInfo(1, "a"), wire.PathInfo(1, "b"))), "paths"),
    (lambda: wire.NodeInfo((), (("bus", 0),)), "port of bus must be 1..65535"),
])
def test_node_info_validation_names_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_each_bad_datagram_is_refused_with_its_own_reason():
    good = heartbeat()
    assert reason(b"") == "truncated"
    assert reason(good[:2]) == "truncated"
    assert reason(b"XX" + good[2:]) == "bad_magic"
    assert reason(good[:2] + b"\x02" + good[3:]) == "bad_version"
    assert reason(good[:wire.HEADER_BYTES - 1]) == "truncated"
    assert reason(good, netid=1001) == "foreign_netid"
    assert reason(heartbeat(None)) == "unsigned"
    assert reason(good, key=None) == "unexpected_signature"
    assert reason(good, key=b"j" * 32) == "bad_signature"
    assert reason(good[:-1] + bytes([good[-1] ^ 1])) == "bad_signature"
    assert reason(good[:wire.HEADER_BYTES] + good[-wire.MAC_BYTES + 2:]) == "truncated"
    unsigned = heartbeat(None)
    for malformed in (heartbeat(None, kind=9), heartbeat(None, path=0), heartbeat(None, path=9),
                      heartbeat(None, domain=0), heartbeat(None, domain=65),
                      heartbeat(None, echo_domain=65), heartbeat(None, want_domain=99),
                      heartbeat(None, interval_ns=50_000), heartbeat(None, interval_ns=11 * 10**9),
                      unsigned[:4] + b"\x80" + unsigned[5:],  # unknown flag
                      unsigned + b"\x00",  # a heartbeat has no payload
                      heartbeat(None, kind=Kind.ANNOUNCE, payload=b"\x00\x01"),
                      announces(publications(2), key=None)[0][:-1],
                      announces(publications(2), key=None)[0] + b"\x00"):
        assert reason(malformed, key=None) == "malformed"


def test_announce_with_invalid_publication_is_malformed():
    [data] = announces(publications(1), key=None)
    # The publication's `lower` sits 32 bytes before its 10-byte value at the end: make it > upper.
    at = len(data) - 10 - 30 + 4
    broken = data[:at] + (0xFFFF_FFFF).to_bytes(4, "big") + data[at + 4:]
    assert reason(broken, key=None) == "malformed"


def test_fuzz_random_bytes_and_mutations_only_ever_raise_wire_error():
    rng = random.Random(20261124)
    seeds = [heartbeat(), heartbeat(None), *announces(publications(20)),
             *announces(publications(20), key=None)]
    accepted = 0
    for i in range(6000):
        if i % 3 == 0:
            data = rng.randbytes(rng.randrange(0, 200))
        else:
            buf = bytearray(rng.choice(seeds))
            action = rng.randrange(4)
            if action == 0:
                for _ in range(rng.randint(1, 6)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif action == 1:
                del buf[rng.randrange(len(buf)):]
            elif action == 2:
                buf += rng.randbytes(rng.randint(1, 40))
            else:
                buf[rng.randrange(3, len(buf))] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        for key in (KEY, None):
            try:
                wire.decode(data, key, NETID)
                accepted += 1
            except WireError as error:
                assert error.reason in wire.REASONS
    # Unsigned mutations can still be valid datagrams; signed ones never are.
    assert accepted > 0


def test_signed_mutations_are_never_accepted():
    rng = random.Random(5)
    seeds = [heartbeat(), *announces(publications(3))]
    for _ in range(3000):
        buf = bytearray(rng.choice(seeds))
        at = rng.randrange(len(buf))
        buf[at] ^= 1 << rng.randrange(8)
        with pytest.raises(WireError):
            wire.decode(bytes(buf), KEY, NETID)


def test_replay_guard_window():
    guard = wire.ReplayGuard()
    assert guard.accept(10, 5)
    assert not guard.accept(10, 5)  # duplicate
    assert guard.accept(10, 7)
    assert guard.accept(10, 6)  # reordered, inside the window
    assert not guard.accept(10, 6)
    assert guard.accept(10, 100)
    assert guard.accept(10, 100 - wire.REPLAY_WINDOW + 1)
    assert not guard.accept(10, 100 - wire.REPLAY_WINDOW)  # too old to tell: refused
    assert guard.accept(10, 200)  # a jump beyond the window clears it
    assert not guard.accept(10, 200)
    assert guard.accept(10, 199)


def test_replay_guard_incarnations():
    guard = wire.ReplayGuard()
    assert guard.accept(10, 1000)
    assert guard.accept(11, 1)  # restarted: its sequence starts over
    assert not guard.accept(10, 1001)  # the old life replayed
    assert guard.accept(11, 2)


def test_next_incarnation_never_goes_back():
    assert wire.next_incarnation(1_000) == 1_000
    assert wire.next_incarnation(2_000, previous=1_000) == 2_000
    assert wire.next_incarnation(500, previous=1_000) == 1_001  # the clock was stepped back
    with pytest.raises(ValueError, match="incarnation"):
        wire.next_incarnation(0)


def test_heartbeat_encode_decode_cost():
    """The daemon handles ~1000 datagrams/s: encode + HMAC + decode must stay in the µs."""
    count = 5000
    started = time.perf_counter()
    for sequence in range(count):
        wire.decode(heartbeat(sequence=sequence), KEY, NETID)
    per_datagram_us = (time.perf_counter() - started) / count * 1e6
    assert per_datagram_us < 60, per_datagram_us  # measured ~6 µs; generous for loaded CI
