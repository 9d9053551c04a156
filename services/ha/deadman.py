"""The deadman: a service stops where its ownership ends, even when nobody says so.

A lock holder learns that its hold ended from its lock daemon (`Lost`), but a lock daemon that
is frozen, starved or dead says nothing, and an HA event loop that is stalled hears nothing:
meanwhile the authority passes the lock on once the node's lease ran out. So every grant and
renewal carries `valid_until_boot_ns`, and this thread, outside the asyncio loop and at
real-time priority when allowed, stops what a service runs (SIGKILL of its process groups, its
floating IPs removed) `margin` before that time unless a renewal moved it.

Before it acts it reads the lock daemon's lease file (`NodePaths.lease_file`): a renewal the
stalled HA loop has not taken yet is there, so a pause of the HA daemon alone (its lock daemon
renewing all along) kills nothing. A node frozen as a whole stops this thread too: only a fence
command (see the lock daemon's `fence_command`) covers that case.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Protocol

from skyge.services.common.clock import boot_ns

__all__ = ["Deadman", "Owner"]

logger = logging.getLogger("skyge.ha.deadman")

#: act this long before the deadline: time to kill and remove addresses (a few ms) before the
#: lock daemon's own early warning and the authority's takeover guard run out
DEFAULT_MARGIN_NS = 20_000_000


class Owner(Protocol):
    """What the deadman guards: a service that holds its lock here."""

    name: str

    def stop_now(self) -> list[str]:
        """Kill what the service runs and remove its floating IPs, from any thread; returns
        what it did, for the log."""

    def expired(self, detail: str) -> None:
        """Tell the owner (thread-safe) that its ownership ended."""


class Deadman(threading.Thread):
    """One thread per HA daemon guarding every armed owner's deadline."""

    def __init__(self, lease_file: Path, *, margin_ns: int = DEFAULT_MARGIN_NS,
                 realtime_priority: int = 0, clock: Callable[[], int] = boot_ns) -> None:
        super().__init__(name="ha-deadman", daemon=True)
        self.lease_file = lease_file
        self.margin_ns = margin_ns
        self.realtime_priority = realtime_priority
        self.clock = clock
        self._deadlines: dict[Owner, int] = {}
        self._wake = threading.Condition()
        self._stopping = False

    # -- from the loop --------------------------------------------------------------------------
    def arm(self, owner: Owner, valid_until_ns: int) -> None:
        """`owner` holds its lock until `valid_until_ns` (CLOCK_BOOTTIME); a later call moves
        it (never earlier: renewals only grow)."""
        with self._wake:
            if valid_until_ns > self._deadlines.get(owner, 0):
                self._deadlines[owner] = valid_until_ns
                self._wake.notify()

    def disarm(self, owner: Owner) -> None:
        """`owner` no longer runs anything that needs guarding (stopped, released)."""
        with self._wake:
            self._deadlines.pop(owner, None)

    def deadline(self, owner: Owner) -> int:
        """The armed deadline (0 when not armed)."""
        with self._wake:
            return self._deadlines.get(owner, 0)

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self.is_alive():
            self.join(timeout=2.0)

    # -- the thread -----------------------------------------------------------------------------
    def lease_on_file(self) -> int:
        """The lock daemon's latest word on this node's lease (0 when unknown)."""
        try:
            return int(self.lease_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def run(self) -> None:
        if self.realtime_priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
            except (OSError, AttributeError) as error:
                logger.warning("deadman runs without real-time priority (%s)", error)
        while True:
            with self._wake:
                if self._stopping:
                    return
                now = self.clock()
                due = [o for o, until in self._deadlines.items() if now >= until - self.margin_ns]
                if not due:
                    soonest = min(self._deadlines.values(), default=0)
                    self._wake.wait((soonest - self.margin_ns - now) / 1e9 if soonest else None)
                    continue
                on_file = self.lease_on_file()
                fire = []
                for owner in due:
                    if on_file - self.margin_ns > now:  # renewed; the loop has not heard yet
                        self._deadlines[owner] = on_file
                    else:
                        del self._deadlines[owner]
                        fire.append(owner)
            for owner in fire:  # outside the lock: arm() from the loop never waits for a kill
                self._fire(owner)

    def _fire(self, owner: Owner) -> None:
        try:
            done = owner.stop_now()
        except Exception:  # noqa: BLE001 - one owner's failure must not stop the guard
            logger.exception("deadman: stopping %s failed", owner.name)
            done = ["(stop failed, see above)"]
        detail = "ownership deadline passed with no renewal from the lock daemon"
        logger.error("service %s: %s: stopped at once (%s)", owner.name, detail,
                     ", ".join(done) or "nothing ran")
        owner.expired(detail)
