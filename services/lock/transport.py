"""The lock protocol's loop: a thread of its own, so that nothing on the asyncio loop delays a
lease.

Votes, lease renewals and hold confirmations are due every 20-50 ms and their margins are a
few hundred ms; on the asyncio loop they waited behind gRPC work, logging and the collector
(timers measured up to 18 ms late there). This thread owns the UDP socket and the protocol's
timers: it blocks in epoll on the socket and a wake pipe with the node's next wake-up as
timeout, and every turn (datagrams read, a timer due, or a wake from the asyncio side) runs the
daemon's `turn` under the node's lock. It runs at SCHED_RR priority when allowed (below the
heartbeat thread's SCHED_FIFO), and the interpreter's switch interval is lowered so that it
waits at most ~1 ms for the GIL held by another thread.

The asyncio side (gRPC servicers, membership, fences, the two-node rule) changes the node under
the same lock and flushes what that produced itself (daemon.py); it calls `wake` only when the
change brought the thread's next wake-up forward. What the thread's turns produce for the loop
(session events, fence requests, log lines) comes back through the loop's
`call_soon_threadsafe`, once for every batch taken before the loop ran.
"""
from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable

from skyge.services.common.clock import boot_ns
from skyge.services.common.wakepipe import WakePipe

from .peer import PeerSocket

SWITCH_INTERVAL_S = 0.001
IDLE_WAIT_NS = 500_000_000  # with nothing scheduled (no node yet), look again this often
STOP_TIMEOUT_S = 2.0


class ProtocolThread:
    """Runs `on_datagrams(payloads)` and `turn() -> next wake-up (boot ns) or None` under `lock`
    in a thread of its own."""

    def __init__(self, sock: PeerSocket, lock: threading.RLock, *,
                 on_datagrams: Callable[[list[tuple[bytes, tuple[str, int]]]], None],
                 turn: Callable[[], int | None], realtime_priority: int,
                 logger: logging.Logger) -> None:
        self.sock, self.lock = sock, lock
        self.on_datagrams, self.turn = on_datagrams, turn
        self.realtime_priority = realtime_priority
        self.logger = logger
        self._wake = WakePipe()
        self._poll = select.epoll()
        self._poll.register(self._wake.read_fd, select.EPOLLIN)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._poll.register(self.sock.fileno(), select.EPOLLIN)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name="lock-protocol", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a turn soon (the asyncio side changed the node)."""
        self._wake.wake()

    def stop(self) -> None:
        """End the thread (after its current turn); the caller closes the socket."""
        self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        self._poll.close()
        self._wake.close()

    def _set_realtime(self) -> None:
        if self.realtime_priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(self.realtime_priority))
        except (OSError, AttributeError) as error:
            self.logger.warning("the lock protocol thread runs without real-time priority "
                                "(SCHED_RR %d refused: %s); a loaded CPU may delay lease "
                                "renewals and cost locks", self.realtime_priority,
                                getattr(error, "strerror", error))

    def _run(self) -> None:
        self._set_realtime()
        sock_fd, wake_fd = self.sock.fileno(), self._wake.read_fd
        wake_at: int | None = None
        while not self._stopping:
            try:
                timeout_ns = IDLE_WAIT_NS if wake_at is None else max(0, wake_at - boot_ns())
                ready = {fd for fd, _ in self._poll.poll(timeout_ns / 1e9)}
                if wake_fd in ready:
                    self._wake.drain()
                if self._stopping:
                    break
                with self.lock:
                    if sock_fd in ready:
                        datagrams = self.sock.receive()
                        if datagrams:
                            self.on_datagrams(datagrams)
                    wake_at = self.turn()
            except Exception:
                self.logger.exception("lock protocol loop error (continuing)")
                wake_at = None
                time.sleep(0.001)
