"""The daemons' one way to publish on their own node's buses, never blocking the daemon.

Log records (`logsetup.BusLogHandler`, `-t bus|all`), HA state changes and emon samples all go
through a `LocalBusPublisher`: `offer(bus, data)` only appends to a bounded queue, from any
thread, with or without an event loop (a log record may come from the heartbeat thread, or
after the loop has ended); a worker thread of the publisher's own, started on the first offer,
sends what is queued in batches, one Publish per bus, over the bus daemon's Unix socket.

- The bus daemon unreachable (UNAVAILABLE, DEADLINE_EXCEEDED: stopped, restarting): the batch
  goes back in front of the queue and the worker tries again after `retry_s` (doubling up to
  `retry_max_s`), on a fresh channel (it reconnects at once, with no gRPC back-off).
- A bus that does not exist (NOT_FOUND): with `create_buses` it is created once (CreateBus),
  and the batch published again; otherwise, like any other refusal, the batch is dropped.
- The queue full (`limit`): a message is dropped, the newest one offered (`keep="oldest"`: the
  start of an outage is kept) or the oldest queued (`keep="newest"`: the latest values are kept).

Every message is sent or counted (`sent`, `dropped`); `failures` counts the failed Publish calls.
`on_failure(why)` and `on_success()` run on the worker thread after each failed or successful
Publish (to log an outage once, say); `notice(lost)` makes the message that leads the next batch
after `lost` messages were dropped (the log bus says so in the stream itself).

The bus client library (`skyge.services.bus.client`) is for applications: it publishes to any
node's buses, waits for room and raises refusals; a daemon must do neither.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import grpc

from skyge.v1 import bus_pb2, bus_pb2_grpc

__all__ = ["LocalBusPublisher"]

logger = logging.getLogger("skyge.publisher")

#: every message the daemons publish is a JSON object
CONTENT_TYPE = "application/json"
#: the bus daemon is not there (yet): try again later, keeping the messages
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class LocalBusPublisher:
    """Publishes on the buses of this node's bus daemon (see the module doc)."""

    def __init__(self, socket_path: Path, *, name: str, limit: int = 1000, batch: int = 256,
                 timeout_s: float = 2.0, retry_s: float = 1.0, retry_max_s: float | None = None,
                 keep: Literal["oldest", "newest"] = "oldest", create_buses: bool = False,
                 notice: Callable[[int], bytes] | None = None,
                 on_failure: Callable[[str], None] | None = None,
                 on_success: Callable[[], None] | None = None) -> None:
        self.socket_path, self.name = socket_path, name
        self.limit, self.batch, self.timeout_s = limit, batch, timeout_s
        self.retry_s = retry_s
        self.retry_max_s = retry_s if retry_max_s is None else retry_max_s
        self.keep, self.create_buses = keep, create_buses
        self._notice, self._on_failure, self._on_success = notice, on_failure, on_success
        self.queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self.sent = self.dropped = self.failures = 0
        self._reported = 0  # `dropped` as last told by a notice
        self._in_flight = 0
        self._created: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._drain = True
        self._channel: grpc.Channel | None = None
        self._stub: bus_pb2_grpc.BusStub | None = None

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being sent."""
        return not self.queue and not self._in_flight

    def in_worker(self) -> bool:
        """Whether the caller is this publisher's worker thread."""
        return threading.current_thread() is self._thread

    # -- any thread
    def start(self) -> None:
        """Start the worker now (else the first offer does)."""
        with self._cond:
            self._start()

    def offer(self, bus: str, data: bytes) -> bool:
        """Queue `data` for `bus`; never blocks. False when a message was dropped for it."""
        with self._cond:
            if self._closing:
                self.dropped += 1
                return False
            kept = True
            if len(self.queue) >= self.limit:
                self.dropped += 1
                if self.keep == "oldest":
                    return False
                self.queue.popleft()
                kept = False
            self.queue.append((bus, data))
            self._start()
            self._cond.notify()
            return kept

    def lose(self, count: int) -> None:
        """Count messages the caller could not even make (they are reported as dropped)."""
        with self._cond:
            self.dropped += count

    def close(self, drain: bool = True) -> None:
        """Stop the worker: first sending what is queued (one try, bounded by `timeout_s`) when
        `drain`, else at once (what is queued is forgotten)."""
        with self._cond:
            self._closing, self._drain = True, drain
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s + 0.5)

    def _start(self) -> None:
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    # -- the worker thread
    def _take(self) -> list[tuple[str, bytes]] | None:
        """The next batch (waiting for one), or None once closing."""
        with self._cond:
            while not self.queue and not self._closing:
                self._cond.wait()
            if self._closing and not (self._drain and self.queue):
                self.queue.clear()
                return None
            items = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
            self._in_flight = len(items)
            return items

    def _requeue(self, items: list[tuple[str, bytes]]) -> None:
        """Put unsent messages back in front, in order; past the limit the `keep` rule drops."""
        with self._cond:
            self.queue.extendleft(reversed(items))
            while len(self.queue) > self.limit:
                if self.keep == "oldest":
                    self.queue.pop()
                else:
                    self.queue.popleft()
                self.dropped += 1

    def _pause(self, delay: float) -> None:
        """Wait before trying again (not woken by offers: the bus daemon is away); when closing,
        give up what is queued instead."""
        with self._cond:
            until = time.monotonic() + delay
            while not self._closing and (left := until - time.monotonic()) > 0:
                self._cond.wait(left)
            if self._closing:
                self.dropped += len(self.queue)
                self.queue.clear()

    def _run(self) -> None:
        delay = self.retry_s
        try:
            while (items := self._take()) is not None:
                ok = self._send(items)
                with self._cond:
                    self._in_flight = 0
                if ok:
                    delay = self.retry_s
                    continue
                self._pause(delay)
                delay = min(delay * 2, self.retry_max_s)
        finally:
            self._disconnect()

    def _send(self, items: list[tuple[str, bytes]]) -> bool:
        """Publish a batch, one request per bus; False when a Publish failed."""
        groups: dict[str, list[bytes]] = {}
        for bus, data in items:
            groups.setdefault(bus, []).append(data)
        pending = list(groups.items())
        ok = True
        while pending:
            bus, messages = pending.pop(0)
            lost = self.dropped - self._reported
            head = [self._notice(lost)] if self._notice is not None and lost > 0 else []
            try:
                self._publish(bus, head + messages)
            except grpc.RpcError as error:
                code = error.code()
                if code in _UNREACHABLE:
                    self._requeue([(bus, data) for data in messages] +
                                  [(b, data) for b, later in pending for data in later])
                    self._disconnect()
                    pending = []
                else:
                    self.lose(len(messages))
                self.failures += 1
                ok = False
                if self._on_failure is not None:
                    self._on_failure(f"{code.name}: {error.details()}")
                continue
            except Exception as error:  # a bug here must not end the worker
                logger.debug("publishing on %s failed", bus, exc_info=True)
                self.lose(len(messages))
                self.failures += 1
                ok = False
                if self._on_failure is not None:
                    self._on_failure(f"{type(error).__name__}: {error}")
                continue
            self.sent += len(messages)
            self._reported += lost if head else 0
            if self._on_success is not None:
                self._on_success()
        return ok

    def _publish(self, bus: str, messages: list[bytes]) -> None:
        if self._stub is None:
            self._channel = grpc.insecure_channel(f"unix:{self.socket_path}")
            self._stub = bus_pb2_grpc.BusStub(self._channel)
        stub = self._stub
        request = bus_pb2.PublishRequest(domain=0, name=bus, messages=[
            bus_pb2.Payload(data=data, content_type=CONTENT_TYPE) for data in messages])
        try:
            stub.Publish(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            if not self.create_buses or error.code() != grpc.StatusCode.NOT_FOUND or \
                    bus in self._created:
                raise
            # a bus nobody made yet (a plug-in's, or one deleted by hand): create it once
            try:
                stub.CreateBus(bus_pb2.CreateBusRequest(domain=0, name=bus),
                               timeout=self.timeout_s)
            except grpc.RpcError as create_error:
                if create_error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            self._created.add(bus)
            logger.info("created bus %s on this node", bus)
            stub.Publish(request, timeout=self.timeout_s)

    def _disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None
