"""systemd readiness and watchdog notification (sd_notify protocol), without libsystemd.

When a unit has `Type=notify` systemd sets NOTIFY_SOCKET; `WatchdogSec=` sets WATCHDOG_USEC. Outside
systemd both are absent and every call here is a no-op.
"""
from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send one state line ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=..."); True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd asked for (seconds), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.01)
    except ValueError:
        return None
