"""Floating IPs: add / remove an IPv4 address with its label and broadcast on a NIC (netlink).

The only pyroute2 user of skyge. Every operation is idempotent: adding an address already on the
NIC, or removing one that is not there, succeeds (the return value says whether anything
changed). The async functions (`add`, `remove`, `present`) are for the HA daemon's event loop;
pyroute2's synchronous `IPRoute` cannot run inside a running loop, so code outside a loop (tools,
tests) uses `add_sync`, `remove_sync`, `present_sync`. Everything acts in the network namespace of
the calling process (in the lab: the node's).

Adding also sets ``net.ipv4.conf.NIC.promote_secondaries = 1`` (best effort, as keepalived does):
without it, removing a floating IP that happens to be the NIC's primary address in its subnet
would silently remove every other address of that subnet too (other services' floating IPs).

Each call opens its own netlink socket (about 0.3 ms); pass ``ipr=`` to reuse one.
"""
from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from skyge.services.ha.service_config import FloatingIp

__all__ = [
    "FipError",
    "add",
    "add_sync",
    "labels",
    "present",
    "present_sync",
    "remove",
    "remove_sync",
]


class FipError(Exception):
    """A floating IP could not be added or removed; the message says which and why."""


def _index(fip: FloatingIp) -> int:
    try:
        return socket.if_nametoindex(fip.nic)
    except OSError:
        raise FipError(f"{fip.cidr} on {fip.nic}: no NIC {fip.nic!r} on this node") from None


def _promote_secondaries(nic: str) -> None:
    knob = Path("/proc/sys/net/ipv4/conf") / nic / "promote_secondaries"
    try:
        if knob.read_text().strip() != "1":
            knob.write_text("1\n")
    except OSError:
        pass


def _add_args(fip: FloatingIp, index: int) -> dict[str, object]:
    args: dict[str, object] = {"index": index, "address": fip.ip, "prefixlen": fip.prefixlen,
                               "broadcast": fip.broadcast}
    if fip.label:
        args["label"] = fip.label
    return args


def _error(verb: str, fip: FloatingIp, error: NetlinkError) -> FipError:
    return FipError(f"cannot {verb} {fip.cidr} ({fip.label or fip.nic}) on {fip.nic}: "
                    f"{error.args[1] if len(error.args) > 1 else error}")


def _has(records: Iterable[Any], ip: str) -> bool:
    return any(r.get("IFA_ADDRESS") == ip or r.get("IFA_LOCAL") == ip for r in records)


# --- async (the daemon) -------------------------------------------------------------------------
async def present(fip: FloatingIp, *, ipr: AsyncIPRoute | None = None) -> bool:
    """Whether fip.ip is on fip.nic (whatever its prefix length or label)."""
    index = _index(fip)
    if ipr is None:
        async with AsyncIPRoute() as own:
            return await present(fip, ipr=own)
    return _has([r async for r in await ipr.get_addr(index=index, family=socket.AF_INET)], fip.ip)


async def add(fip: FloatingIp, *, ipr: AsyncIPRoute | None = None) -> bool:
    """Add the address (label, broadcast); True if added, False if it was already there."""
    index = _index(fip)
    if ipr is None:
        async with AsyncIPRoute() as own:
            return await add(fip, ipr=own)
    _promote_secondaries(fip.nic)
    try:
        await ipr.addr("add", **_add_args(fip, index))
    except NetlinkError as error:
        if error.code == errno.EEXIST:
            return False
        raise _error("add", fip, error) from None
    return True


async def remove(fip: FloatingIp, *, ipr: AsyncIPRoute | None = None) -> bool:
    """Remove the address; True if removed, False if it was not there."""
    index = _index(fip)
    if ipr is None:
        async with AsyncIPRoute() as own:
            return await remove(fip, ipr=own)
    try:
        await ipr.addr("del", index=index, address=fip.ip, prefixlen=fip.prefixlen)
    except NetlinkError as error:
        if error.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
            return False
        raise _error("remove", fip, error) from None
    return True


# --- sync (outside an event loop) ---------------------------------------------------------------
def present_sync(fip: FloatingIp) -> bool:
    index = _index(fip)
    with IPRoute() as ipr:
        return _has(ipr.get_addr(index=index, family=socket.AF_INET), fip.ip)


def add_sync(fip: FloatingIp) -> bool:
    index = _index(fip)
    _promote_secondaries(fip.nic)
    with IPRoute() as ipr:
        try:
            ipr.addr("add", **_add_args(fip, index))
        except NetlinkError as error:
            if error.code == errno.EEXIST:
                return False
            raise _error("add", fip, error) from None
    return True


def remove_sync(fip: FloatingIp) -> bool:
    index = _index(fip)
    with IPRoute() as ipr:
        try:
            ipr.addr("del", index=index, address=fip.ip, prefixlen=fip.prefixlen)
        except NetlinkError as error:
            if error.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return False
            raise _error("remove", fip, error) from None
    return True


def labels(nic: str) -> dict[str, str]:
    """{address: label} of the IPv4 addresses on `nic` (for status views and tests)."""
    try:
        index = socket.if_nametoindex(nic)
    except OSError:
        raise FipError(f"no NIC {nic!r} on this node") from None
    with IPRoute() as ipr:
        return {r.get("IFA_LOCAL") or r.get("IFA_ADDRESS"): r.get("IFA_LABEL") or nic
                for r in ipr.get_addr(index=index, family=socket.AF_INET)}
