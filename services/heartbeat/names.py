"""The cluster-wide name table: the seed's `jl_config -s` table (Type, Lower, Upper, Port Identity,
Publication, Scope).

A publication binds a range of instances `[lower, upper]` of a `type` to a value (an address, a
port, a service name...) on behalf of its publisher node. Node-scope publications stay on the node
that made them; cluster-scope ones travel in the node's ANNOUNCE datagrams, and each peer's set is
replaced wholesale when a newer version of it arrives. Whole-set replacement (instead of deltas)
means a lost datagram can never leave a table subtly wrong: the next complete set fixes it.

Pure: no I/O, no clock. Times are passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from collections.abc import Iterable

__all__ = [
    "MAX_CLUSTER_PUBLICATIONS",
    "MAX_NODE_PUBLICATIONS",
    "MAX_VALUE_BYTES",
    "U32_MAX",
    "NameEvent",
    "NamePublished",
    "NameTable",
    "NameTableError",
    "NameTableFull",
    "NameWithdrawn",
    "Publication",
    "Scope",
    "validate_publication_fields",
]

U32_MAX = 0xFFFF_FFFF
# Bounded so one node's whole cluster set always fits in a few ANNOUNCE datagrams (see wire.py).
MAX_CLUSTER_PUBLICATIONS = 256
# Node-scope publications never leave the node; bounded only to cap the daemon's memory.
MAX_NODE_PUBLICATIONS = 4096
MAX_VALUE_BYTES = 256


class NameTableError(ValueError):
    """A publish/withdraw request is invalid; `field` names the offending argument."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NameTableFull(NameTableError):
    """The node already holds the most publications of that scope (a quota, not a bad value)."""


class Scope(IntEnum):  # values as skyge.v1.Scope
    NODE = 1
    CLUSTER = 2


@dataclass(frozen=True, slots=True)
class Publication:
    type: int
    lower: int
    upper: int
    scope: Scope
    value: bytes
    publisher: tuple[int, int]  # (netid, domain)
    publication_id: int
    published_unix_ns: int  # the publisher's wall clock: for display only, never compared

    def covers(self, instance: int) -> bool:
        return self.lower <= instance <= self.upper


@dataclass(frozen=True, slots=True)
class NamePublished:
    at_ns: int
    publication: Publication

    @property
    def text(self) -> str:
        return f"Published name {_describe(self.publication)}"


@dataclass(frozen=True, slots=True)
class NameWithdrawn:
    at_ns: int
    publication: Publication

    @property
    def text(self) -> str:
        return f"Withdrew name {_describe(self.publication)}"


NameEvent = NamePublished | NameWithdrawn


def _describe(p: Publication) -> str:
    netid, domain = p.publisher
    return (f"{p.type} {p.lower} {p.upper} <{netid}.{domain}:{p.publication_id}> "
            f"{p.scope.name.lower()}")


def _check_range(field: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise NameTableError(field, f"must be an integer in {low}..{high}, got {value!r}")


def validate_publication_fields(type_: int, lower: int, upper: int, value: bytes) -> None:
    """Raise NameTableError naming the first field out of its allowed range."""
    _check_range("type", type_, 0, U32_MAX)
    _check_range("lower", lower, 0, U32_MAX)
    _check_range("upper", upper, 0, U32_MAX)
    if lower > upper:
        raise NameTableError("upper", f"must be >= lower ({lower}), got {upper}")
    if not isinstance(value, (bytes, bytearray)):
        raise NameTableError("value", f"must be bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise NameTableError("value", f"must be at most {MAX_VALUE_BYTES} bytes, got {len(value)}")


class NameTable:
    """This node's publications plus every known peer's cluster-scope set."""

    def __init__(self, netid: int, domain: int) -> None:
        self.publisher = (netid, domain)
        self.version = 0  # bumps on every local change; peers keep only the newest set
        self._next_publication_id = 1
        self._local: dict[int, Publication] = {}
        self._peers: dict[tuple[int, int], dict[int, Publication]] = {}
        self._peer_versions: dict[tuple[int, int], int] = {}

    # ---- local changes

    def publish(self, type_: int, lower: int, upper: int, scope: int, value: bytes, *,
                now_ns: int, unix_ns: int) -> tuple[Publication, list[NameEvent]]:
        """`scope` is checked here (a Scope value, else NameTableError naming the field)."""
        validate_publication_fields(type_, lower, upper, value)
        try:
            checked = Scope(scope)
        except ValueError:
            raise NameTableError("scope", f"must be NODE ({Scope.NODE:d}) or CLUSTER "
                                          f"({Scope.CLUSTER:d}), got {scope!r}") from None
        limit = MAX_CLUSTER_PUBLICATIONS if checked is Scope.CLUSTER else MAX_NODE_PUBLICATIONS
        if sum(1 for p in self._local.values() if p.scope is checked) >= limit:
            raise NameTableFull("scope", f"at most {limit} {checked.name.lower()}-scope "
                                          f"publications per node; withdraw one first")
        publication = Publication(type_, lower, upper, checked, bytes(value), self.publisher,
                                  self._next_publication_id, unix_ns)
        self._next_publication_id += 1
        self._local[publication.publication_id] = publication
        self.version += 1
        return publication, [NamePublished(now_ns, publication)]

    def withdraw(self, publication_id: int, *, now_ns: int) -> list[NameEvent]:
        publication = self._local.pop(publication_id, None)
        if publication is None:
            raise NameTableError("publication_id",
                                 f"no publication {publication_id!r} by this node")
        self.version += 1
        return [NameWithdrawn(now_ns, publication)]

    def cluster_publications(self) -> list[Publication]:
        """What this node announces to its peers (node scope never leaves the node)."""
        return [p for p in self._local.values() if p.scope is Scope.CLUSTER]

    # ---- peers' sets

    def peer_version(self, publisher: tuple[int, int]) -> int | None:
        return self._peer_versions.get(publisher)

    def apply_peer(self, publisher: tuple[int, int], version: int,
                   publications: Iterable[Publication], *, now_ns: int) -> list[NameEvent]:
        """Replace a peer's set if `version` is newer than the one held; events for the diff."""
        held_version = self._peer_versions.get(publisher)
        if held_version is not None and version <= held_version:
            return []
        new = {p.publication_id: p for p in publications if p.publisher == publisher}
        old = self._peers.get(publisher, {})
        self._peers[publisher] = new
        self._peer_versions[publisher] = version
        events: list[NameEvent] = [NameWithdrawn(now_ns, p) for pid, p in old.items()
                                   if new.get(pid) != p]
        events += [NamePublished(now_ns, p) for pid, p in new.items() if old.get(pid) != p]
        return events

    def drop_peer(self, publisher: tuple[int, int], *, now_ns: int) -> list[NameEvent]:
        """The peer left (or restarted): its names go, and its version is forgotten."""
        self._peer_versions.pop(publisher, None)
        return [NameWithdrawn(now_ns, p) for p in self._peers.pop(publisher, {}).values()]

    # ---- queries

    def lookup(self, type_: int, instance: int | None = None) -> list[Publication]:
        """Publications of `type_` (covering `instance` when given), in a stable order."""
        return [p for p in self.all()
                if p.type == type_ and (instance is None or p.covers(instance))]

    def all(self) -> list[Publication]:
        """Every publication known here, sorted like the seed's table."""
        everything = list(self._local.values())
        for publications in self._peers.values():
            everything.extend(publications.values())
        everything.sort(key=lambda p: (p.type, p.lower, p.upper, p.publisher, p.publication_id))
        return everything
