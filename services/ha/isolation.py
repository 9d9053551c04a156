"""Network isolation (the seed's 孤岛): every heartbeat path to every peer is lost and no
reference IP answers.

`IsolationMonitor` is told each membership view. While the node sees no peer (after it has seen
one: a single-node cluster is never isolated), it pings the reference IPs every `CHECK_S`:

- one answers: the node is healthy, its peers are gone (they crashed, or the fault is theirs);
  what it may keep running is the lock's quorum rule's business, not this monitor's;
- none answers: the node is isolated: `on_isolated` runs once for the episode (the HA daemon
  stops what runs here and runs the isolation script); the episode ends when a peer is seen
  again. With no reference IP configured nothing can be told, and nothing is done.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from skyge.services.common.reference import ping_any

__all__ = ["CHECK_S", "PING_TIMEOUT_S", "IsolationMonitor"]

#: time between two reference-IP checks while the node sees no peer
CHECK_S = 1.0
PING_TIMEOUT_S = 0.3

logger = logging.getLogger("skyge.ha")


class IsolationMonitor:
    def __init__(self, reference_ips: Sequence[str],
                 on_isolated: Callable[[str], Awaitable[None]], *,
                 ping: Callable[[Sequence[str], float], Awaitable[bool]] = ping_any) -> None:
        self.reference_ips = list(reference_ips)
        self._on_isolated = on_isolated
        self._ping = ping
        self.isolated = False
        self._seen_peer = False
        self._task: asyncio.Task | None = None

    @property
    def alone(self) -> bool:
        return self._task is not None

    def update(self, peers: int) -> None:
        """A membership view with `peers` other members."""
        if peers:
            self._seen_peer = True
            if self._task is not None:
                self._task.cancel()
                self._task = None
                if self.isolated:
                    logger.log(25, "isolation over: a peer is seen again")
                self.isolated = False
            return
        if self._seen_peer and self._task is None and self.reference_ips:
            self._task = asyncio.create_task(self._check(), name="ha-isolation")

    async def _check(self) -> None:
        ips = ", ".join(self.reference_ips)
        told_healthy = False
        while not self.isolated:
            if await self._ping(self.reference_ips, PING_TIMEOUT_S):
                if not told_healthy:
                    logger.warning("every peer is lost, but a reference IP answers (%s): not "
                                   "isolated", ips)
                    told_healthy = True
                await asyncio.sleep(CHECK_S)
                continue
            self.isolated = True
            detail = f"no peer on any heartbeat path and no reference IP answers ({ips})"
            logger.critical("this node is isolated: %s", detail)
            await self._on_isolated(detail)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
