"""Reference ("third-party") IPs: the seed's ``-i "IP:IP"``, e.g. the gateway.

A node that lost every heartbeat path to its peers pings them to tell an isolated node (reaches
none: it must give up what it runs) from a healthy one whose peers are gone (reaches one). The
lock daemon uses them for its two-node rule, the HA daemon for isolation.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import socket
import struct
import time
from typing import Any
from collections.abc import Sequence

from skyge.services.common.config import ConfigError, Field

__all__ = [
    "add_reference_ips_argument",
    "parse_reference_ips",
    "ping_any",
    "reference_ips_field",
    "reference_ips_from",
]

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0


def parse_reference_ips(value: str) -> list[str]:
    """The seed's `-i "IP:IP"` (also `,` or spaces between addresses)."""
    found = []
    for part in re.split(r"[:,\s]+", value.strip()):
        if not part:
            continue
        try:
            found.append(str(ipaddress.IPv4Address(part)))
        except ValueError:
            raise ValueError(f"reference IPs must be IPv4 addresses separated by ':', "
                             f"got {part!r}") from None
    return found


def _reference_ips(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f'must be a quoted string like "192.168.1.1:192.168.1.254", got {value!r}')
    parse_reference_ips(value)
    return value


def reference_ips_field(help: str) -> Field:
    """The `reference_ips` config key (alias `ips`)."""
    return Field("reference_ips", _reference_ips, default="", aliases=("ips",), help=help)


def add_reference_ips_argument(parser: argparse.ArgumentParser, purpose: str) -> None:
    """The seed's `-i/--ips` switch; it overrides the config file's `reference_ips`."""
    parser.add_argument("-i", "--ips", default=None,
                        help=f'reference ("third-party") IPs checked to avoid network isolation, '
                             f'e.g. "192.168.1.1:192.168.1.254" ({purpose})')


def reference_ips_from(args: argparse.Namespace, config: Any) -> list[str]:
    """`-i` if given, else the config's `reference_ips`; ConfigError naming the key if bad."""
    value = args.ips if getattr(args, "ips", None) is not None else config["reference_ips"]
    try:
        return parse_reference_ips(value or "")
    except ValueError as error:
        raise ConfigError(str(error), key="reference_ips") from None


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
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    body = b"skyge-ref"
    packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + body), ident,
                         seq) + body
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
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == ICMP_ECHO_REPLY and rid == ident and rseq == seq and peer[0] == address:
                return True


async def _ping_command(address: str, timeout_s: float) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "ping", "-c", "1", "-W", str(max(1, int(timeout_s + 0.999))), address,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s + 2) == 0
    except TimeoutError:
        proc.kill()
        return False


async def ping_any(addresses: Sequence[str], timeout_s: float = 0.3) -> bool:
    """True when any reference IP answers an ICMP echo within `timeout_s` (raw socket; the
    `ping` command when raw sockets are not allowed)."""
    if not addresses:
        return False

    async def one(address: str) -> bool:
        try:
            return await _icmp_echo(address, timeout_s)
        except OSError:
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
