"""The wire between lock daemons: UDP datagrams on every heartbeat path, optionally signed.

Each daemon has one UDP socket (port 7412 by default, in its node's network namespace). A peer's
addresses per path come from the heartbeat membership (`Peer.addresses`); datagrams from a peer
also teach which of its addresses and paths work (`heard`). Beats and retransmissions go on every
path; data goes on the best path: the lowest-numbered one heard from within `fresh_ns`, or every
path when none was.

With a cluster key every datagram ends with a 16-byte HMAC-SHA256 of the rest; datagrams without
a valid one are dropped (and counted). Replays are harmless: beats carry increasing numbers per
sender instance and data is numbered (see channel.py).

Also here: the reference-IP probe of the two-node rule (an ICMP echo through a raw socket, with
`ping` as fallback) and the fence command.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

MAC_BYTES = 16
MS = 1_000_000

logger = logging.getLogger("skyge.lock.peer")

__all__ = ["PeerSocket", "ping_any", "run_fence", "sign", "verify", "MAC_BYTES"]


def sign(key: bytes | None, payload: bytes) -> bytes:
    if not key:
        return payload
    return payload + hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]


def verify(key: bytes | None, data: bytes) -> bytes | None:
    """The payload of a datagram, or None when its MAC is wrong."""
    if not key:
        return data
    if len(data) < MAC_BYTES:
        return None
    payload, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]
    return payload if hmac.compare_digest(mac, expected) else None


@dataclass
class PeerAddresses:
    """Where a peer is reachable: per path, its addresses (membership first, then learned)."""

    paths: dict[int, list[str]] = field(default_factory=dict)
    port: int = 7412
    heard: dict[int, int] = field(default_factory=dict)  # path -> monotonic ns


class PeerSocket(asyncio.DatagramProtocol):
    """The daemon's UDP socket: sends to peers by domain, hands verified datagrams on."""

    def __init__(self, key: bytes | None, on_datagram: Callable[[bytes, tuple[str, int]], None],
                 *, fresh_ns: int = 30 * MS) -> None:
        self.key = key
        self.on_datagram = on_datagram  # (payload, source address)
        self.fresh_ns = fresh_ns
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: dict[int, PeerAddresses] = {}
        self.by_address: dict[str, tuple[int, int]] = {}  # ip -> (domain, path)
        self.stats = {"sent": 0, "received": 0, "bad_mac": 0, "send_errors": 0, "no_address": 0}

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

    def heard_from(self, domain: int, path: int, now: int) -> None:
        entry = self.peers.get(domain)
        if entry is not None:
            entry.heard[path] = now

    # -- asyncio ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
                except OSError:
                    pass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        payload = verify(self.key, data)
        if payload is None:
            self.stats["bad_mac"] += 1
            return
        self.stats["received"] += 1
        self.on_datagram(payload, addr)

    def error_received(self, exc: Exception) -> None:
        self.stats["send_errors"] += 1

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
        entry = self.peers.get(domain)
        if entry is None or not entry.paths or self.transport is None:
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
                self.transport.sendto(data, (addresses[0], entry.port))
                self.stats["sent"] += 1
            except OSError:
                self.stats["send_errors"] += 1


# ---------------------------------------------------------------------------------------------
# the two-node rule: reference IPs and the fence


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


async def _icmp_echo(address: str, timeout_s: float) -> bool:
    """One ICMP echo through a raw socket (needs root). Raises OSError when raw sockets fail."""
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    seq = int(time.monotonic() * 1000) & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    body = b"skyge-lock"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + body), ident, seq) + body
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, packet, (address, 0))
        deadline = loop.time() + timeout_s
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
            except asyncio.TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident and rseq == seq and peer[0] == address:
                return True


async def _ping_command(address: str, timeout_s: float) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "ping", "-c", "1", "-W", str(max(1, int(timeout_s + 0.999))), address,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s + 2) == 0
    except asyncio.TimeoutError:
        proc.kill()
        return False


async def ping_any(addresses: Sequence[str], timeout_s: float = 0.3) -> bool:
    """True when any reference IP answers an ICMP echo within `timeout_s`."""
    if not addresses:
        return False

    async def one(address: str) -> bool:
        try:
            return await _icmp_echo(address, timeout_s)
        except (OSError, PermissionError):
            return await _ping_command(address, timeout_s)

    tasks = [asyncio.ensure_future(one(a)) for a in addresses]
    try:
        for done in asyncio.as_completed(tasks):
            if await done:
                return True
        return False
    finally:
        for task in tasks:
            task.cancel()


async def run_fence(command: str, peer_domain: int, timeout_s: float = 60.0) -> bool:
    """Run the fence command for a lost peer (`sh -c`, env SKYGE_FENCE_DOMAIN); True on exit 0."""
    env = dict(os.environ, SKYGE_FENCE_DOMAIN=str(peer_domain))
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", command, env=env,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        logger.error("fence command for node %d timed out after %g s", peer_domain, timeout_s)
        return False
    if proc.returncode != 0:
        logger.error("fence command for node %d failed (exit %s): %s", peer_domain,
                     proc.returncode, err.decode(errors="replace").strip()[:500])
        return False
    return True
