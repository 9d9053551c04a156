"""The heartbeat loop: one UDP socket per path, the core, the clock, in one dedicated thread.

Why a thread of its own: detection takes a few heartbeat intervals (a few ms each), so the loop
must never wait behind gRPC work or logging on the asyncio loop. The thread blocks in epoll with
the core's next wake-up as timeout; when that comes it first drains every queued datagram, then
runs `tick` and `outgoing`, so a link never expires while its datagram waits in a socket. It runs
at SCHED_FIFO priority when allowed (corosync does the same) and the interpreter's switch
interval is lowered, so a CPU hog or a busy gRPC thread costs it at most ~1 ms.

Receiving is batched once the send interval is long (many peers): after a drain the sockets
are not polled again for half the send interval (at most 20 ms, none below 5 ms), so at 64 nodes
(600 datagrams/s) the thread wakes ~50 times a second instead of 600. Batching costs no accuracy:
every datagram carries its kernel arrival time (SO_TIMESTAMPNS), which is what the core's
detectors and RTT see, and the drain before each tick means a batch never delays detection; only
joins and name updates may wait up to one window.

An arrival time is never taken as older than the batching window plus STALE_ARRIVAL_NS, though.
When the CPU cannot keep up (a storm of datagrams while 64 nodes discover each other), datagrams
queue in the socket for longer than a link's timeout; judged by their true age, links would expire
while their datagrams wait, each expiry shrinks the send interval again (the core sends faster
with fewer links up), and the storm feeds itself. Clamped, a link stays up as long as its
datagrams keep being read, as with stamps taken at read time.

The core is shared with the gRPC servicer under `lock`; every event the core returns is handed,
still under the lock, to `emit` (which numbers it and passes it to the asyncio loop), so event
order is the core's order. Socket errors are counted per path and never end the loop; a datagram
the core refuses is counted there. On `stop` the core's LEAVE datagrams go out on every path.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from skyge.services.common.wakepipe import WakePipe

from .core import Event, HeartbeatCore

__all__ = ["SWITCH_INTERVAL_S", "UdpTransport", "open_path_socket"]

#: the GIL is handed to a waiting thread after this long (default 5 ms): the heartbeat thread
#: waits at most about this for the interpreter when another thread is busy
SWITCH_INTERVAL_S = 0.001
#: datagrams read per socket before the loop checks its timers again (flood guard)
MAX_DRAIN_PER_TURN = 512
RECEIVE_BUFFER_BYTES = 1 << 20
MAX_DATAGRAM_READ = 65535
#: DSCP CS6 ("network control"), as routing protocols and corosync use; SO_PRIORITY 6 likewise
IP_TOS_CS6 = 0xC0
SOCKET_PRIORITY = 6
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ERROR_LOG_EVERY_NS = 10_000_000_000
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # cmsg type SCM_TIMESTAMPNS is the same
_TIMESPEC = struct.Struct("@qq")
CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
#: receive batching window: this fraction of the send interval, at most MAX_BATCH_NS
BATCH_FRACTION = 2
MAX_BATCH_NS = 20_000_000
MIN_BATCH_NS = 5_000_000  # below this a hold costs more wakeups than it saves
#: an arrival is taken as at most this much older than the batching window (see above)
STALE_ARRIVAL_NS = 2_000_000


def open_path_socket(nic: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on `port` that sends and receives on `nic` only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, nic.encode() + b"\0")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for level, option, value in ((socket.IPPROTO_IP, socket.IP_TOS, IP_TOS_CS6),
                                     (socket.SOL_SOCKET, getattr(socket, "SO_PRIORITY", 12),
                                      SOCKET_PRIORITY)):
            with contextlib.suppress(OSError):  # a nicety, not a requirement
                sock.setsockopt(level, option, value)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpTransport:
    """Runs `core` on real sockets in a thread. `emit(events)` is called with `lock` held."""

    def __init__(self, core: HeartbeatCore, lock: threading.Lock, nics: Mapping[int, str],
                 port: int, broadcast: Mapping[int, str], emit: Callable[[list[Event]], None],
                 logger: logging.Logger, *, realtime_priority: int = 0,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.core, self.lock, self.port, self.emit, self.logger = core, lock, port, emit, logger
        self.nics = dict(nics)
        self.broadcast = dict(broadcast)  # path -> IPv4 broadcast address for "send to all"
        self.realtime_priority = realtime_priority
        self.clock = clock
        self.send_errors: dict[int, int] = dict.fromkeys(self.nics, 0)
        self.receive_errors: dict[int, int] = dict.fromkeys(self.nics, 0)
        #: monotonic ns of the loop's latest turn (the daemon's health check reads it)
        self.last_turn_ns = clock()
        self._sockets: dict[int, socket.socket] = {}
        self._poll_all = select.epoll()  # every path's socket and the wake pipe
        self._poll_wake = select.epoll()  # the wake pipe only (while receiving is held)
        self._wake = WakePipe()
        self._stopping = False
        self._oldest_arrival_ns = STALE_ARRIVAL_NS
        self._thread: threading.Thread | None = None
        self._last_error_log_ns: dict[tuple[int, str], int] = {}

    # ---- life cycle (called from the asyncio thread)

    def open(self) -> None:
        """Bind every path's socket; OSError (e.g. port in use) propagates to the caller."""
        try:
            for path, nic in sorted(self.nics.items()):
                sock = open_path_socket(nic, self.port)
                self._sockets[path] = sock
                self._poll_all.register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            self.close()
            raise
        for poller in (self._poll_all, self._poll_wake):
            poller.register(self._wake.read_fd, select.EPOLLIN)

    def start(self) -> None:
        if not self._sockets:
            self.open()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name="heartbeat-loop", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Make the loop re-read the core's next wake-up (after a publish, say)."""
        self._wake.wake()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Send LEAVE on every path, end the thread, close the sockets."""
        self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.close()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._poll_all.close()
        self._poll_wake.close()
        self._wake.close()

    # ---- the loop (heartbeat thread)

    def _set_realtime(self) -> None:
        if self.realtime_priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
        except (OSError, AttributeError) as error:
            self.logger.warning("heartbeat thread runs without real-time priority (SCHED_FIFO %d "
                                "refused: %s); a loaded CPU may delay heartbeats",
                                self.realtime_priority, getattr(error, "strerror", error))

    def _run(self) -> None:
        self._set_realtime()
        clock, core, lock = self.clock, self.core, self.lock
        poll_all, poll_wake, wake_fd = self._poll_all, self._poll_wake, self._wake.read_fd
        hold_until = 0  # sockets are not polled before this (receive batching)
        while not self._stopping:
            try:
                now = clock()
                self.last_turn_ns = now
                with lock:
                    wake_at = core.next_wakeup_ns()
                    window = min(core.interval_ns // BATCH_FRACTION, MAX_BATCH_NS)
                    if window < MIN_BATCH_NS:
                        window = 0
                    self._oldest_arrival_ns = window + STALE_ARRIVAL_NS
                if wake_at <= now:
                    self._drain_all()
                    self._turn(clock())
                    continue
                holding = hold_until > now
                timeout_ns = (min(wake_at, hold_until) if holding else wake_at) - now
                ready = {fd for fd, _ in (poll_wake if holding else poll_all).poll(
                    timeout_ns / 1e9)}
                if wake_fd in ready:
                    self._wake.drain()
                    ready.discard(wake_fd)
                if ready:  # a socket is readable (only polled when not holding)
                    self._drain_all()
                    if window:
                        hold_until = clock() + window
            except Exception:
                self.logger.exception("heartbeat loop error (continuing)")
                time.sleep(0.001)
        self._send_leave()

    def _drain_all(self) -> None:
        """Read every queued datagram of every path (bounded), stamped with its kernel arrival
        time on the monotonic clock, and feed them to the core in one locked pass."""
        received: list[tuple[int, bytes, str, int]] = []
        for path, sock in self._sockets.items():
            self._read(path, sock, received)
        if not received:
            return
        # Arrival stamps are CLOCK_REALTIME; shift them onto the monotonic clock. A stamp is
        # never later than now, nor older than the window allows (see the module docstring; it
        # also covers a clock step between arrival and now).
        now_mono, now_real = self.clock(), time.time_ns()
        floor = now_mono - self._oldest_arrival_ns
        core = self.core
        with self.lock:
            events: list[Event] = []
            for path, data, address, real_ns in received:
                at_ns = min(now_mono, max(floor, now_mono - (now_real - real_ns))) if real_ns \
                    else now_mono
                events += core.receive(path, data, address, at_ns)
            if events:
                self.emit(events)

    def _read(self, path: int, sock: socket.socket,
              received: list[tuple[int, bytes, str, int]]) -> None:
        unpack = _TIMESPEC.unpack
        for _ in range(MAX_DRAIN_PER_TURN):
            try:
                data, ancillary, _, source = sock.recvmsg(MAX_DATAGRAM_READ, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.receive_errors[path] += 1
                self._log_error(path, "receive", error)
                return
            real_ns = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS \
                        and len(payload) >= _TIMESPEC.size:
                    seconds, nanoseconds = unpack(payload[:_TIMESPEC.size])
                    real_ns = seconds * 1_000_000_000 + nanoseconds
            received.append((path, data, source[0], real_ns))

    def _turn(self, now: int) -> None:
        with self.lock:
            events = self.core.tick(now)
            out = self.core.outgoing(now)
            if events:
                self.emit(events)
        self._send(out)

    def _send(self, out: Sequence[tuple[int, str | None, bytes]]) -> None:
        for path, destination, data in out:
            sock = self._sockets.get(path)
            if sock is None:
                continue
            try:
                sock.sendto(data, (destination or self.broadcast[path], self.port))
            except OSError as error:
                self.send_errors[path] += 1
                if error.errno not in (errno.ENETDOWN, errno.ENETUNREACH, errno.ENOBUFS,
                                       errno.EAGAIN):
                    self._log_error(path, "send", error)

    def _send_leave(self) -> None:
        try:
            with self.lock:
                out = self.core.leave(self.clock())
            self._send(out)
        except Exception:
            self.logger.exception("could not send LEAVE datagrams")

    def _log_error(self, path: int, what: str, error: OSError) -> None:
        now = self.clock()
        key = (path, what)
        if now - self._last_error_log_ns.get(key, -ERROR_LOG_EVERY_NS) >= ERROR_LOG_EVERY_NS:
            self._last_error_log_ns[key] = now
            self.logger.warning("path %d (%s): %s failed: %s (counted; logged at most every "
                                "10 s)", path, self.nics[path], what, error.strerror or error)
