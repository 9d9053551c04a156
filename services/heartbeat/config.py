"""heartbeat.cfg: the seed's jiluos.cfg keys as they are, plus skyge's optional ones.

The seed's file works unchanged::

    domain=1;
    subnet=1000;
    netcard1="eth0";
    netcard2="eth1";

Optional keys (every one states its unit):

- `netid`: another name for `subnet` (1–1024). `netcard3` .. `netcard8`: more paths, one NIC each.
- `key_file`: the cluster key (at least 16 bytes, the same file on every node; `skyge heartbeat
  keygen` writes one). Every datagram is signed (HMAC-SHA256) and replays are refused; without
  it the daemon starts only with `insecure = yes`. `accept_key_file`: a second key
  accepted during a rotation, never used to sign (see services/common/keys.py).
- `peers`: static peers for routed networks, per path: `"1:10.1.0.5,10.1.0.6; 2:10.2.0.5"`.
  A path with static peers sends to them only (no broadcast); other paths broadcast.
- `port`: UDP port of the heartbeat datagrams (default 7400), the same on every node.
- `detector`: "fixed" or "adaptive" failure detector (see detector.py; default below, chosen by
  measuring both on the lab).
- `interval_ms`: the shortest heartbeat interval (default 5); `max_receive_rate`: datagrams per
  second a node may receive in all (default 600; the interval grows with the number of links so
  that this holds); `min_timeout_ms` (default 20 fixed, 25 adaptive), `misses` (fixed, default 4)
  / `max_misses` (adaptive, default 10): detector bounds.
- `realtime_priority`: SCHED_FIFO priority of the heartbeat thread, 1–99, 0 for none (default 10).

Paths in the file live under the node root: an absolute `key_file` is taken under ROOT, a
relative one under ROOT/etc/skyge.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Mapping

from skyge.services.common.config import ConfigError, Field, choice, integer, string
from skyge.services.common.paths import NodePaths

from skyge.services.common.keys import MAX_KEY_BYTES, key_path

from .core import DEFAULT_MAX_RECEIVE_RATE_PER_S, DEFAULT_MIN_INTERVAL_NS, Timing
from .detector import DETECTORS, AdaptiveDetector, FailureDetector, FixedDetector
from .wire import MAX_DOMAIN, MAX_NETID, MAX_PATHS

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_PORT",
    "FIELDS",
    "MAX_KEY_BYTES",
    "NIC_PATTERN",
    "Settings",
    "check_nics",
    "key_path",
    "parse_peers",
    "path_key",
    "settings_from",
]

DEFAULT_PORT = 7400
#: chosen by `bench.heartbeat_detect` / `bench.heartbeat_soak` on the 3-node lab (see docs)
DEFAULT_DETECTOR = "adaptive"
DEFAULT_REALTIME_PRIORITY = 10
#: The daemon's floor for the adaptive detector's timeout (the class alone uses 15 ms). On the
#: 3-node lab a sender's heartbeats on both paths now and then stop for 10-15 ms (kernel work,
#: a namespace being torn down): with 15 ms that was 1 false node-down in 60 crash trials; 25 ms
#: keeps the median detection at ~22 ms and has shown none.
ADAPTIVE_MIN_TIMEOUT_MS = 25
#: a Linux interface name: 1–15 characters, no '/', ':' or whitespace
NIC_PATTERN = r"[A-Za-z0-9_.@-]{1,15}"
MS = 1_000_000


def path_key(path: int) -> str:
    """The config key of a path's NIC: netcard1 .. netcard8."""
    return f"netcard{path}"


def parse_peers(text: str) -> dict[int, tuple[str, ...]]:
    """`"1:10.1.0.5,10.1.0.6; 2:10.2.0.5"` -> {1: ("10.1.0.5", "10.1.0.6"), 2: ("10.2.0.5",)}."""
    peers: dict[int, tuple[str, ...]] = {}
    for group in filter(None, (g.strip() for g in text.split(";"))):
        number, sep, addresses = group.partition(":")
        if not sep or not number.strip().isdigit() or not 1 <= int(number) <= MAX_PATHS:
            raise ValueError(f'must be "PATH:IP,IP;PATH:IP" with PATH from 1 to {MAX_PATHS}; '
                             f"got {group!r}")
        path = int(number)
        if path in peers:
            raise ValueError(f"path {path} is listed twice")
        found = []
        for address in filter(None, (a.strip() for a in addresses.split(","))):
            try:
                found.append(str(ipaddress.ip_address(address)))
            except ValueError:
                raise ValueError(f"path {path}: {address!r} is not an IP address") from None
        if not found:
            raise ValueError(f"path {path}: no address given")
        peers[path] = tuple(found)
    return peers


def _peers(value: Any) -> dict[int, tuple[str, ...]]:
    if not isinstance(value, str):
        raise ValueError(f'must be a quoted string like "1:10.1.0.5,10.1.0.6; 2:10.2.0.5", '
                         f"got {value!r}")
    return parse_peers(value)


FIELDS: tuple[Field, ...] = (
    Field("domain", integer(1, MAX_DOMAIN), help="node id, unique in the cluster"),
    Field("subnet", integer(1, MAX_NETID), aliases=("netid",),
          help="cluster id (the seed's netid): nodes with the same one form a cluster"),
    *(Field(path_key(n), string(NIC_PATTERN, "a network interface name (1-15 characters)"),
            help=f"NIC of heartbeat path {n}") for n in range(1, MAX_PATHS + 1)),
    Field("key_file", string(r".+", "a file name"), help="cluster key file (>= 16 bytes)"),
    Field("accept_key_file", string(r".+", "a file name"),
          help="a second key accepted during a rotation, never used to sign"),
    Field("peers", _peers, default={}, help="static peers per path for routed networks"),
    Field("port", integer(1, 65535), default=DEFAULT_PORT, help="UDP port of the datagrams"),
    Field("detector", choice(*DETECTORS), default=DEFAULT_DETECTOR, help="failure detector"),
    Field("interval_ms", integer(1, 10_000), default=DEFAULT_MIN_INTERVAL_NS // MS,
          help="shortest heartbeat interval, ms"),
    Field("max_receive_rate", integer(10, 100_000), default=DEFAULT_MAX_RECEIVE_RATE_PER_S,
          help="datagrams per second a node may receive in all"),
    Field("min_timeout_ms", integer(1, 60_000), help="shortest link timeout, ms"),
    Field("misses", integer(1, 100), help="fixed detector: intervals of silence before down"),
    Field("max_misses", integer(2, 100), help="adaptive detector: most intervals before down"),
    Field("realtime_priority", integer(0, 99), default=DEFAULT_REALTIME_PRIORITY,
          help="SCHED_FIFO priority of the heartbeat thread (0: none)"),
)


@dataclass(frozen=True)
class Settings:
    """A validated heartbeat.cfg, ready for the daemon."""

    netid: int
    domain: int
    nics: Mapping[int, str]  # path -> NIC
    peers: Mapping[int, tuple[str, ...]]
    key_file: Path | None
    port: int
    detector: str
    timing: Timing
    realtime_priority: int


def _detector_factory(values: Mapping[str, Any]) -> Callable[[], FailureDetector]:
    options: dict[str, Any] = {}
    if values.get("min_timeout_ms") is not None:
        options["min_timeout_ns"] = values["min_timeout_ms"] * MS
    elif values["detector"] == "adaptive":
        options["min_timeout_ns"] = ADAPTIVE_MIN_TIMEOUT_MS * MS
    if values["detector"] == "fixed":
        if values.get("misses") is not None:
            options["misses"] = values["misses"]
        return functools.partial(FixedDetector, **options) if options else FixedDetector
    if values.get("max_misses") is not None:
        options["max_misses"] = values["max_misses"]
    return functools.partial(AdaptiveDetector, **options) if options else AdaptiveDetector


def settings_from(values: Mapping[str, Any], config_path: Path | str,
                  paths: NodePaths) -> Settings:
    """Check what the schema cannot (required keys, cross-key rules); raise ConfigError."""
    where = str(config_path)
    hint = "configure it with `skyge heartbeat config -n NETID -d DOMAIN -e NIC -p PATH`"
    for key in ("domain", "subnet"):
        if values.get(key) is None:
            raise ConfigError(f"is required but missing; {hint}", path=where, key=key)
    nics = {n: values[path_key(n)] for n in range(1, MAX_PATHS + 1)
            if values.get(path_key(n)) is not None}
    if not nics:
        raise ConfigError(f"no heartbeat path: set at least one of netcard1..netcard{MAX_PATHS}; "
                          f"{hint}", path=where, key="netcard1")
    seen: dict[str, int] = {}
    for number, nic in sorted(nics.items()):
        if nic in seen:
            raise ConfigError(f"NIC {nic!r} is already path {seen[nic]}: each path needs its "
                              f"own NIC", path=where, key=path_key(number))
        seen[nic] = number
    peers = values.get("peers") or {}
    for number in peers:
        if number not in nics:
            raise ConfigError(f"path {number} has static peers but no {path_key(number)}",
                              path=where, key="peers")
    for key, detector in (("misses", "fixed"), ("max_misses", "adaptive")):
        if values.get(key) is not None and values["detector"] != detector:
            raise ConfigError(f"applies to the {detector} detector only (detector is "
                              f"{values['detector']!r})", path=where, key=key)
    try:
        timing = Timing(min_interval_ns=values["interval_ms"] * MS,
                        max_receive_rate_per_s=values["max_receive_rate"],
                        detector=_detector_factory(values))
        _detector_factory(values)()  # the detector's own checks
    except ValueError as error:
        raise ConfigError(str(error), path=where) from None
    key_file = values.get("key_file")
    return Settings(values["subnet"], values["domain"], nics, peers,
                    key_path(key_file, paths) if key_file else None, values["port"],
                    values["detector"], timing, values["realtime_priority"])


def check_nics(nics: Mapping[int, str], available: Iterable[str],
               config_path: Path | str | None = None) -> None:
    """ConfigError naming the key and the NIC when a configured NIC does not exist here."""
    present = sorted(set(available))
    for number, nic in sorted(nics.items()):
        if nic not in present:
            raise ConfigError(f"no network interface {nic!r} on this node (it has "
                              f"{', '.join(present) or 'none'})",
                              path=str(config_path) if config_path is not None else None,
                              key=path_key(number))


def nic_name_ok(nic: str) -> bool:
    return re.fullmatch(NIC_PATTERN, nic) is not None
