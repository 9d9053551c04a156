"""The bus core without gRPC: validation, numbering, retention, exact gaps, persistence."""
from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from skyge.services.bus import core
from skyge.services.bus.core import (BusCore, BusError, BusStore, Closed, SequenceStore,
                                     encode_delivery)
from skyge.v1 import bus_pb2 as pb


def make_core(root: Path, **options) -> BusCore:
    return BusCore(BusStore(root / "etc" / "bus"), SequenceStore(root / "lib" / "bus"),
                   domain=lambda: 1, **options)


def payloads(*texts: str | bytes, content_type: str = "") -> list[pb.Payload]:
    return [pb.Payload(data=t.encode() if isinstance(t, str) else t, content_type=content_type)
            for t in texts]


def decode(data: bytes) -> pb.Delivery:
    return pb.Delivery.FromString(data)


@pytest.fixture
def bus_core(tmp_path: Path) -> BusCore:
    return make_core(tmp_path)


def run(coro):
    return asyncio.run(coro)


# ---- validation

@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "caf\u00e9", "a/b", "../etc", "a\n"])
def test_bad_names_are_refused_naming_the_field_and_range(bus_core, name):
    with pytest.raises(BusError) as error:
        bus_core.create(name)
    assert error.value.code == "INVALID_ARGUMENT"
    assert error.value.message.startswith("name: must be 1-64 characters of A-Z a-z 0-9 . _ -")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"slot": 1024}, "slot: must be from 1 to 1023, got 1024"),
    ({"retain": 65537}, "retain_messages: must be from 1 to 65536, or 0 for the default"),
    ({"max_payload": (1 << 20) + 1}, "max_payload_bytes: must be from 1 to 1048576"),
])
def test_out_of_range_settings_are_refused(bus_core, kwargs, fragment):
    with pytest.raises(BusError) as error:
        bus_core.create("ok", **kwargs)
    assert error.value.code == "INVALID_ARGUMENT" and fragment in error.value.message


def test_a_domain_is_0_for_this_node_or_1_to_64():
    assert core.check_domain(0) == 0 and core.check_domain(64) == 64
    with pytest.raises(BusError, match=re.escape("domain: must be 0 (this node) or 1-64, got 65")):
        core.check_domain(65)


def test_duplicates_and_taken_slots_are_refused(bus_core):
    bus_core.create("Mytestmb")
    with pytest.raises(BusError) as error:
        bus_core.create("Mytestmb")
    assert error.value.code == "ALREADY_EXISTS" and "slot 64" in error.value.message
    with pytest.raises(BusError) as error:
        bus_core.create("other", slot=64)
    assert error.value.code == "ALREADY_EXISTS" and "'Mytestmb'" in error.value.message


def test_slots_are_assigned_from_64_and_reused(bus_core):
    assert [bus_core.create(n).definition.slot for n in "abc"] == [64, 65, 66]
    bus_core.delete("b")
    assert bus_core.create("d").definition.slot == 65


def test_running_out_of_slots(bus_core, monkeypatch):
    monkeypatch.setattr(core, "SLOT_MAX", 65)
    bus_core.create("a"), bus_core.create("b")
    with pytest.raises(BusError) as error:
        bus_core.create("c")
    assert error.value.code == "RESOURCE_EXHAUSTED"


def test_payload_limits_refuse_the_whole_request(bus_core):
    async def go():
        bus = bus_core.create("small", max_payload=4)
        with pytest.raises(BusError) as error:
            bus.publish(payloads("ok", "too long"), sender=1)
        assert error.value.code == "INVALID_ARGUMENT"
        assert error.value.message == ("messages[1].data: 8 bytes is over the limit of bus "
                                       "'small', 0-4 bytes (max_payload_bytes)")
        assert bus.last == 0  # nothing published
        with pytest.raises(BusError, match="messages: must be 1-1024 per request, got 0"):
            bus.publish([], sender=1)
        with pytest.raises(BusError, match="messages: must be 1-1024 per request, got 1025"):
            bus.publish(payloads(*["x"] * 1025), sender=1)
        with pytest.raises(BusError, match="content_type: must be 0-128 ASCII characters"):
            bus.publish(payloads("x", content_type="t" * 129), sender=1)
        assert bus.publish(payloads("abcd", ""), sender=1) == 1
    run(go())


def test_unknown_bus_is_not_found(bus_core):
    with pytest.raises(BusError) as error:
        bus_core.get("nope")
    assert error.value.code == "NOT_FOUND"
    assert "no bus 'nope' on domain 1" in error.value.message


# ---- numbering, order, delivery

def test_consecutive_sequences_and_delivery_encoding(bus_core):
    async def go():
        bus = bus_core.create("b")
        sub = bus_core.subscribe("b", 0, 0, origin=3)
        assert bus.publish(payloads("a", "b"), sender=2, time_ns=5) == 1
        assert bus.publish(payloads("c", content_type="text/plain"), sender=3) == 3
        delivery = decode(await sub.next_delivery())
        assert [m.sequence for m in delivery.messages] == [1, 2, 3]
        assert [m.data for m in delivery.messages] == [b"a", b"b", b"c"]
        assert delivery.messages[0].sender_domain == 2 and delivery.messages[0].time_unix_ns == 5
        assert delivery.messages[2].content_type == "text/plain"
        assert delivery.missed == 0
        info = bus.info(1)
        assert (info.last_sequence, info.oldest_sequence, info.subscribers) == (3, 1, 1)
    run(go())


def test_max_batch_and_byte_cap_split_deliveries(bus_core, monkeypatch):
    async def go():
        bus = bus_core.create("b")
        sub = bus_core.subscribe("b", 0, 2, origin=1)
        bus.publish(payloads(*"abcde"), sender=1)
        sizes = [len(decode(await sub.next_delivery()).messages) for _ in range(3)]
        assert sizes == [2, 2, 1]
        monkeypatch.setattr(core, "DELIVERY_MAX_BYTES", 10)
        big = bus_core.subscribe("b", 1, 1024, origin=1)
        entries, _missed, nxt = bus.take(1, 1024, max_bytes=10)
        assert len(entries) == 1 and nxt == 2  # always at least one message
        assert big.next == 1
    run(go())


def test_subscriber_waits_and_wakes(bus_core):
    async def go():
        bus = bus_core.create("b")
        sub = bus_core.subscribe("b", 0, 0, origin=1)
        waiter = asyncio.create_task(sub.next_delivery())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        bus.publish(payloads("x"), sender=1)
        delivery = decode(await asyncio.wait_for(waiter, 1))
        assert [m.data for m in delivery.messages] == [b"x"]
    run(go())


def test_slow_subscriber_is_told_exactly_how_many_it_missed(bus_core):
    async def go():
        bus = bus_core.create("b", retain=8)
        sub = bus_core.subscribe("b", 0, 1024, origin=1)
        for i in range(30):
            bus.publish(payloads(str(i)), sender=1)
        delivery = decode(await sub.next_delivery())
        assert delivery.missed == 22
        assert [m.sequence for m in delivery.messages] == list(range(23, 31))
        assert delivery.messages[0].sequence - delivery.missed == 1
        # the owner counts it for the bus (ListBuses, the skyge_bus_missed_messages metric)
        info = bus.info(1)
        assert (info.published, info.missed) == (30, 22)
        # memory: the ring never holds more than retain entries
        assert sum(e is not None for e in bus._ring) == 8
    run(go())


def test_byte_cap_shrinks_the_window_but_keeps_the_last_message(tmp_path):
    async def go():
        bus_core = make_core(tmp_path, max_retained_bytes=1000)
        bus = bus_core.create("b", retain=1000)
        for _ in range(50):
            bus.publish(payloads(b"x" * 100), sender=1)
        assert bus.retained_bytes <= 1000
        assert bus.last == 50 and 40 < bus.oldest <= 50
        sub = bus_core.subscribe("b", bus.oldest, 1024, origin=1)
        delivery = decode(await sub.next_delivery())
        assert delivery.messages[-1].sequence == 50 and delivery.missed == 0
        bus.publish(payloads(b"y" * 5000), sender=1)  # alone over the cap: still retained
        assert bus.oldest == 51
    run(go())


def test_a_subscription_starts_only_at_a_retained_or_the_next_sequence(bus_core):
    async def go():
        bus = bus_core.create("b", retain=4)
        with pytest.raises(BusError) as error:
            bus_core.subscribe("b", 2, 0, origin=1)
        assert error.value.code == "OUT_OF_RANGE"
        assert "from_sequence: must be from 1 to 1" in error.value.message
        assert bus_core.subscribe("b", 1, 0, origin=1).next == 1  # = last + 1
        for i in range(10):
            bus.publish(payloads(str(i)), sender=1)
        for bad, why in ((6, "no longer retained"), (12, "not published yet")):
            with pytest.raises(BusError) as error:
                bus_core.subscribe("b", bad, 0, origin=1)
            assert error.value.code == "OUT_OF_RANGE"
            assert "must be from 7 to 11" in error.value.message and why in error.value.message
        sub = bus_core.subscribe("b", 9, 0, origin=1)
        delivery = decode(await sub.next_delivery())
        assert [m.sequence for m in delivery.messages] == [9, 10]
        with pytest.raises(BusError, match="max_batch: must be from 1 to 1024"):
            bus_core.subscribe("b", 0, 2000, origin=1)
    run(go())


def test_delete_ends_subscriptions_with_not_found(bus_core):
    async def go():
        bus_core.create("b")
        sub = bus_core.subscribe("b", 0, 0, origin=1)
        waiter = asyncio.create_task(sub.next_delivery())
        await asyncio.sleep(0)
        info = bus_core.delete("b")
        assert info.name == "b"
        with pytest.raises(Closed) as closed:
            await asyncio.wait_for(waiter, 1)
        assert closed.value.code == "NOT_FOUND" and "was deleted" in closed.value.message
        with pytest.raises(BusError):
            bus_core.delete("b")
    run(go())


def test_encode_delivery_matches_protobuf():
    entries = [core.encode_entry(7, 2, 9, b"hi", "t"), core.encode_entry(8, 2, 9, b"", "")]
    expected = pb.Delivery(messages=[
        pb.BusMessage(sequence=7, sender_domain=2, time_unix_ns=9, data=b"hi", content_type="t"),
        pb.BusMessage(sequence=8, sender_domain=2, time_unix_ns=9)], missed=300)
    assert decode(encode_delivery(entries, 300)) == expected
    assert encode_delivery([], 0) == b""
    assert core.varint(300) == b"\xac\x02"


# ---- persistence

def test_definitions_survive_a_restart_in_the_seed_layout(tmp_path):
    async def go():
        first = make_core(tmp_path)
        bus = first.create("Mytestmb", retain=16, max_payload=100)
        bus.publish(payloads("a", "b", "c"), sender=1)
        slots = tmp_path / "etc" / "bus" / "slots"
        assert os.readlink(slots / "64") == "../buses/Mytestmb"
        text = (slots / "64" / "service.cfg").read_text()
        assert text.startswith('type = "collector";\nslot = 64;\nmagic = ')
        second = make_core(tmp_path)
        second.load()
        again = second.get("Mytestmb")
        d = again.definition
        assert (d.slot, d.retain_messages, d.max_payload_bytes, d.magic) == \
            (64, 16, 100, bus.definition.magic)
        # numbers are never reused: the restarted owner continues above its reserve
        first_again = again.publish(payloads("d"), sender=1)
        assert first_again > 3
        assert again.oldest == first_again  # nothing retained across the restart
    run(go())


def test_sequences_are_not_reused_after_many_restarts(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "SEQUENCE_STEP", 4)

    async def go():
        seen: list[int] = []
        for _ in range(5):
            c = make_core(tmp_path)
            c.load()
            bus = c.buses.get("b") or c.create("b")
            for _ in range(7):  # more than the step: marks are written while publishing
                seen.append(bus.publish(payloads("x"), sender=1))
            await asyncio.sleep(0.05)  # let background mark writes land
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
    run(go())


def test_recreated_bus_starts_at_one_with_a_new_magic(bus_core):
    async def go():
        bus = bus_core.create("b")
        bus.publish(payloads("x", "y"), sender=1)
        magic = bus.definition.magic
        bus_core.delete("b")
        again = bus_core.create("b")
        assert again.publish(payloads("z"), sender=1) == 1
        assert again.definition.magic != magic
    run(go())


def test_bad_files_are_skipped_not_fatal(tmp_path, caplog):
    store_dir = tmp_path / "etc" / "bus" / "buses"
    for name, text in {"good": 'type = "collector";\nslot = 70;\nmagic = 5;\n',
                       "badslot": "slot = 5000;\n", "badtype": 'type = "x"; slot = 71;',
                       "garbage": "slot = = ;", "dup": "slot = 70;",
                       "bad name!": "slot = 72;"}.items():
        (store_dir / name).mkdir(parents=True)
        (store_dir / name / "service.cfg").write_text(text)
    (tmp_path / "etc" / "bus" / "slots").mkdir()
    (tmp_path / "etc" / "bus" / "slots" / "99").symlink_to("../buses/gone")
    c = make_core(tmp_path)
    c.load()
    assert set(c.buses) in ({"good"}, {"dup"})  # one of the two claiming slot 70
    assert not (tmp_path / "etc" / "bus" / "slots" / "99").is_symlink()
    assert "ignoring bus definition" in caplog.text


def test_init_creates_the_seeds_standard_buses_once_per_subsystem(bus_core):
    buses, created = bus_core.init(())
    names = [b.name for b in buses]
    assert "log.buluos.skyge.com" in names and "cpu_load.emon.skyge.com" in names
    assert "cmd.launcher.ha.skyge.com" in names and len(created) == len(names) == 18
    assert all(1 <= b.definition.slot <= 63 for b in buses)
    assert set(core.LOG_BUSES.values()) <= set(names)
    again, created_again = bus_core.init(["lock"])
    assert [b.name for b in again] == ["log.buluos.skyge.com"] and created_again == []
    with pytest.raises(BusError, match="subsystems: 'nope' is not one of"):
        bus_core.init(["nope"])


def test_standard_slot_taken_by_a_user_bus(bus_core):
    bus_core.create("mine", slot=3)
    buses, _ = bus_core.init(["lock"])
    assert buses[0].definition.slot not in (3,) and buses[0].definition.slot < 64


# ---- flow control (SubscribeRequest.flow_control)

def test_a_flow_controlled_subscriber_holds_back_a_publisher_that_would_overrun_it(bus_core):
    async def go():
        bus = bus_core.create("b", retain=8)
        lossy = bus_core.subscribe("b", 0, 1024, origin=2)
        flow = bus_core.subscribe("b", 0, 1024, origin=3, flow=True)
        for i in range(8):
            bus.publish(payloads(str(i)), sender=1)
        with pytest.raises(core.FlowBlocked) as blocked:
            bus.publish(payloads("8"), sender=1)
        assert blocked.value.code == "RESOURCE_EXHAUSTED" and blocked.value.subscriber is flow
        assert bus.last == 8  # nothing of the refused request was numbered
        delivery = decode(await flow.next_delivery())
        assert [m.sequence for m in delivery.messages] == list(range(1, 9))
        bus.publish(payloads("8"), sender=1)  # it took them: room again
        assert decode(await lossy.next_delivery()).missed == 1  # the default stays lossy
    run(go())


def test_a_flow_controlled_burst_delivers_every_message_in_order(bus_core):
    async def go():
        bus = bus_core.create("b", retain=16)
        flow = bus_core.subscribe("b", 0, 4, origin=3, flow=True)

        async def publish_all() -> None:
            for i in range(500):
                await bus.publish_waiting(payloads(str(i)), sender=1, wait_s=10)

        publisher = asyncio.create_task(publish_all())
        received: list[bytes] = []
        while len(received) < 500:
            delivery = decode(await asyncio.wait_for(flow.next_delivery(), 10))
            assert delivery.missed == 0
            received += [m.data for m in delivery.messages]
            await asyncio.sleep(0)  # a slow reader: the publisher waits for it
        await publisher
        assert received == [str(i).encode() for i in range(500)]
        assert bus.missed == 0
    run(go())


def test_the_byte_cap_too_waits_for_a_flow_controlled_subscriber(tmp_path):
    async def go():
        bus_core = make_core(tmp_path, max_retained_bytes=1000)
        bus = bus_core.create("b", retain=1000)
        flow = bus_core.subscribe("b", 0, 1024, origin=3, flow=True)
        with pytest.raises(core.FlowBlocked):
            for _ in range(50):
                bus.publish(payloads(b"x" * 100), sender=1)
        assert bus.retained_bytes <= 1000
        first = decode(await flow.next_delivery()).messages[0].sequence
        assert first == 1  # nothing it had not taken was dropped
    run(go())


def test_a_stalled_flow_controlled_subscriber_is_dropped_and_does_not_block_the_others(bus_core):
    async def go():
        bus = bus_core.create("b", retain=4)
        dead = bus_core.subscribe("b", 0, 1024, origin=3, flow=True)
        dropped: list[bool] = []
        dead.on_drop = lambda: dropped.append(True)
        alive = bus_core.subscribe("b", 0, 1024, origin=2, flow=True)
        for i in range(4):
            bus.publish(payloads(str(i)), sender=1)
        decode(await alive.next_delivery())  # the live one reads; the dead one never does
        loop = asyncio.get_running_loop()
        began = loop.time()
        await bus.publish_waiting(payloads("4"), sender=1, wait_s=10, stall_s=0.3)
        assert 0.2 < loop.time() - began < 5 and dropped == [True]
        with pytest.raises(Closed) as ended:
            await dead.next_delivery()
        assert ended.value.code == "ABORTED" and "took no message" in ended.value.message
        assert [m.data for m in decode(await alive.next_delivery()).messages] == [b"4"]
    run(go())


def test_a_publish_that_waits_too_long_is_refused_with_resource_exhausted(bus_core):
    async def go():
        bus = bus_core.create("b", retain=2)
        slow = bus_core.subscribe("b", 0, 1024, origin=3, flow=True)
        bus.publish(payloads("a", "b"), sender=1)
        with pytest.raises(core.FlowBlocked):
            await bus.publish_waiting(payloads("c"), sender=1, wait_s=0.1, stall_s=60)
        assert slow in bus.flow  # alive (not stalled long enough): kept
    run(go())
