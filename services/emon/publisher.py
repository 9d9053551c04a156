"""Publishing samples on the emon buses of this node, through the local bus daemon's Unix socket.

Each sample goes to the bus `PROBE.emon.skyge.com` of this node (the seed's `cpu_load`, `mem_load`
and `disk_usage` emon buses; a plug-in's bus is created on first use) as one JSON message:

    {"probe": "cpu_load", "value": 12.5, "unit": "percent", "time_unix_ns": 1714557600000000000}

content type "application/json". `offer` never blocks and never fails: samples wait in a bounded
queue that the daemons' bus publisher (`skyge.services.common.publisher`) drains in batches from
its own thread. While the bus daemon is down or refusing, the failure is logged once (then only
counted), the publisher retries with backoff, and the oldest samples are dropped (counted) once
the queue is full. Recovery is logged with what was lost.
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from skyge.services.common.publisher import LocalBusPublisher

BUS_SUFFIX = ".emon.skyge.com"
QUEUE_LIMIT = 256
BATCH_LIMIT = 128
RPC_TIMEOUT_S = 3.0
RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0


def bus_name(probe: str) -> str:
    return f"{probe}{BUS_SUFFIX}"


def encode(probe: str, value: float, unit: str, time_unix_ns: int) -> bytes:
    return json.dumps({"probe": probe, "value": value, "unit": unit,
                       "time_unix_ns": time_unix_ns}, separators=(",", ":")).encode()


class BusPublisher:
    """The samples' way to their buses, with what `GetStats` and the log say about it."""

    def __init__(self, socket_path: Path, logger: logging.Logger) -> None:
        self.socket_path, self.logger = socket_path, logger
        self.reachable = False
        self._told_down = False  # the outage was logged
        self._dropped_when_up = 0  # `dropped` at the last successful publish
        self._outbox = LocalBusPublisher(
            socket_path, name="emon-publisher", limit=QUEUE_LIMIT, batch=BATCH_LIMIT,
            timeout_s=RPC_TIMEOUT_S, retry_s=RETRY_MIN_S, retry_max_s=RETRY_MAX_S,
            keep="newest", create_buses=True, on_failure=self._went_down,
            on_success=self._came_back)

    @property
    def published(self) -> int:
        return self._outbox.sent

    @property
    def failures(self) -> int:
        return self._outbox.failures

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being sent."""
        return self._outbox.idle

    def offer(self, probe: str, value: float, unit: str, time_unix_ns: int) -> None:
        """Queue one sample for its bus; drops (and counts) the oldest when the queue is full."""
        self._outbox.offer(bus_name(probe), encode(probe, value, unit, time_unix_ns))

    def start(self) -> None:
        self._outbox.start()

    async def stop(self) -> None:
        """Stop at once: samples still queued are not sent."""
        await asyncio.to_thread(self._outbox.close, False)

    # -- from the publisher's thread
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
