"""The heartbeat datagram: a fixed 51-byte header, a kind-specific payload, an optional HMAC.

Layout (network byte order), version 1:

    magic "SH" | version u8 | kind u8 | flags u8 | path u8 | netid u16 | domain u8
    | echo_domain u8 | want_domain u8 | interval_us u32 | echo_hold_ns u32
    | incarnation u64 | sequence u64 | send_time_ns u64 | echo_send_time_ns u64
    | payload | HMAC-SHA256(key, header + payload)[:16]   (only when flags has SIGNED)

- `interval_us` is the sender's promise: its next datagram on this path leaves within that
  time. Receivers derive their timeouts from it, so nodes never need matching timing configs.
- RTT needs no probe packets: each heartbeat echoes one peer's latest `send_time_ns` on this path
  and how long the sender held it (`echo_hold_ns`); that peer computes
  `rtt = now - echo_send_time_ns - echo_hold_ns` against its own clock only.
- `want_domain` asks that node to re-send its ANNOUNCE (the receiver lacks its addresses or part
  of its name set): a lost announce is repaired in one round trip instead of the next refresh.
- ANNOUNCE payloads are chunked to fit MAX_DATAGRAM_BYTES, so no datagram is ever IP-fragmented
  (a fragmented datagram is lost if any fragment is: 20% loss on a 50-fragment set loses ~all).

`decode` raises only `WireError`, whose `reason` is one of REASONS (the drop counters' names).
"""
from __future__ import annotations

import hmac
import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple
from collections.abc import Sequence

from .names import (MAX_VALUE_BYTES, NameTableError, Publication, Scope,
                    validate_publication_fields)

__all__ = [
    "HEADER_BYTES",
    "MAC_BYTES",
    "MAGIC",
    "MAX_ADDRESSES_PER_PATH",
    "MAX_DATAGRAM_BYTES",
    "MAX_DOMAIN",
    "MAX_GRPC_PORTS",
    "MAX_INTERVAL_US",
    "MAX_NETID",
    "MAX_NIC_NAME_BYTES",
    "MAX_PATHS",
    "MIN_INTERVAL_US",
    "REASONS",
    "REPLAY_WINDOW",
    "VERSION",
    "Announce",
    "Datagram",
    "Kind",
    "NodeInfo",
    "PathInfo",
    "ReplayGuard",
    "WireError",
    "decode",
    "encode",
    "encode_announce_payloads",
    "next_incarnation",
]

MAGIC = b"SH"
VERSION = 1
FLAG_SIGNED = 0x01
MAC_BYTES = 16
# 1280 (IPv6 minimum MTU) - 40 (IPv6 header) - 8 (UDP header): fits any link unfragmented.
MAX_DATAGRAM_BYTES = 1232
MAX_NETID = 1024
MAX_DOMAIN = 64
MAX_PATHS = 8
MAX_ADDRESSES_PER_PATH = 4
MAX_NIC_NAME_BYTES = 15  # Linux IFNAMSIZ - 1
MAX_GRPC_PORTS = 8
MAX_PORT_NAME_BYTES = 16
# An announced interval outside this range is a bug or an attack, not a timing choice.
MIN_INTERVAL_US = 100
MAX_INTERVAL_US = 10_000_000
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

REASONS = ("truncated", "bad_magic", "bad_version", "malformed", "foreign_netid",
           "bad_signature", "unsigned", "unexpected_signature")

_HEADER = struct.Struct("!2sBBBBHBBBIIQQQQ")
HEADER_BYTES = _HEADER.size
_ANNOUNCE_HEAD = struct.Struct("!QHH")  # names_version, chunk_index, chunk_count
_PUBLICATION = struct.Struct("!IIIQQH")  # type, lower, upper, id, published_unix_ns, value length
_PORT = struct.Struct("!H")
_MAX_PUBLICATION_BYTES = _PUBLICATION.size + MAX_VALUE_BYTES


class Kind(IntEnum):
    HEARTBEAT = 1
    ANNOUNCE = 2
    LEAVE = 3


class WireError(ValueError):
    """A datagram was refused; `reason` is one of REASONS."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


@dataclass(frozen=True)
class PathInfo:
    """One heartbeat path of a node as its peers see it: NIC name and addresses."""

    path: int
    nic: str
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.path, int) or not 1 <= self.path <= MAX_PATHS:
            raise ValueError(f"path: must be 1..{MAX_PATHS}, got {self.path!r}")
        if (not isinstance(self.nic, str) or not 1 <= len(self.nic) <= MAX_NIC_NAME_BYTES
                or not _printable_ascii(self.nic)):
            raise ValueError(f"nic: must be 1..{MAX_NIC_NAME_BYTES} printable ASCII characters, "
                             f"got {self.nic!r}")
        if len(self.addresses) > MAX_ADDRESSES_PER_PATH:
            raise ValueError(f"addresses of path {self.path}: at most {MAX_ADDRESSES_PER_PATH}, "
                             f"got {len(self.addresses)}")
        try:
            normalized = tuple(str(ipaddress.ip_address(a)) for a in self.addresses)
        except ValueError as error:
            raise ValueError(f"addresses of path {self.path}: {error}") from None
        object.__setattr__(self, "addresses", normalized)


@dataclass(frozen=True)
class NodeInfo:
    """What a node announces about itself besides names: its paths and its gRPC ports."""

    paths: tuple[PathInfo, ...]
    grpc_ports: tuple[tuple[str, int], ...] = ()  # (daemon name, TCP port)

    def __post_init__(self) -> None:
        numbers = [p.path for p in self.paths]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"paths: each path number at most once, got {numbers}")
        if len(self.grpc_ports) > MAX_GRPC_PORTS:
            raise ValueError(f"grpc_ports: at most {MAX_GRPC_PORTS}, got {len(self.grpc_ports)}")
        for name, port in self.grpc_ports:
            if (not isinstance(name, str) or not 1 <= len(name) <= MAX_PORT_NAME_BYTES
                    or not _printable_ascii(name)):
                raise ValueError(f"grpc_ports: name must be 1..{MAX_PORT_NAME_BYTES} printable "
                                 f"ASCII characters, got {name!r}")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"grpc_ports: port of {name} must be 1..65535, got {port!r}")

    def nic(self, path: int) -> str | None:
        return next((p.nic for p in self.paths if p.path == path), None)


class Announce(NamedTuple):
    names_version: int
    chunk_index: int
    chunk_count: int
    node: NodeInfo
    publications: tuple[Publication, ...]


class Datagram(NamedTuple):
    kind: Kind
    netid: int
    domain: int
    path: int
    incarnation: int
    sequence: int
    send_time_ns: int
    interval_ns: int
    echo_domain: int  # 0: no echo
    echo_send_time_ns: int
    echo_hold_ns: int
    want_domain: int  # 0: no request
    announce: Announce | None


def encode(kind: Kind, netid: int, domain: int, path: int, incarnation: int, sequence: int,
           send_time_ns: int, interval_ns: int, key: bytes | None, payload: bytes = b"",
           echo_domain: int = 0, echo_send_time_ns: int = 0, echo_hold_ns: int = 0,
           want_domain: int = 0) -> bytes:
    """One datagram. The interval is rounded up to µs so receivers never expect it early."""
    header = _HEADER.pack(MAGIC, VERSION, kind, FLAG_SIGNED if key else 0, path, netid, domain,
                          echo_domain, want_domain, -(-interval_ns // 1000), echo_hold_ns,
                          incarnation, sequence, send_time_ns, echo_send_time_ns)
    body = header + payload if payload else header
    if key:
        return body + hmac.digest(key, body, "sha256")[:MAC_BYTES]
    return body


def _encode_node(node: NodeInfo) -> bytes:
    parts = [bytes([len(node.grpc_ports)])]
    for name, port in node.grpc_ports:
        raw = name.encode("ascii")
        parts += [bytes([len(raw)]), raw, _PORT.pack(port)]
    parts.append(bytes([len(node.paths)]))
    for info in node.paths:
        nic = info.nic.encode("ascii")
        parts += [bytes([info.path, len(nic)]), nic, bytes([len(info.addresses)])]
        for address in info.addresses:
            packed = ipaddress.ip_address(address).packed
            parts += [bytes([4 if len(packed) == 4 else 6]), packed]
    return b"".join(parts)


def _encode_publication(p: Publication) -> bytes:
    return _PUBLICATION.pack(p.type, p.lower, p.upper, p.publication_id, p.published_unix_ns,
                             len(p.value)) + p.value


def encode_announce_payloads(node: NodeInfo, names_version: int,
                             publications: Sequence[Publication]) -> list[bytes]:
    """ANNOUNCE payloads (chunk i of n), each small enough for one unfragmented datagram.

    Every chunk repeats the node info, so any single chunk tells a peer how to name and reach us.
    """
    node_bytes = _encode_node(node)
    budget = (MAX_DATAGRAM_BYTES - HEADER_BYTES - MAC_BYTES - _ANNOUNCE_HEAD.size
              - len(node_bytes) - 1)  # 1: publication count
    if budget < _MAX_PUBLICATION_BYTES:
        raise ValueError(f"node info is {len(node_bytes)} bytes: too large to leave room for a "
                         f"publication in a {MAX_DATAGRAM_BYTES}-byte datagram")
    chunks: list[list[bytes]] = [[]]
    used = 0
    for publication in publications:
        encoded = _encode_publication(publication)
        if used + len(encoded) > budget or len(chunks[-1]) == 255:
            chunks.append([])
            used = 0
        chunks[-1].append(encoded)
        used += len(encoded)
    return [_ANNOUNCE_HEAD.pack(names_version, index, len(chunks)) + node_bytes
            + bytes([len(chunk)]) + b"".join(chunk)
            for index, chunk in enumerate(chunks)]


class _Reader:
    """Bounds-checked cursor: any overrun raises IndexError or struct.error (-> malformed)."""

    __slots__ = ("at", "data", "end")

    def __init__(self, data: bytes, at: int, end: int) -> None:
        self.data, self.at, self.end = data, at, end

    def take(self, n: int) -> bytes:
        if self.at + n > self.end:
            raise IndexError("payload overrun")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))


def _decode_node(reader: _Reader) -> NodeInfo:
    ports = []
    for _ in range(reader.byte()):
        name = reader.take(reader.byte()).decode("ascii")
        ports.append((name, reader.unpack(_PORT)[0]))
    paths = []
    for _ in range(reader.byte()):
        path, nic_length = reader.byte(), reader.byte()
        nic = reader.take(nic_length).decode("ascii")
        addresses = []
        for _ in range(reader.byte()):
            family = reader.byte()
            if family not in (4, 6):
                raise ValueError(f"address family {family}")
            addresses.append(str(ipaddress.ip_address(reader.take(4 if family == 4 else 16))))
        paths.append(PathInfo(path, nic, tuple(addresses)))
    return NodeInfo(tuple(paths), tuple(ports))


def _decode_announce(reader: _Reader, publisher: tuple[int, int]) -> Announce:
    names_version, chunk_index, chunk_count = reader.unpack(_ANNOUNCE_HEAD)
    if not chunk_index < chunk_count:
        raise ValueError("chunk index beyond chunk count")
    node = _decode_node(reader)
    publications = []
    for _ in range(reader.byte()):
        type_, lower, upper, publication_id, unix_ns, length = reader.unpack(_PUBLICATION)
        value = reader.take(length)
        validate_publication_fields(type_, lower, upper, value)
        publications.append(Publication(type_, lower, upper, Scope.CLUSTER, value, publisher,
                                        publication_id, unix_ns))
    if reader.at != reader.end:
        raise ValueError("trailing bytes")
    return Announce(names_version, chunk_index, chunk_count, node, tuple(publications))


def decode(data: bytes, key: bytes | None, expected_netid: int, *,
           other_key: bytes | None = None) -> Datagram:
    """Parse and authenticate one datagram; raise WireError(reason) for anything unacceptable.

    The netid is checked before the signature: another cluster on the same wire (with its own
    key) is counted as `foreign_netid`, not as an attack.
    """
    size = len(data)
    if size < 3:
        raise WireError("truncated")
    if data[:2] != MAGIC:
        raise WireError("bad_magic")
    if data[2] != VERSION:
        raise WireError("bad_version")
    if size < HEADER_BYTES:
        raise WireError("truncated")
    (_, _, kind, flags, path, netid, domain, echo_domain, want_domain, interval_us, echo_hold_ns,
     incarnation, sequence, send_time_ns, echo_send_time_ns) = _HEADER.unpack_from(data)
    if netid != expected_netid:
        raise WireError("foreign_netid")
    end = size
    if key:
        if not flags & FLAG_SIGNED:
            raise WireError("unsigned")
        end = size - MAC_BYTES
        if end < HEADER_BYTES:
            raise WireError("truncated")
        expected_mac = hmac.digest(key, data[:end], "sha256")[:MAC_BYTES]
        if not hmac.compare_digest(expected_mac, data[end:]) and (
                other_key is None or not hmac.compare_digest(
                    hmac.digest(other_key, data[:end], "sha256")[:MAC_BYTES], data[end:])):
            raise WireError("bad_signature")
    elif flags & FLAG_SIGNED:
        raise WireError("unexpected_signature")
    if (flags & ~FLAG_SIGNED or not 1 <= kind <= 3 or not 1 <= path <= MAX_PATHS
            or not 1 <= domain <= MAX_DOMAIN or echo_domain > MAX_DOMAIN
            or want_domain > MAX_DOMAIN
            or not MIN_INTERVAL_US <= interval_us <= MAX_INTERVAL_US):
        raise WireError("malformed")
    announce = None
    if kind == Kind.ANNOUNCE:
        try:
            announce = _decode_announce(_Reader(data, HEADER_BYTES, end), (netid, domain))
        except (ValueError, IndexError, struct.error, NameTableError):
            raise WireError("malformed") from None
    elif end != HEADER_BYTES:
        raise WireError("malformed")
    return Datagram(Kind(kind), netid, domain, path, incarnation, sequence, send_time_ns,
                    interval_us * 1000, echo_domain, echo_send_time_ns, echo_hold_ns, want_domain,
                    announce)


REPLAY_WINDOW = 64
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


class ReplayGuard:
    """Refuses replayed datagrams of one sender path: state is (incarnation, highest sequence,
    a 64-bit window of sequences seen below it, to admit reordered datagrams once).

    Why "higher incarnation wins, lower is a replay": a captured datagram stays validly signed
    forever, so the only thing telling an old life of a node from the current one is the
    incarnation. A node must therefore never start with a lower incarnation than before: it uses
    `next_incarnation` (wall-clock ns at start, kept strictly above the last one it persisted, so
    a clock stepped back cannot lower it). Limit: a process that starts fresh has no memory, so
    until it hears a node's current incarnation it can be fed an older capture of that node; the
    real node's next datagram (higher incarnation) ends the masquerade.
    """

    __slots__ = ("highest", "incarnation", "seen")

    def __init__(self) -> None:
        self.incarnation = -1
        self.highest = 0
        self.seen = 0  # bit i set: sequence (highest - i) was accepted

    def accept(self, incarnation: int, sequence: int) -> bool:
        """True (and remembered) if (incarnation, sequence) is new and not too old to tell."""
        if incarnation != self.incarnation:
            if incarnation < self.incarnation:
                return False
            self.incarnation, self.highest, self.seen = incarnation, sequence, 1
            return True
        if sequence > self.highest:
            shift = sequence - self.highest
            if shift < REPLAY_WINDOW:
                self.seen = ((self.seen << shift) | 1) & _WINDOW_MASK
            else:
                self.seen = 1
            self.highest = sequence
            return True
        offset = self.highest - sequence
        if offset >= REPLAY_WINDOW or (self.seen >> offset) & 1:
            return False
        self.seen |= 1 << offset
        return True


def next_incarnation(unix_ns: int, previous: int | None = None) -> int:
    """The incarnation for a process starting now: wall-clock ns, strictly above `previous`
    (the one persisted by the last start), so it grows across restarts even if the clock jumps
    back. The caller persists the result before sending anything."""
    candidate = unix_ns if previous is None else max(unix_ns, previous + 1)
    if not 1 <= candidate <= U64_MAX:
        raise ValueError(f"incarnation: must be 1..{U64_MAX}, got {candidate}")
    return candidate
