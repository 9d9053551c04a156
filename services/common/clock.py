"""The one clock for leases and ownership deadlines on a host: CLOCK_BOOTTIME.

Monotonic like CLOCK_MONOTONIC, but it counts the time a host spends suspended, so a lease that
ran out during a suspend is seen as over at resume. The lock daemon's leases, the
`valid_until_boot_ns` it hands to holders and the HA deadman all read it, so their deadlines
compare without conversion. Never compared across hosts: only durations travel.
"""
from __future__ import annotations

import time

__all__ = ["boot_ns"]


def boot_ns() -> int:
    """CLOCK_BOOTTIME, ns."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
