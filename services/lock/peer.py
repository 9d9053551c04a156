"""The wire between lock daemons: UDP datagrams on every heartbeat path, optionally signed.

Each daemon has one UDP socket (port 7412 by default, in its node's network namespace). A peer's
addresses per path come from the heartbeat membership (`Peer.addresses`); datagrams from a peer
also teach which of its addresses and paths work (`heard`). Beats and retransmissions go on every
path; data goes on the best path: the lowest-numbered one heard from within `fresh_ns`, or every
path when none was.

With a cluster key every datagram ends with a 16-byte HMAC-SHA256 of the rest; datagrams without
a valid one are dropped (and counted). Replays are harmless: beats carry increasing numbers per
sender instance and data is numbered (see channel.py).

Also here: the fence command (run for any lost node that may hold locks). The reference-IP probe
of the two-node rule is `skyge.services.common.reference`.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
from dataclasses import dataclass, field
from collections.abc import Sequence

from skyge.services.common.commands import CommandResult, run_command

MAC_BYTES = 16
MS = 1_000_000
MAX_READ_PER_TURN = 256  # datagrams read in one go (the rest waits for the next turn)
BUFFER_BYTES = 4 << 20

__all__ = ["MAC_BYTES", "PeerSocket", "run_fence", "sign", "verify"]


def sign(key: bytes | None, payload: bytes) -> bytes:
    if not key:
        return payload
    return payload + hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]


def verify(key: bytes | None, data: bytes, other_key: bytes | None = None) -> bytes | None:
    """The payload of a datagram, or None when its MAC is wrong (made with neither key)."""
    if not key:
        return data
    if len(data) < MAC_BYTES:
        return None
    payload, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    for candidate in (key, other_key):
        if candidate and hmac.compare_digest(
                mac, hmac.new(candidate, payload, hashlib.sha256).digest()[:MAC_BYTES]):
            return payload
    return None


@dataclass
class PeerAddresses:
    """Where a peer is reachable: per path, its addresses (membership first, then learned)."""

    paths: dict[int, list[str]] = field(default_factory=dict)
    port: int = 7412
    heard: dict[int, int] = field(default_factory=dict)  # path -> monotonic ns


class PeerSocket:
    """The daemon's UDP socket (non-blocking; read by the protocol thread): sends to peers by
    domain, returns verified datagrams."""

    def __init__(self, key: bytes | None, *, fresh_ns: int = 30 * MS,
                 other_key: bytes | None = None) -> None:
        self.key, self.other_key = key, other_key  # signs / also accepted (a rotation)
        self.fresh_ns = fresh_ns
        self.sock: socket.socket | None = None
        self.peers: dict[int, PeerAddresses] = {}
        self.by_address: dict[str, tuple[int, int]] = {}  # ip -> (domain, path)
        self.stats = {"sent": 0, "received": 0, "bad_mac": 0, "send_errors": 0, "no_address": 0,
                      "receive_errors": 0}

    # -- addresses --------------------------------------------------------------------------------
    def set_peer(self, domain: int, paths: dict[int, list[str]], port: int) -> None:
        entry = self.peers.setdefault(domain, PeerAddresses())
        entry.paths = {p: [a for a in addrs if ":" not in a] for p, addrs in paths.items()}
        entry.port = port or entry.port
        for path, addresses in entry.paths.items():
            for address in addresses:
                self.by_address[address] = (domain, path)

    def forget_missing(self, domains: set[int]) -> None:
        """Drop membership addresses of peers not in `domains` (learned ones stay usable)."""
        for domain in list(self.peers):
            if domain not in domains:
                self.peers[domain].paths = {p: a for p, a in self.peers[domain].paths.items()
                                            if p >= 100}

    # -- the socket -------------------------------------------------------------------------------
    def bind(self, port: int, host: str = "0.0.0.0") -> None:
        """Open the socket (OSError when the port is taken)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def receive(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The verified payloads queued in the socket, with their source (bounded per call)."""
        found: list[tuple[bytes, tuple[str, int]]] = []
        sock = self.sock
        if sock is None:
            return found
        for _ in range(MAX_READ_PER_TURN):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.stats["receive_errors"] += 1
                break
            payload = verify(self.key, data, self.other_key)
            if payload is None:
                self.stats["bad_mac"] += 1
                continue
            self.stats["received"] += 1
            found.append((payload, addr))
        return found

    def close(self) -> None:
        """Closed (the daemon stops): sending is a no-op from here on."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def learn(self, domain: int, address: tuple[str, int], now: int) -> int:
        """A verified datagram from `domain` came from `address`: remember it; returns the path."""
        known = self.by_address.get(address[0])
        entry = self.peers.setdefault(domain, PeerAddresses(port=address[1]))
        if known is not None and known[0] == domain:
            path = known[1]
        else:  # an address the membership did not list: a learned path (numbered from 100)
            path = 100 + len([p for p in entry.paths if p >= 100])
            entry.paths[path] = [address[0]]
            self.by_address[address[0]] = (domain, path)
        entry.heard[path] = now
        return path

    # -- sending ----------------------------------------------------------------------------------
    def best_path(self, domain: int, now: int) -> int | None:
        entry = self.peers.get(domain)
        if entry is None:
            return None
        fresh = [p for p, t in entry.heard.items() if now - t < self.fresh_ns and p in entry.paths]
        return min(fresh) if fresh else None

    def send(self, domain: int, payload: bytes, all_paths: bool, now: int) -> None:
        sock = self.sock
        if sock is None:
            return
        entry = self.peers.get(domain)
        if entry is None or not entry.paths:
            self.stats["no_address"] += 1
            return
        data = sign(self.key, payload)
        paths: Sequence[int]
        best = None if all_paths else self.best_path(domain, now)
        if best is not None:
            paths = [best]
        else:
            membership = [p for p in entry.paths if p < 100]
            paths = membership or list(entry.paths)
        for path in paths:
            addresses = entry.paths.get(path)
            if not addresses:
                continue
            try:
                sock.sendto(data, (addresses[0], entry.port))
                self.stats["sent"] += 1
            except OSError:
                self.stats["send_errors"] += 1


# ---------------------------------------------------------------------------------------------
# the two-node rule's reference IPs, and the fence


async def run_fence(command: str, peer_domain: int, timeout_s: float) -> CommandResult:
    """Run the fence command for a lost peer: `sh -c`, env SKYGE_FENCE_DOMAIN, at most
    `timeout_s` (then its process group is killed)."""
    return await run_command(["/bin/sh", "-c", command], timeout_s=timeout_s,
                             env={"SKYGE_FENCE_DOMAIN": str(peer_domain)})
