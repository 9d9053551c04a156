"""Gratuitous ARP: tell the LAN that a floating IP now lives at this NIC's MAC.

pyroute2 sends no ARP, so this uses a raw AF_PACKET socket (no subprocess on the failover path).
Each copy is two broadcast frames, both recognised as gratuitous by Linux (`arp_is_garp`, which
lets them override a neighbour entry at once, whatever its lock time):

- an ARP request ("announcement", RFC 5227): sender IP = target IP = the floating IP, target MAC 0;
- an ARP reply: same, with target MAC = sender MAC (what the kernel requires of a reply GARP).

Neighbours that already have an entry for the IP switch it to our MAC (state STALE, then they
verify it with a unicast probe); neighbours without one ignore it (unless arp_accept), which is
fine: they will ask. Several copies a few ms apart survive a lost frame. Acts in the calling
process's network namespace.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_INTERVAL_S",
    "GarpError",
    "announce",
    "answered_by",
    "arp_frames",
    "nic_mac",
    "probe_frame",
    "send_garp",
]

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
DEFAULT_COUNT = 3
DEFAULT_INTERVAL_S = 0.005
MIN_FRAME = 60  # Ethernet minimum without the FCS


class GarpError(Exception):
    """The gratuitous ARP could not be sent (no such NIC, not permitted...)."""


def arp_frames(mac: bytes, ip: str) -> tuple[bytes, bytes]:
    """The (request, reply) gratuitous ARP frames for `ip` at `mac`, padded to 60 bytes."""
    addr = ipaddress.IPv4Address(ip).packed
    header = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)

    def arp(op: int, target_mac: bytes) -> bytes:
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, addr, target_mac, addr)
        return (header + body).ljust(MIN_FRAME, b"\0")

    return arp(1, b"\0" * 6), arp(2, mac)


def _open(nic: str) -> tuple[socket.socket, bytes]:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError as error:
        raise GarpError(f"cannot open a raw socket for ARP on {nic}: {error.strerror}") from None
    try:
        sock.bind((nic, ETH_P_ARP))
    except OSError as error:
        sock.close()
        raise GarpError(f"cannot send ARP on {nic}: {error.strerror}") from None
    mac = sock.getsockname()[4]
    if len(mac) != 6:
        sock.close()
        raise GarpError(f"{nic} has no Ethernet address")
    return sock, mac


def nic_mac(nic: str) -> str:
    """The MAC of `nic` in this network namespace, as aa:bb:cc:dd:ee:ff."""
    sock, mac = _open(nic)
    sock.close()
    return ":".join(f"{b:02x}" for b in mac)


def _send(sock: socket.socket, frames: tuple[bytes, bytes]) -> int:
    sent = 0
    for frame in frames:
        try:
            sock.send(frame)
            sent += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:  # e.g. ENETDOWN: the NIC is down
            raise GarpError(f"gratuitous ARP failed: {error.strerror}") from None
    return sent


def send_garp(nic: str, ip: str, *, count: int = DEFAULT_COUNT,
              interval: float = DEFAULT_INTERVAL_S) -> int:
    """Send `count` copies (request + reply each), `interval` s apart; return frames sent."""
    sock, mac = _open(nic)
    frames = arp_frames(mac, ip)
    sent = 0
    with sock:
        for copy in range(count):
            if copy:
                time.sleep(interval)
            sent += _send(sock, frames)
    return sent


async def announce(nic: str, ip: str, *, count: int = DEFAULT_COUNT,
                   interval: float = DEFAULT_INTERVAL_S) -> int:
    """`send_garp` for the event loop: the first copy goes out at once, no blocking waits."""
    sock, mac = _open(nic)
    sock.setblocking(False)
    frames = arp_frames(mac, ip)
    sent = 0
    with sock:
        for copy in range(count):
            if copy:
                await asyncio.sleep(interval)
            sent += _send(sock, frames)
    return sent


def probe_frame(mac: bytes, ip: str) -> bytes:
    """An RFC 5227 ARP probe for `ip`: a broadcast request from sender IP 0.0.0.0, so that no
    neighbour learns anything from it."""
    header = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, b"\0" * 4, b"\0" * 6,
                       ipaddress.IPv4Address(ip).packed)
    return (header + body).ljust(MIN_FRAME, b"\0")


def _claimant(frame: bytes, ip: bytes, own: bytes) -> str | None:
    """The MAC of another host that says it has `ip` (an ARP reply or request from it)."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    sender_mac, sender_ip = frame[22:28], frame[28:32]
    if sender_ip != ip or sender_mac == own:
        return None
    return ":".join(f"{b:02x}" for b in sender_mac)


def answered_by(nic: str, ip: str, timeout_s: float) -> str | None:
    """Duplicate address detection: probe for `ip` on `nic` and wait up to `timeout_s` for any
    other host to claim it; its MAC, or None (blocking: run it in a thread)."""
    sock, mac = _open(nic)
    wanted = ipaddress.IPv4Address(ip).packed
    deadline = time.monotonic() + timeout_s
    with sock:
        try:
            sock.send(probe_frame(mac, ip))
        except OSError as error:
            raise GarpError(f"ARP probe for {ip} on {nic} failed: {error.strerror}") from None
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                frame = sock.recv(128)
            except TimeoutError:
                break
            except OSError as error:
                raise GarpError(f"ARP probe for {ip} on {nic} failed: {error.strerror}") from None
            claimant = _claimant(frame, wanted, mac)
            if claimant is not None:
                return claimant
    return None
