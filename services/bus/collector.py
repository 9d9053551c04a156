"""Log collection (the seed's youchai): every member's log buses -> one log file per node.

Daemons started with `-t bus` or `-t all` publish each log record on their log bus (see
`services/common/logsetup.py`; a record is a JSON object). The collector of a node subscribes, for
each member of the cluster (or only its own node, config `collect_logs = "local"`), to the log
buses of the five daemons, and writes every record as one line of
ROOT/var/log/skyge/cluster/domain-N.log:

    2024-05-01T10:00:00.123456Z domain=2 daemon=lock level=INFO pid=4242 granted lock 3/7

The file rotates by size (`log_max_bytes`, `log_backups` older copies: domain-N.log.1, .2, ...).
A stream that breaks is resumed from the next sequence number; records the collector could not
get (the bus no longer retained them) are reported by a `level=WARNING` line saying how many.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, TextIO
from collections.abc import Callable

import grpc

from skyge.services.bus.core import LOG_BUS_DAEMONS, LOG_BUSES
from skyge.services.common.atomic import write_atomic
from skyge.services.common.membership import MembershipFollower
from skyge.v1 import bus_pb2 as pb, bus_pb2_grpc

logger = logging.getLogger("skyge-bus.collector")

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0
LIST_FRESH_S = 0.1  # how long one ListBuses answer serves the tasks of its domain


def format_time(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _clean(text: str) -> str:
    """One line: newlines and other control characters escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def format_record(domain: int, bus: str, message: pb.BusMessage) -> str:
    """One log line from a log-bus message (a JSON record, or any text published there)."""
    daemon = LOG_BUS_DAEMONS.get(bus, bus)
    record: Any = None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        record = json.loads(message.data)
    if isinstance(record, dict):
        stamp = record.get("time_unix_ns")
        time_ns = stamp if isinstance(stamp, int) else message.time_unix_ns
        level = str(record.get("level", "INFO"))
        daemon = str(record.get("daemon", daemon))
        pid = record.get("pid")
        text = str(record.get("message", ""))
        pid_part = f" pid={pid}" if isinstance(pid, int) else ""
    else:
        time_ns, level, pid_part = message.time_unix_ns, "INFO", ""
        text = message.data.decode("utf-8", errors="replace")
    return (f"{format_time(time_ns)} domain={domain} daemon={_clean(daemon)} "
            f"level={_clean(level)}{pid_part} {_clean(text)}\n")


class RotatingFile:
    """An append-only text file rotated by size: NAME, NAME.1 .. NAME.<backups>."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._handle: TextIO | None = None
        self._size = 0

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # stays open for the writes to come: closed by close() or rotate()
        handle = self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = handle.tell()
        return handle

    def write(self, lines: list[str]) -> None:
        handle = self._handle if self._handle is not None else self._open()
        for line in lines:
            size = len(line.encode("utf-8", errors="replace"))
            if self._size and self._size + size > self.max_bytes:
                handle = self.rotate()
            handle.write(line)
            self._size += size
        handle.flush()

    def rotate(self) -> TextIO:
        """Start a new file: the current one becomes NAME.1, the older copies move up by one
        (none are kept with no backups). Returns the new file's handle."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        elif self.path.exists():
            self.path.unlink()
        return self._open()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass
class LogCollector:
    """Follows the membership; one subscription task per (member, log bus).

    Where each stream is up to is kept in `state_file` (JSON: "DOMAIN/BUS" -> [magic, next
    sequence]), so a restarted collector resumes where it stopped instead of writing records twice
    or skipping them; a first subscription starts at the oldest record the bus retains.
    """

    follower: MembershipFollower
    socket: Path  # this node's bus daemon (relays to the other members)
    folder: Path
    scope: str = "all"  # "all" members, or "local" only
    max_bytes: int = 10 << 20
    backups: int = 5
    local_domain: Callable[[], int] = lambda: 0
    state_file: Path | None = None
    files: dict[int, RotatingFile] = field(default_factory=dict)
    records: int = 0
    missed: int = 0
    state: dict[str, list[int]] = field(default_factory=dict)
    _tasks: dict[tuple[int, str], asyncio.Task[None]] = field(default_factory=dict)
    _channel: grpc.aio.Channel | None = None
    _dirty: bool = False
    _lists: dict[int, tuple[float, asyncio.Future[pb.ListBusesResponse]]] = field(
        default_factory=dict)
    _saver: asyncio.Task[None] | None = None
    _saving: asyncio.Future[None] | None = None  # the state file write under way (a thread)

    def start(self) -> None:
        self._load_state()
        self._channel = grpc.aio.insecure_channel(f"unix:{self.socket}")
        self._saver = asyncio.create_task(self._save_often(), name="collector-state")
        self.follower.listeners.append(self)
        self.on_view(self.follower)

    # -- where each stream is up to
    def _load_state(self) -> None:
        if self.state_file is None:
            return
        try:
            data = json.loads(self.state_file.read_text())
            self.state = {k: [int(v[0]), int(v[1])] for k, v in data.items()
                          if isinstance(v, list) and len(v) == 2}
        except (OSError, ValueError, TypeError, AttributeError):
            self.state = {}

    async def save_state(self) -> None:
        """Write where each stream is up to, if it changed. The write is fsynced, which can take
        a while on a busy disk, so it runs in a worker thread; one write at a time, in order."""
        if self._saving is not None:
            await asyncio.shield(self._saving)  # the one under way ends first, even if cancelled
        if self.state_file is None or not self._dirty:
            return
        self._dirty = False
        text = json.dumps(self.state, sort_keys=True)
        self._saving = asyncio.ensure_future(
            asyncio.to_thread(self._write_state, self.state_file, text))
        await asyncio.shield(self._saving)

    @staticmethod
    def _write_state(path: Path, text: str) -> None:
        try:
            write_atomic(path, text)
        except OSError as error:
            logger.warning("cannot save the collector state %s: %s", path, error)

    async def _save_often(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.save_state()

    def wanted(self) -> set[int]:
        """This node always (when its domain is known); with scope "all" every member too."""
        local = self.local_domain()
        wanted = {local} if local else set()
        if self.scope == "all" and self.follower.known:
            wanted |= set(self.follower.peers)
        return wanted

    def on_view(self, follower: MembershipFollower) -> None:
        wanted = self.wanted()
        for domain in wanted:
            for bus in LOG_BUSES.values():
                task = self._tasks.get((domain, bus))
                if task is None or task.done():
                    self._tasks[(domain, bus)] = asyncio.create_task(
                        self._collect(domain, bus), name=f"collect-{domain}-{bus}")
        for (domain, bus), task in list(self._tasks.items()):
            if domain not in wanted:
                task.cancel()
                del self._tasks[(domain, bus)]

    def on_lost(self, follower: MembershipFollower) -> None:
        """Keep collecting: the streams fail on their own if their owner is gone."""

    def file(self, domain: int) -> RotatingFile:
        if domain not in self.files:
            self.files[domain] = RotatingFile(self.folder / f"domain-{domain}.log",
                                              self.max_bytes, self.backups)
        return self.files[domain]

    def note(self, domain: int, bus: str, text: str) -> None:
        daemon = LOG_BUS_DAEMONS.get(bus, bus)
        self.file(domain).write([f"{format_time(time.time_ns())} domain={domain} daemon={daemon} "
                                 f"level=WARNING collector: {text}\n"])

    async def _list(self, stub: Any, domain: int) -> pb.ListBusesResponse:
        """The buses of a domain; one call shared by the log-bus tasks of that domain (they all
        start, and retry, together)."""
        cached = self._lists.get(domain)
        now = time.monotonic()
        if cached is None or now - cached[0] > LIST_FRESH_S or (
                cached[1].done() and cached[1].exception() is not None and now - cached[0] > 0.05):
            future: asyncio.Future[pb.ListBusesResponse] = asyncio.ensure_future(
                stub.ListBuses(pb.ListBusesRequest(domain=domain), timeout=10))
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            cached = (now, future)
            self._lists[domain] = cached
        return await asyncio.shield(cached[1])

    async def _start(self, stub: Any, domain: int, bus: str) -> tuple[int, int] | None:
        """(magic, from_sequence) for the next subscription; None when the bus is not there."""
        reply = await self._list(stub, domain)
        info = next((b for b in reply.buses if b.name == bus), None)
        if info is None:
            return None
        low = info.oldest_sequence or info.last_sequence + 1
        high = info.last_sequence + 1
        magic, next_sequence = self.state.get(f"{domain}/{bus}", (0, 0))
        if magic != info.magic or not next_sequence:
            # a bus new to us: all it retains, or, when it is empty, the next sequence: never
            # 0 ("new only"), which would miss a record published before the stream is set up
            return info.magic, low
        if next_sequence > high:
            return info.magic, 0
        if next_sequence < low:
            self.note(domain, bus, f"records {next_sequence} to {low - 1} of {bus} were not "
                                   f"retained (or never used: the owner restarted)")
            return info.magic, low
        return info.magic, next_sequence

    async def _collect(self, domain: int, bus: str) -> None:
        assert self._channel is not None
        stub = bus_pb2_grpc.BusStub(self._channel)
        key = f"{domain}/{bus}"
        delay = RETRY_MIN_S
        while domain in self.wanted():
            call = None
            try:
                start = await self._start(stub, domain, bus)
                if start is not None:
                    magic, from_sequence = start
                    call = stub.Subscribe(pb.SubscribeRequest(
                        domain=domain, name=bus, from_sequence=from_sequence, max_batch=256))
                    async for delivery in call:
                        delay = RETRY_MIN_S
                        if delivery.missed:
                            self.missed += delivery.missed
                            self.note(domain, bus, f"{delivery.missed} records of {bus} were "
                                                   f"lost (not retained long enough)")
                        if delivery.messages:
                            self.file(domain).write([format_record(domain, bus, m)
                                                     for m in delivery.messages])
                            self.records += len(delivery.messages)
                            self.state[key] = [magic, delivery.messages[-1].sequence + 1]
                            self._dirty = True
            except grpc.aio.AioRpcError as error:
                logger.debug("log bus %s of domain %d: %s %s", bus, domain, error.code().name,
                             error.details())
                if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                    continue  # raced with the bus moving on: look again
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("collecting %s of domain %d failed", bus, domain)
            finally:
                if call is not None:
                    call.cancel()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RETRY_MAX_S)

    async def stop(self) -> None:
        if self in self.follower.listeners:
            self.follower.listeners.remove(self)
        tasks = list(self._tasks.values()) + ([self._saver] if self._saver else [])
        listing = [future for _, future in self._lists.values()]  # ListBuses calls (see _list)
        for task in tasks:
            task.cancel()
        for future in listing:
            future.cancel()
        await asyncio.gather(*tasks, *listing, return_exceptions=True)
        self._tasks.clear()
        self._lists.clear()
        await self.save_state()
        if self._channel is not None:
            await self._channel.close(None)
        for handle in self.files.values():
            handle.close()
