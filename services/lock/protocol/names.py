"""Lock names (a (slot, lock) pair or a group name) on the wire and in log lines."""
from __future__ import annotations

from collections.abc import Iterable

from skyge.v1 import lock_peer_pb2 as pp

from .table import Name, sort_key


def name_of(proto: pp.PeerLockName) -> Name:
    return proto.group if proto.group else (proto.slot, proto.lock)


def name_proto(name: Name) -> pp.PeerLockName:
    if isinstance(name, str):
        return pp.PeerLockName(group=name)
    return pp.PeerLockName(slot=name[0], lock=name[1])


def slot_lock(name: Name) -> tuple[int, int]:
    return (0, 0) if isinstance(name, str) else name


def names_text(names: Iterable[Name]) -> str:
    """Locks for a log line: "600/1, 600/2" (groups by name)."""
    return ", ".join(n if isinstance(n, str) else f"{n[0]}/{n[1]}"
                     for n in sorted(names, key=sort_key)) or "nothing"
