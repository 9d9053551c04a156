"""The config files of skyge nodes, one writer per kind, for the demo, the lab tests, the daemon
tests and the benchmarks alike.

Every writer renders settings with `skyge.services.common.config.render_config` (the seed's
``key = value;``), leaves out a setting whose value is None (the daemon's default applies), and
puts the file where the daemon looks for it (`NodePaths`), replacing it atomically. `node` is a
lab host or a node root folder (the daemon tests run a daemon under a temporary root)::

    ROOT/etc/skyge/DAEMON.cfg                        write_daemon_config
    ROOT/etc/skyge/lock.cfg (with its backend)       write_lock_config
    ROOT/etc/skyge/heartbeat.cfg and heartbeat.key   write_heartbeat_config, configure_heartbeat
    ROOT/etc/skyge/ha/slots/TYPE/SLOT/service.cfg    write_service_config
    ROOT/etc/skyge/emon/probes/NAME/probe.cfg        write_probe_config
    ROOT/etc/skyge/emon/ecs/PROBE/service.cfg        write_ecs_config

A test whose subject is the text itself (a bad line, the line number an error must name) writes
that text as it is.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from skyge.clients.lab.cluster import Lab, LabHost, LabNode
from skyge.clients.lab.errors import LabError
from skyge.clients.lab.etcd import endpoints_for
from skyge.services.common.atomic import write_atomic
from skyge.services.common.config import render_config
from skyge.services.common.paths import DAEMONS, NodePaths

__all__ = [
    "KEY_NAME", "NETID", "config_path", "configure_heartbeat", "lab_key", "service_dir",
    "write_daemon_config", "write_ecs_config", "write_heartbeat_config", "write_lock_config",
    "write_probe_config", "write_service_config",
]

#: the lab's cluster id (heartbeat.cfg `subnet`)
NETID = 1000
#: the cluster key's file name, next to heartbeat.cfg (its `key_file`)
KEY_NAME = "heartbeat.key"
#: the daemons with a ROOT/etc/skyge/NAME.cfg (the witness runs on a third machine)
CONFIGURED = (*DAEMONS, "witness")


def _paths(node: LabHost | Path) -> NodePaths:
    return NodePaths.at(node.root if isinstance(node, LabHost) else node)


def _write(path: Path, values: Mapping[str, Any]) -> Path:
    write_atomic(path, render_config({k: v for k, v in values.items() if v is not None}),
                 durable=False)
    return path


def config_path(node: LabHost | Path, daemon: str) -> Path:
    """ROOT/etc/skyge/DAEMON.cfg."""
    if daemon not in CONFIGURED:
        raise LabError(f"no config file for {daemon!r} (one of {', '.join(CONFIGURED)})")
    return _paths(node).config_file(daemon)


def write_daemon_config(node: LabHost | Path, daemon: str, values: Mapping[str, Any]) -> Path:
    """ROOT/etc/skyge/DAEMON.cfg holding `values` (lock.cfg, ha.cfg, emon.cfg, witness.cfg...);
    returns its path."""
    return _write(config_path(node, daemon), values)


def write_lock_config(node: LabNode, values: Mapping[str, Any] | None = None, *,
                      backend: str = "builtin",
                      etcd_members: Sequence[LabNode] | None = None) -> Path:
    """lock.cfg holding `values`, with the backend that grants the locks: "builtin" (the
    default: no backend line) or "etcd", then `backend = "etcd"` and `etcd_endpoints` = the
    private_ip:2379 of every member of the lab etcd (`etcd_members`, default: every node; this
    node's member first, see `skyge.clients.lab.etcd.start_etcd`). Returns its path."""
    merged = dict(values or {})
    if backend == "etcd":
        members = list(etcd_members if etcd_members is not None else node.lab.nodes)
        merged.update(backend="etcd", etcd_endpoints=endpoints_for(node, members))
    elif backend != "builtin":
        raise LabError(f"unknown lock backend {backend!r} (builtin or etcd)")
    return write_daemon_config(node, "lock", merged)


def lab_key(lab: Lab) -> bytes:
    """The lab's cluster key: made once per lab, kept in the lab's folder."""
    path = lab.root / "cluster.key"
    if not path.exists():
        write_atomic(path, secrets.token_bytes(32), durable=False, mode=0o600)
    return path.read_bytes()


def write_heartbeat_config(node: LabNode, *, key: bytes | None = None, netid: int = NETID,
                           domain: int | None = None, nics: Sequence[str] = ("eth0", "eth1"),
                           **extra: Any) -> Path:
    """heartbeat.cfg in the seed's keys (subnet = `netid`, domain = the node's id, netcard1/2 =
    `nics`), then `extra` (skyge's own keys); with `key`, the key file too (owner-only), named
    by key_file. Returns the config's path."""
    values: dict[str, Any] = {"domain": node.id if domain is None else domain, "subnet": netid}
    values.update({f"netcard{i}": nic for i, nic in enumerate(nics, 1)})
    if key is not None:
        write_atomic(_paths(node).etc / KEY_NAME, key, durable=False, mode=0o600)
        values["key_file"] = KEY_NAME
    values.update(extra)
    return write_daemon_config(node, "heartbeat", values)


def configure_heartbeat(lab: Lab, nodes: Iterable[LabNode] | None = None, **options: Any) -> None:
    """heartbeat.cfg on `nodes` (default: every node), all with the lab's cluster key;
    `options` as for `write_heartbeat_config`."""
    key = lab_key(lab)
    for node in nodes if nodes is not None else lab.nodes:
        write_heartbeat_config(node, key=key, **options)


def service_dir(node: LabHost | Path, type: str, slot: int) -> Path:
    """The folder of HA service TYPE/SLOT (random, fifo or stack; 0-1023)."""
    return _paths(node).etc / "ha" / "slots" / type / str(slot)


def write_service_config(node: LabHost | Path, type: str, slot: int,
                         values: Mapping[str, Any]) -> Path:
    """slots/TYPE/SLOT/service.cfg of the HA daemon; returns its path."""
    return _write(service_dir(node, type, slot) / "service.cfg", values)


def write_probe_config(node: LabHost | Path, probe: str, values: Mapping[str, Any]) -> Path:
    """emon/probes/PROBE/probe.cfg: a plug-in probe of the emon daemon; returns its path."""
    return _write(_paths(node).etc / "emon" / "probes" / probe / "probe.cfg", values)


def write_ecs_config(node: LabHost | Path, probe: str, values: Mapping[str, Any]) -> Path:
    """emon/ecs/PROBE/service.cfg: the watermarks on one probe's values; returns its path."""
    return _write(_paths(node).etc / "emon" / "ecs" / probe / "service.cfg", values)
