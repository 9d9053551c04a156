"""The processes of a namespace: found through /proc, signalled by PID (never by name).

A process belongs to a lab host when its network namespace (``/proc/PID/ns/net``) is the host's
named namespace (``/run/netns/NAME``: same device and inode) or its mount namespace is the one the
host's holder process created. Signals go through a pidfd opened *before* the ownership check, so
a PID recycled between the scan and the signal is never hit.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Mapping

NsId = tuple[int, int]


def ns_id(path: str) -> NsId | None:
    """(device, inode) of a namespace file, or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pid_ns(pid: int, kind: str) -> NsId | None:
    return ns_id(f"/proc/{pid}/ns/{kind}")


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def scan(net: Mapping[NsId, str], mnt: Mapping[NsId, str] | None = None) -> dict[str, list[int]]:
    """PIDs grouped by the label of the namespace they are in (net first, then mount)."""
    found: dict[str, list[int]] = {label: [] for label in (*net.values(), *(mnt or {}).values())}
    me = os.getpid()
    for pid in all_pids():
        if pid == me:
            continue
        label = net.get(pid_ns(pid, "net") or (0, 0))
        if label is None and mnt:
            label = mnt.get(pid_ns(pid, "mnt") or (0, 0))
        if label is not None:
            found[label].append(pid)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stat_fields(pid: int) -> tuple[str, str, int] | None:
    """(command name, state letter, start time in clock ticks) or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    name = raw[raw.find("(") + 1:raw.rfind(")")]
    rest = raw[raw.rfind(")") + 2:].split()
    return name, rest[0], int(rest[19])


def state(pid: int) -> str | None:
    """The state letter (R, S, D, T, t, Z...) of a process, or None when it is gone."""
    fields = stat_fields(pid)
    return fields[1] if fields else None


def start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return fields[2] if fields else None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    return state(pid) not in (None, "Z", "X")


def send(pids: Iterable[int], sig: int, owned: Callable[[int], bool]) -> list[int]:
    """Send *sig* to each PID that `owned(pid)` still accepts; return the PIDs signalled."""
    sent = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if owned(pid):
                signal.pidfd_send_signal(fd, sig)
                sent.append(pid)
        except OSError:
            pass
        finally:
            os.close(fd)
    return sent


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every PID has exited (zombies count as exited); return those still running."""
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # already gone
            fds[os.pidfd_open(pid)] = pid
    try:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        pending = dict(fds)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                pending.pop(fd, None)
        return sorted(pending.values())
    finally:
        for fd in fds:
            os.close(fd)


def wait_state(pids: Iterable[int], states: str, timeout: float) -> list[int]:
    """Wait (bounded) until each live PID's state letter is in *states*; return the laggards."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending
                   if (s := state(p)) is not None and s not in states and s != "Z"]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.005)
