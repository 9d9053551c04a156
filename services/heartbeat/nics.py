"""The NICs of this node's network namespace as the heartbeat daemon sees them: name, MAC,
addresses and IPv4 broadcast (read once at start), and whether a NIC is up now."""
from __future__ import annotations

from dataclasses import dataclass

import psutil

from .wire import MAX_ADDRESSES_PER_PATH

__all__ = ["NicInfo", "nic_up", "read_nics"]


@dataclass(frozen=True)
class NicInfo:
    name: str
    mac: str  # 12 lowercase hex digits, "" if none
    addresses: tuple[str, ...]  # IPv4 first, then IPv6 (link-local excluded)
    broadcast: str | None  # IPv4 broadcast address


def read_nics() -> dict[str, NicInfo]:
    """The NICs of this network namespace with MAC, addresses and IPv4 broadcast."""
    found: dict[str, NicInfo] = {}
    for name, entries in psutil.net_if_addrs().items():
        mac, v4, v6, broadcast = "", [], [], None
        for entry in entries:
            if entry.family == psutil.AF_LINK:
                mac = entry.address.replace(":", "").replace("-", "").lower()
            elif entry.family.name == "AF_INET":
                v4.append(entry.address)
                broadcast = broadcast or entry.broadcast
            elif entry.family.name == "AF_INET6" and not entry.address.lower().startswith("fe80"):
                v6.append(entry.address.split("%")[0])
        if mac and set(mac) == {"0"}:
            mac = ""
        found[name] = NicInfo(name, mac, tuple(v4 + v6)[:MAX_ADDRESSES_PER_PATH], broadcast)
    return found


def nic_up(name: str) -> bool:
    """True when the NIC is up with carrier (IFF_RUNNING), as seen from this namespace."""
    stats = psutil.net_if_stats().get(name)
    return bool(stats and stats.isup)
