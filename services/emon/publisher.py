"""Publishing samples on the emon buses of this node, through the local bus daemon's Unix socket.

Each sample goes to the bus `PROBE.emon.skyge.com` of this node (the seed's `cpu_load`, `mem_load`
and `disk_usage` emon buses; a plug-in's bus is created on first use) as one JSON message:

    {"probe": "cpu_load", "value": 12.5, "unit": "percent", "time_unix_ns": 1714557600000000000}

content type "application/json". `offer` never blocks and never fails: samples wait in a bounded
queue that a background task drains in batches. While the bus daemon is down or refusing, the
failure is logged once (then only counted), the task retries with backoff, and the oldest
samples are dropped (counted) once the queue is full. Recovery is logged with what was lost.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
from pathlib import Path

import grpc

from skyge.v1 import bus_pb2, bus_pb2_grpc

BUS_SUFFIX = ".emon.skyge.com"
QUEUE_LIMIT = 256
BATCH_LIMIT = 128
RPC_TIMEOUT_S = 3.0
RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
)


def bus_name(probe: str) -> str:
    return f"{probe}{BUS_SUFFIX}"


def encode(probe: str, value: float, unit: str, time_unix_ns: int) -> bytes:
    return json.dumps({"probe": probe, "value": value, "unit": unit,
                       "time_unix_ns": time_unix_ns}, separators=(",", ":")).encode()


class BusPublisher:
    def __init__(self, socket_path: Path, logger: logging.Logger) -> None:
        self.socket_path, self.logger = socket_path, logger
        self.queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self.published = self.failures = self.dropped = 0
        self.reachable = False
        self._told_down = False  # the outage was logged
        self._dropped_when_up = 0  # `dropped` at the last successful publish
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._channel: grpc.aio.Channel | None = None
        self._created: set[str] = set()
        self._in_flight = 0

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being sent."""
        return not self.queue and not self._in_flight

    def offer(self, probe: str, value: float, unit: str, time_unix_ns: int) -> None:
        """Queue one sample for its bus; drops (and counts) the oldest when the queue is full."""
        if len(self.queue) >= QUEUE_LIMIT:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append((bus_name(probe), encode(probe, value, unit, time_unix_ns)))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="emon-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def _run(self) -> None:
        self._channel = grpc.aio.insecure_channel(f"unix:{self.socket_path}",
                                                  options=CHANNEL_OPTIONS)
        stub = bus_pb2_grpc.BusStub(self._channel)
        delay = RETRY_MIN_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                items = [self.queue.popleft() for _ in range(min(BATCH_LIMIT, len(self.queue)))]
                self._in_flight = len(items)
                batch: dict[str, list[bytes]] = {}
                for name, data in items:
                    batch.setdefault(name, []).append(data)
                sent: set[str] = set()
                try:
                    for name, messages in batch.items():
                        await self._publish(stub, name, messages)
                        sent.add(name)
                except grpc.aio.AioRpcError as error:
                    self._in_flight = 0
                    self._requeue([item for item in items if item[0] not in sent])
                    self.failures += 1
                    self._went_down(f"{error.code().name}: {error.details()}")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                self._in_flight = 0
                delay = RETRY_MIN_S
                self._came_back()

    def _requeue(self, items: list[tuple[str, bytes]]) -> None:
        """Put unsent samples back in front (order kept); the oldest go if over the limit."""
        self.queue.extendleft(reversed(items))
        while len(self.queue) > QUEUE_LIMIT:
            self.queue.popleft()
            self.dropped += 1

    async def _publish(self, stub: bus_pb2_grpc.BusStub, name: str, messages: list[bytes]) -> None:
        request = bus_pb2.PublishRequest(domain=0, name=name, messages=[
            bus_pb2.Payload(data=data, content_type="application/json") for data in messages])
        try:
            await stub.Publish(request, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or name in self._created:
                raise
            # a plug-in's bus (or a bus deleted by hand): create it once, then publish again
            try:
                await stub.CreateBus(bus_pb2.CreateBusRequest(domain=0, name=name),
                                     timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as create_error:
                if create_error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            self._created.add(name)
            self.logger.info("created bus %s on this node", name)
            await stub.Publish(request, timeout=RPC_TIMEOUT_S)
        self.published += len(messages)

    def _went_down(self, why: str) -> None:
        if self.reachable or not self._told_down:
            self.logger.warning("cannot publish samples on the bus daemon at %s (%s); sampling "
                                "goes on, failures are counted, up to %d samples kept",
                                self.socket_path, why, QUEUE_LIMIT)
            self._told_down = True
        self.reachable = False

    def _came_back(self) -> None:
        if self._told_down:
            self.logger.info("publishing samples on the bus again (%d dropped meanwhile)",
                             self.dropped - self._dropped_when_up)
            self._told_down = False
        self._dropped_when_up = self.dropped
        self.reachable = True
