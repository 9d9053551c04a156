"""The bus core: buses owned by this node, their numbering, retained window and subscribers.

Plain Python (no gRPC): the server turns `BusError`s into statuses and bytes into replies.

- A bus keeps its last `retain_messages` messages (and at most `max_retained_bytes` of them) in a
  fixed ring indexed by sequence number. Each message is stored once, already encoded as the
  `Delivery.messages` field it becomes on the wire, so a delivery is one `bytes.join`.
- A subscriber is only a cursor (the next sequence it wants) into that ring: it never holds
  messages of its own, so a slow subscriber costs no memory. When the ring has moved past its
  cursor, the gap is exact: `missed = oldest retained - cursor`, and it goes on from the oldest.
- Sequence numbers are consecutive per bus and never reused while the bus exists: the owner
  writes a high-water mark ahead of the numbers it hands out (`SequenceStore`), and a restarted
  daemon carries on above it.
- Bus definitions live in the seed's layout under the node root (`BusStore`):
  ROOT/etc/skyge/bus/buses/NAME/service.cfg and ROOT/etc/skyge/bus/slots/N -> ../buses/NAME.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

from skyge.services.common.atomic import write_atomic
from skyge.services.common.config import ConfigError, parse_config, render_config
from skyge.services.common.logsetup import LOG_BUSES as DAEMON_LOG_BUSES
from skyge.v1 import bus_pb2 as pb

logger = logging.getLogger("skyge-bus.core")

# ---- limits (the contract's ranges: protos/skyge/v1/bus.proto)
MAX_DOMAIN = 64
NAME_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_NAME_RE = re.compile(NAME_PATTERN)
SLOT_MIN, SLOT_MAX = 1, 1023
FIRST_USER_SLOT = 64  # slots 1-63 are kept for the standard buses
RETAIN_MIN, RETAIN_MAX, RETAIN_DEFAULT = 1, 65536, 1024
PAYLOAD_MIN, PAYLOAD_MAX, PAYLOAD_DEFAULT = 1, 1 << 20, 65536
MAX_MESSAGES_PER_REQUEST = 1024
MAX_CONTENT_TYPE = 128
BATCH_MIN, BATCH_MAX, BATCH_DEFAULT = 1, 1024, 64
#: a Delivery carries at most this many bytes of messages (always at least one message)
DELIVERY_MAX_BYTES = 1 << 20
#: default cap on the bytes one bus retains (config `max_retained_bytes`)
RETAINED_BYTES_DEFAULT = 64 << 20
#: flow control: how long a publish waits for a flow-controlled subscriber to take messages
#: before RESOURCE_EXHAUSTED, and how long such a subscriber may take nothing before it is
#: dropped (it is dead or stuck: it must not hold up the bus)
FLOW_WAIT_S = 10.0
FLOW_STALL_S = 3.0
BUS_TYPE = "collector"
#: sequence numbers reserved ahead by each high-water-mark write
SEQUENCE_STEP = 1 << 20

# ---- the standard buses (the seed's bl_init.sh, ha_init.sh, em_init.sh), with fixed slots
STANDARD_BUSES: dict[str, tuple[tuple[str, int], ...]] = {
    "heartbeat": (("log.jiluos.skyge.com", 1),),
    "bus": (("log.messagebus.skyge.com", 2),),
    "lock": (("log.buluos.skyge.com", 3),),
    "ha": (("cmd.launcher.ha.skyge.com", 4), ("cmd.service.ha.skyge.com", 5),
           ("state.service.ha.skyge.com", 6), ("state.domain.ha.skyge.com", 7),
           ("log.ha.skyge.com", 8), ("cmd.safeguard.ha.skyge.com", 9),
           ("cmd.ecs.ha.skyge.com", 10), ("cmd.userheartbeat.ha.skyge.com", 11),
           ("pulse.userheartbeat.ha.skyge.com", 12), ("cmd.checker.ha.skyge.com", 13)),
    "emon": (("log.emon.skyge.com", 14), ("cmd.emon.skyge.com", 15),
             ("cpu_load.emon.skyge.com", 16), ("mem_load.emon.skyge.com", 17),
             ("disk_usage.emon.skyge.com", 18)),
}
#: the log bus of each daemon (where `-t bus|all` records go; what the collector reads)
LOG_BUSES = dict(DAEMON_LOG_BUSES)
LOG_BUS_DAEMONS = {name: daemon for daemon, name in LOG_BUSES.items()}


class BusError(Exception):
    """A refused request: `code` is a grpc.StatusCode name, the message says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> BusError:
    return BusError("INVALID_ARGUMENT", message)


# ---- validation

def check_name(name: str, what: str = "name") -> str:
    if not _NAME_RE.fullmatch(name or ""):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise invalid(f"{what}: must be 1-64 characters of A-Z a-z 0-9 . _ - "
                      f"(e.g. \"Mytestmb\"), got {shown!r} ({len(name)} characters)")
    return name


def check_domain(domain: int) -> int:
    if not 0 <= domain <= MAX_DOMAIN:
        raise invalid(f"domain: must be 0 (this node) or 1-{MAX_DOMAIN}, got {domain}")
    return domain


def _ranged(value: int, what: str, low: int, high: int, default: int | None) -> int:
    if value == 0 and default is not None:
        return default
    if not low <= value <= high:
        zero = ", or 0 for the default" if default is not None else ""
        raise invalid(f"{what}: must be from {low} to {high}{zero}, got {value}")
    return value


def check_content_type(text: str) -> None:
    if len(text) > MAX_CONTENT_TYPE or not text.isascii():
        raise invalid(f"content_type: must be 0-{MAX_CONTENT_TYPE} ASCII characters, got "
                      f"{len(text)} characters{'' if text.isascii() else ' (not ASCII)'}")


# ---- wire helpers: a Delivery is `repeated BusMessage messages = 1; uint64 missed = 2;`

def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_entry(sequence: int, sender: int, time_ns: int, data: bytes, content_type: str) -> bytes:
    """One message as the `messages` field of a Delivery (tag, length, BusMessage)."""
    body = pb.BusMessage(sequence=sequence, sender_domain=sender, time_unix_ns=time_ns, data=data,
                         content_type=content_type).SerializeToString()
    return b"\x0a" + varint(len(body)) + body


def encode_delivery(entries: Sequence[bytes], missed: int = 0) -> bytes:
    """A serialized Delivery from encoded entries (see `encode_entry`)."""
    tail = b"\x10" + varint(missed) if missed else b""
    return b"".join(entries) + tail if entries else tail


# ---- persistence

class SequenceStore:
    """High-water marks of the buses' sequence numbers: ROOT/var/lib/skyge/bus/NAME.seq.

    A number is handed out only below the mark on disk, so a daemon that restarts (even after a
    crash) starts above every number it ever used. Marks are written `SEQUENCE_STEP` ahead, in a
    worker thread when half the reserve is used, so publishing never waits for the disk.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()  # the event loop and the worker thread both write
        self._written: dict[str, int] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.seq"

    def read(self, name: str) -> int:
        try:
            text = self.path(name).read_text().strip()
            return int(text) if text.isdigit() else 0
        except (OSError, ValueError):
            return 0

    def write(self, name: str, mark: int) -> None:
        """Raise the mark of `name` to `mark` (a lower mark than written is ignored)."""
        with self._lock:
            if mark <= self._written.get(name, 0):
                return
            write_atomic(self.path(name), f"{mark}\n")
            self._written[name] = mark

    def remove(self, name: str) -> None:
        with self._lock:
            self._written.pop(name, None)
            for path in (self.path(name), self.folder / f".{name}.seq.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


@dataclass
class BusDefinition:
    """What is kept on disk for a bus (its service.cfg)."""

    name: str
    slot: int
    magic: int
    retain_messages: int = RETAIN_DEFAULT
    max_payload_bytes: int = PAYLOAD_DEFAULT
    type: str = BUS_TYPE


class BusStore:
    """The seed's layout: ROOT/etc/skyge/bus/buses/NAME/service.cfg, slots/N -> ../buses/NAME."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.buses = folder / "buses"
        self.slots = folder / "slots"

    def save(self, bus: BusDefinition) -> None:
        folder = self.buses / bus.name
        folder.mkdir(parents=True, exist_ok=True)
        self.slots.mkdir(parents=True, exist_ok=True)
        text = render_config({"type": bus.type, "slot": bus.slot, "magic": bus.magic,
                              "retain_messages": bus.retain_messages,
                              "max_payload_bytes": bus.max_payload_bytes})
        write_atomic(folder / "service.cfg", text)
        # the slot link is swapped the same way (a new link renamed over the old one), by hand:
        # write_atomic writes files only
        link, tmp_link = self.slots / str(bus.slot), self.slots / f".{bus.slot}.tmp"
        if tmp_link.is_symlink():
            tmp_link.unlink()
        tmp_link.symlink_to(Path("..") / "buses" / bus.name)
        os.replace(tmp_link, link)

    def remove(self, bus: BusDefinition) -> None:
        link = self.slots / str(bus.slot)
        if link.is_symlink() and Path(os.readlink(link)).name == bus.name:
            link.unlink()
        folder = self.buses / bus.name
        for path in (folder / "service.cfg", folder / ".service.cfg.tmp"):  # see write_atomic
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()

    def load(self) -> list[BusDefinition]:
        """Every valid definition; bad ones are logged and skipped (never fatal)."""
        found: list[BusDefinition] = []
        if not self.buses.is_dir():
            return found
        slots_taken: set[int] = set()
        for folder in sorted(self.buses.iterdir()):
            cfg = folder / "service.cfg"
            if not cfg.is_file():
                continue
            try:
                bus = self._parse(folder.name, cfg)
            except (ConfigError, BusError, OSError) as error:
                logger.warning("ignoring bus definition %s: %s", cfg, error)
                continue
            if bus.slot in slots_taken:
                logger.warning("ignoring bus definition %s: slot %d is used by another bus",
                               cfg, bus.slot)
                continue
            slots_taken.add(bus.slot)
            found.append(bus)
        # the slot links follow the definitions (re-made if missing, stale ones removed)
        if self.slots.is_dir():
            for link in self.slots.iterdir():
                if link.is_symlink() and (not link.name.isdigit()
                                          or int(link.name) not in slots_taken):
                    link.unlink()
        for bus in found:
            link = self.slots / str(bus.slot)
            if not link.is_symlink() or Path(os.readlink(link)).name != bus.name:
                self.save(bus)
        return found

    @staticmethod
    def _parse(name: str, cfg: Path) -> BusDefinition:
        check_name(name, "bus folder name")
        values = {s.key: s.value for s in parse_config(cfg.read_text(), str(cfg))}

        def number(key: str, low: int, high: int, default: int | None = None) -> int:
            value = values.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"must be an integer from {low} to {high}, got {value!r}",
                                  path=str(cfg), key=key)
            return value

        kind = values.get("type", BUS_TYPE)
        if kind != BUS_TYPE:
            raise ConfigError(f'must be "{BUS_TYPE}", got {kind!r}', path=str(cfg), key="type")
        return BusDefinition(name=name, slot=number("slot", SLOT_MIN, SLOT_MAX),
                             magic=number("magic", 0, 2**31 - 1, 0),
                             retain_messages=number("retain_messages", RETAIN_MIN, RETAIN_MAX,
                                                    RETAIN_DEFAULT),
                             max_payload_bytes=number("max_payload_bytes", PAYLOAD_MIN,
                                                      PAYLOAD_MAX, PAYLOAD_DEFAULT))


# ---- buses and subscribers

class Closed(Exception):
    """A subscription ended: `code` (grpc.StatusCode name) and a message for the subscriber."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FlowBlocked(BusError):
    """Publishing now would drop a message a flow-controlled subscriber has not been given: the
    publisher waits for it (`Bus.room`), or is refused with RESOURCE_EXHAUSTED."""

    def __init__(self, bus: Bus, subscriber: Subscription) -> None:
        super().__init__("RESOURCE_EXHAUSTED",
                         f"bus {bus.name!r}: a flow-controlled subscriber (domain "
                         f"{subscriber.origin}) has not taken message {subscriber.next} yet and "
                         f"the bus retains {bus.capacity} messages; retry after it reads")
        self.subscriber = subscriber


class Bus:
    """One bus this node owns: numbering, the retained ring, the subscribers' wake-up."""

    def __init__(self, definition: BusDefinition, first_sequence: int, max_retained_bytes: int,
                 reserve: Callable[[Bus, int], None]) -> None:
        self.definition = definition
        self.capacity = definition.retain_messages
        self.max_retained_bytes = max_retained_bytes
        self._ring: list[bytes | None] = [None] * self.capacity
        self.last = first_sequence - 1  # last sequence handed out
        self.first = first_sequence  # oldest retained sequence (none retained while > last)
        self.retained_bytes = 0
        self.subscribers: set[Subscription] = set()
        #: subscribers that asked for flow control: no message is dropped before they took it
        self.flow: set[Subscription] = set()
        self.closed: Closed | None = None
        self.published = 0  # messages since the daemon started
        #: messages subscribers skipped because they fell behind the retained window (each
        #: subscriber's gap counts), since the daemon started
        self.missed = 0
        self._event = asyncio.Event()
        self._room = asyncio.Event()  # a flow-controlled subscriber advanced or left
        self._reserve = reserve  # called when the reserved numbers run low

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def oldest(self) -> int:
        """Oldest retained sequence, 0 when nothing is retained."""
        return self.first if self.first <= self.last else 0

    def info(self, domain: int) -> pb.BusInfo:
        d = self.definition
        return pb.BusInfo(domain=domain, name=d.name, slot=d.slot,
                          retain_messages=d.retain_messages,
                          max_payload_bytes=d.max_payload_bytes, last_sequence=self.last,
                          subscribers=len(self.subscribers), type=d.type,
                          oldest_sequence=self.oldest, magic=d.magic,
                          published=self.published, missed=self.missed)

    def publish(self, messages: Sequence[pb.Payload], sender: int,
                time_ns: int | None = None) -> int:
        """Number and retain the messages (all or none); returns the first sequence."""
        count = len(messages)
        if not 1 <= count <= MAX_MESSAGES_PER_REQUEST:
            raise invalid(f"messages: must be 1-{MAX_MESSAGES_PER_REQUEST} per request, "
                          f"got {count}")
        limit = self.definition.max_payload_bytes
        for index, message in enumerate(messages):
            if len(message.data) > limit:
                raise invalid(f"messages[{index}].data: {len(message.data)} bytes is over the "
                              f"limit of bus {self.name!r}, 0-{limit} bytes (max_payload_bytes)")
            if message.content_type:
                check_content_type(message.content_type)
        if self.closed is not None:
            raise BusError("NOT_FOUND", self.closed.message)
        now = time.time_ns() if time_ns is None else time_ns
        first = self.last + 1
        entries = [encode_entry(seq, sender, now, message.data, message.content_type)
                   for seq, message in enumerate(messages, first)]
        if self.flow:
            self._check_room(entries)
        self._reserve(self, first + count)
        ring, capacity = self._ring, self.capacity
        seq = first
        added = 0
        for entry in entries:
            slot = seq % capacity
            old = ring[slot]
            if old is not None:
                self.retained_bytes -= len(old)
            ring[slot] = entry
            added += len(entry)
            seq += 1
        self.last = seq - 1
        self.retained_bytes += added
        if self.first < self.last - capacity + 1:
            self.first = self.last - capacity + 1
        while self.retained_bytes > self.max_retained_bytes and self.first < self.last:
            slot = self.first % capacity
            old = ring[slot]
            if old is not None:
                self.retained_bytes -= len(old)
                ring[slot] = None
            self.first += 1
        self.published += count
        self._event.set()
        self._event.clear()
        return first

    def _check_room(self, entries: list[bytes]) -> None:
        """Raise FlowBlocked when retaining `entries` would drop (by count or by bytes) a
        message the slowest flow-controlled subscriber has not taken yet."""
        size = sum(map(len, entries))
        if len(entries) > self.capacity or size > self.max_retained_bytes:
            raise BusError("FAILED_PRECONDITION",
                           f"messages: {len(entries)} messages of {size} bytes in one request "
                           f"are more than bus {self.name!r} retains ({self.capacity} messages, "
                           f"{self.max_retained_bytes} bytes), so its flow-controlled "
                           f"subscribers would miss some: send fewer per request")
        slowest = min(self.flow, key=lambda sub: sub.next)
        new_last = self.last + len(entries)
        kept_from = max(self.first, new_last - self.capacity + 1)  # the ring's count limit
        if kept_from > slowest.next:
            raise FlowBlocked(self, slowest)
        excess = self.retained_bytes + size - self.max_retained_bytes
        seq = self.first
        while seq < kept_from:  # overwritten by the ring anyway
            excess -= len(self._ring[seq % self.capacity] or b"")
            seq += 1
        while excess > 0 and seq < new_last:  # what the byte cap drops, oldest first
            if seq >= slowest.next:
                raise FlowBlocked(self, slowest)
            excess -= len(self._ring[seq % self.capacity] or b"")
            seq += 1

    async def publish_waiting(self, messages: Sequence[pb.Payload], sender: int,
                              wait_s: float = FLOW_WAIT_S, stall_s: float = FLOW_STALL_S) -> int:
        """`publish`, waiting (up to `wait_s`) while a flow-controlled subscriber has not taken
        what it would drop; one that took nothing for `stall_s` is dropped (ABORTED) so that a
        dead subscriber cannot hold the bus up. Raises FlowBlocked when the wait runs out."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.publish(messages, sender)
            except FlowBlocked as blocked:
                slow = blocked.subscriber
                now = time.monotonic()
                idle = now - slow.advanced_at
                if idle >= stall_s:
                    reason = (f"flow-controlled subscriber of bus {self.name!r} took no message "
                              f"for {idle:.1f} s: dropped so that it does not hold up the bus")
                    logger.warning("%s (domain %d)", reason, slow.origin)
                    self.drop(slow, reason)
                    continue
                if now >= deadline:
                    raise
                await self.room(min(deadline - now, stall_s - idle))

    async def room(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until a flow-controlled subscriber takes messages or
        leaves."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), timeout)

    def made_room(self) -> None:
        self._room.set()
        self._room.clear()

    def drop(self, subscription: Subscription, reason: str) -> None:
        """End one subscription (a stalled flow-controlled one): its stream ends with ABORTED."""
        subscription.ended = Closed("ABORTED", reason)
        subscription.close()
        self._event.set()
        self._event.clear()
        if subscription.on_drop is not None:
            subscription.on_drop()

    def take(self, start: int, max_count: int, max_bytes: int = DELIVERY_MAX_BYTES
             ) -> tuple[list[bytes], int, int]:
        """Entries from `start` on: (entries, missed, next start). `missed` > 0 when `start`
        is no longer retained (the entries then begin at the oldest retained message)."""
        missed = 0
        if start < self.first:
            missed = self.first - start
            start = self.first
        end = min(self.last, start + max_count - 1)
        entries: list[bytes] = []
        size = 0
        ring, capacity = self._ring, self.capacity
        seq = start
        while seq <= end:
            entry = ring[seq % capacity]
            if entry is None:  # cannot happen: every number from first to last is retained
                break
            size += len(entry)
            if entries and size > max_bytes:
                break
            entries.append(entry)
            seq += 1
        return entries, missed, seq

    async def changed(self) -> None:
        await self._event.wait()

    def close(self, code: str, message: str) -> None:
        """End every subscription (bus deleted, daemon stopping)."""
        self.closed = Closed(code, message)
        self._event.set()
        self._event.clear()
        self.made_room()


@dataclass(eq=False)
class Subscription:
    """A subscriber's cursor into a bus; `origin` is the domain of the subscriber's node."""

    bus: Bus
    next: int
    origin: int
    max_batch: int = BATCH_DEFAULT
    delivered: int = 0
    #: flow-controlled: the bus keeps every message until this subscriber took it
    flow: bool = False
    #: time.monotonic() this subscriber last took messages (or subscribed)
    advanced_at: float = field(default_factory=time.monotonic)
    #: set when the owner dropped this subscription (a stalled flow-controlled subscriber)
    ended: Closed | None = None
    #: called when it is dropped (the server ends a stream stuck writing to a dead client)
    on_drop: Callable[[], None] | None = None

    def poll(self) -> tuple[list[bytes], int]:
        """What is ready now: (entries, missed); both empty/0 when caught up."""
        if self.ended is not None:
            raise self.ended
        if self.bus.closed is not None:
            raise self.bus.closed
        if self.next > self.bus.last:
            return [], 0
        entries, missed, self.next = self.bus.take(self.next, self.max_batch)
        self.bus.missed += missed
        self.delivered += len(entries)
        self.advanced_at = time.monotonic()
        if self.flow:
            self.bus.made_room()
        return entries, missed

    async def next_delivery(self) -> bytes:
        """The next serialized Delivery (waits for messages); raises Closed when the bus ends."""
        while True:
            entries, missed = self.poll()
            if entries or missed:
                return encode_delivery(entries, missed)
            await self.bus.changed()

    def close(self) -> None:
        self.bus.subscribers.discard(self)
        if self in self.bus.flow:
            self.bus.flow.discard(self)
            self.bus.made_room()


@dataclass
class BusCore:
    """The buses this node owns."""

    store: BusStore
    sequences: SequenceStore
    max_retained_bytes: int = RETAINED_BYTES_DEFAULT
    domain: Callable[[], int] = lambda: 0
    buses: dict[str, Bus] = field(default_factory=dict)
    _marks: dict[str, int] = field(default_factory=dict)  # name -> high-water mark on disk
    _writing: set[str] = field(default_factory=set)

    # -- life
    def load(self) -> None:
        for definition in self.store.load():
            self._open(definition, restarted=True)

    def _open(self, definition: BusDefinition, restarted: bool) -> Bus:
        mark = self.sequences.read(definition.name) if restarted else 0
        if not restarted:
            self.sequences.remove(definition.name)
        first = mark + 1
        self._marks[definition.name] = mark
        bus = Bus(definition, first, self.max_retained_bytes, self._reserve)
        self.buses[definition.name] = bus
        self._write_mark(definition.name, mark + SEQUENCE_STEP)
        return bus

    def _write_mark(self, name: str, mark: int) -> None:
        self.sequences.write(name, mark)
        self._marks[name] = mark

    def _reserve(self, bus: Bus, needed: int) -> None:
        """Make sure the mark on disk is above `needed` (the numbers about to be used)."""
        name = bus.name
        mark = self._marks.get(name, 0)
        if needed > mark:  # reserve exhausted (the background write is late): write now
            self._write_mark(name, needed + SEQUENCE_STEP)
        elif needed > mark - SEQUENCE_STEP // 2 and name not in self._writing:
            self._writing.add(name)
            target = mark + SEQUENCE_STEP
            loop = asyncio.get_running_loop()

            def done(future: asyncio.Future[None]) -> None:
                self._writing.discard(name)
                if future.exception() is None and name in self.buses:
                    self._marks[name] = max(self._marks.get(name, 0), target)
                elif future.exception() is not None:
                    logger.error("cannot write the sequence mark of bus %s: %s", name,
                                 future.exception())

            loop.run_in_executor(None, self.sequences.write, name, target).add_done_callback(done)

    def close_all(self, code: str, message: str) -> None:
        for bus in self.buses.values():
            bus.close(code, message)

    # -- RPCs' logic
    def get(self, name: str) -> Bus:
        check_name(name)
        bus = self.buses.get(name)
        if bus is None:
            raise BusError("NOT_FOUND", f"no bus {name!r} on domain {self.domain()} "
                                        f"(see `skyge bus list -d {self.domain()}`)")
        return bus

    def slots_in_use(self) -> dict[int, str]:
        return {b.definition.slot: n for n, b in self.buses.items()}

    def create(self, name: str, slot: int = 0, retain: int = 0, max_payload: int = 0,
               *, first_free: int = FIRST_USER_SLOT) -> Bus:
        check_name(name)
        if slot != 0:
            _ranged(slot, "slot", SLOT_MIN, SLOT_MAX, None)
        retain = _ranged(retain, "retain_messages", RETAIN_MIN, RETAIN_MAX, RETAIN_DEFAULT)
        max_payload = _ranged(max_payload, "max_payload_bytes", PAYLOAD_MIN, PAYLOAD_MAX,
                              PAYLOAD_DEFAULT)
        if name in self.buses:
            raise BusError("ALREADY_EXISTS", f"domain {self.domain()} already has a bus "
                                             f"{name!r} (slot {self.buses[name].definition.slot})")
        used = self.slots_in_use()
        if slot == 0:
            slot = next((s for s in range(first_free, SLOT_MAX + 1) if s not in used), 0)
            if slot == 0:
                raise BusError("RESOURCE_EXHAUSTED",
                               f"slot: every slot from {first_free} to {SLOT_MAX} of domain "
                               f"{self.domain()} is in use; delete a bus first")
        elif slot in used:
            raise BusError("ALREADY_EXISTS", f"slot: slot {slot} of domain {self.domain()} is "
                                             f"used by bus {used[slot]!r}")
        definition = BusDefinition(name=name, slot=slot, magic=secrets.randbelow(2**31 - 1) + 1,
                                   retain_messages=retain, max_payload_bytes=max_payload)
        self.store.save(definition)
        return self._open(definition, restarted=False)

    def delete(self, name: str) -> pb.BusInfo:
        bus = self.get(name)
        info = bus.info(self.domain())
        del self.buses[name]
        self._marks.pop(name, None)
        bus.close("NOT_FOUND", f"bus {name!r} of domain {self.domain()} was deleted")
        self.store.remove(bus.definition)
        self.sequences.remove(name)
        return info

    def init(self, subsystems: Iterable[str]) -> tuple[list[Bus], list[str]]:
        """Create the standard buses of the given subsystems (all when empty)."""
        wanted = list(subsystems) or list(STANDARD_BUSES)
        for subsystem in wanted:
            if subsystem not in STANDARD_BUSES:
                raise invalid(f"subsystems: {subsystem!r} is not one of "
                              f"{', '.join(STANDARD_BUSES)}")
        buses, created = [], []
        for subsystem in dict.fromkeys(wanted):
            for name, slot in STANDARD_BUSES[subsystem]:
                bus = self.buses.get(name)
                if bus is None:
                    used = self.slots_in_use()
                    if slot in used:  # someone took the standard slot: any free one of 1-63
                        slot = next((s for s in range(SLOT_MIN, FIRST_USER_SLOT)
                                     if s not in used), 0)
                    bus = self.create(name, slot, first_free=SLOT_MIN)
                    created.append(name)
                buses.append(bus)
        buses.sort(key=lambda b: b.definition.slot)
        return buses, created

    def subscribe(self, name: str, from_sequence: int, max_batch: int, origin: int,
                  flow: bool = False) -> Subscription:
        bus = self.get(name)
        max_batch = _ranged(max_batch, "max_batch", BATCH_MIN, BATCH_MAX, BATCH_DEFAULT)
        if from_sequence == 0:
            start = bus.last + 1
        else:
            low = bus.oldest or bus.last + 1
            high = bus.last + 1
            if not low <= from_sequence <= high:
                why = ("no longer retained: resubscribe with from_sequence 0 or the oldest"
                       if from_sequence < low else "not published yet")
                raise BusError("OUT_OF_RANGE",
                               f"from_sequence: must be from {low} to {high} for bus {name!r} of "
                               f"domain {self.domain()} (or 0 for new messages only), got "
                               f"{from_sequence}: {why}")
            start = from_sequence
        subscription = Subscription(bus, start, origin, max_batch, flow=flow)
        bus.subscribers.add(subscription)
        if flow:
            bus.flow.add(subscription)
        return subscription

    def list(self) -> list[pb.BusInfo]:
        domain = self.domain()
        ordered = sorted(self.buses.values(), key=lambda b: b.definition.slot)
        return [b.info(domain) for b in ordered]
