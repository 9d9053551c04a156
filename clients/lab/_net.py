"""The lab's address plan and the few network commands it runs (ip, nft), with clear errors.

Address plan (these addresses exist only inside the lab's own namespaces):

==============  ==================  ==========================  =========================
host            namespace           eth0 (public, /24)          eth1 (private, /24)
==============  ==================  ==========================  =========================
node *i*        ``{lab}-n{i}``      192.168.1.(10+i)            10.0.0.(10+i)
gateway         ``{lab}-gw``        192.168.1.1, 192.168.1.254  -
client          ``{lab}-cl``        192.168.1.250               -
switch          ``{lab}-sw``        bridges ``pub`` / ``priv`` and the switch-side veth ends
==============  ==================  ==========================  =========================

MACs are deterministic: a node's ``eth{k}`` is ``02:5b:00:<i>:00:<k>`` (hex), the switch-side end
of that cable ``02:5b:01:<i>:00:<k>``; the gateway is host number 0xfe, the client 0xfd. The
switch-side port of node *i*'s ``eth{k}`` is called ``n{i}e{k}``; the gateway's and client's
ports are ``gw`` and ``cl``. Nodes and the client route everything else via 192.168.1.1 (the
gateway, which forwards nothing: there is no way out of the lab).

Every command here runs either inside a lab namespace (``ip -n NS``, ``nsenter --net``) or creates /
deletes a named namespace; nothing reads or changes the interfaces, routes or firewall of the
host's own network namespace.
"""
from __future__ import annotations

import json
import subprocess
from typing import Any
from collections.abc import Iterable, Sequence

from skyge.clients.lab.errors import LabError

MAX_NODES = 64
PUBLIC_NET = "192.168.1.0/24"
PRIVATE_NET = "10.0.0.0/24"
PREFIX_LEN = 24
GATEWAY_IPS: tuple[str, ...] = ("192.168.1.1", "192.168.1.254")
CLIENT_IP = "192.168.1.250"
NICS: tuple[str, ...] = ("eth0", "eth1")
#: bridge of each NIC in the switch namespace (partitions add ``pub{g}`` / ``priv{g}``)
BRIDGES = {"eth0": "pub", "eth1": "priv"}
GATEWAY_HOST_NUMBER = 0xFE
CLIENT_HOST_NUMBER = 0xFD
#: seconds any single ip/nft command may take before the lab gives up on it
COMMAND_TIMEOUT = 30.0


def nic_index(nic: str) -> int:
    if nic not in NICS:
        raise LabError(f"unknown NIC {nic!r}: the lab's NICs are {', '.join(NICS)}")
    return NICS.index(nic)


def public_ip(node: int) -> str:
    """Node *node*'s address on eth0 (public network)."""
    return f"192.168.1.{10 + node}"


def private_ip(node: int) -> str:
    """Node *node*'s address on eth1 (private network)."""
    return f"10.0.0.{10 + node}"


def mac(host_number: int, nic: int, switch_side: bool = False) -> str:
    return f"02:5b:{1 if switch_side else 0:02x}:{host_number:02x}:00:{nic:02x}"


def _fail(what: str, argv: Sequence[str], stderr: str, stdin: str | None = None) -> LabError:
    detail = stderr.strip() or "no error output"
    message = f"{what} failed: {' '.join(argv)}: {detail}"
    if stdin and "line" in detail.lower():
        numbered = "\n".join(f"  {n}: {line}" for n, line in enumerate(stdin.splitlines(), 1))
        message += f"\ncommands were:\n{numbered}"
    return LabError(message)


def run(argv: Sequence[str], *, stdin: str | None = None, what: str = "command",
        check: bool = True, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a helper command; raise LabError naming the command and its stderr when it fails."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError as error:
        raise LabError(f"{what} failed: {argv[0]} is not installed ({error})") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what} failed: {' '.join(argv)} took more than {timeout:g} s") from None
    if check and done.returncode != 0:
        raise _fail(what, argv, done.stderr, stdin)
    return done


def ip_batch(lines: Iterable[str], netns: str | None = None, *, what: str = "ip",
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run many `ip` commands in one process inside namespace *netns*.

    Without *netns* only `netns add|del` lines are allowed: nothing may run against the
    machine's own network namespace.
    """
    lines = list(lines)
    if netns is None and any(not line.startswith(("netns add ", "netns del ")) for line in lines):
        raise LabError("refusing to run ip commands in the machine's own network namespace")
    script = "\n".join(lines) + "\n"
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if not check else []),
            "-batch", "-"]
    return run(argv, stdin=script, what=what, check=check)


def ip_batches(scripts: dict[str, list[str]], *, what: str = "ip") -> None:
    """Run one `ip -batch` per namespace, all at once (this is what makes `up` fast)."""
    running: list[tuple[str, subprocess.Popen[str], str]] = []
    try:
        for netns, lines in scripts.items():
            script = "\n".join(lines) + "\n"
            proc = subprocess.Popen(["ip", "-n", netns, "-batch", "-"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running.append((netns, proc, script))
        errors = []
        for netns, proc, script in running:
            try:
                _, stderr = proc.communicate(script, timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                errors.append(f"{netns}: timed out")
                continue
            if proc.returncode != 0:
                errors.append(f"{netns}: {stderr.strip()}")
        if errors:
            raise LabError(f"{what} failed: " + "; ".join(errors))
    finally:
        for _, proc, _ in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def ip_json(args: Sequence[str], netns: str) -> list[dict[str, Any]]:
    """`ip -j -n NETNS ARGS...` parsed (empty list when the namespace is gone)."""
    done = run(["ip", "-j", "-n", netns, *args], what="ip", check=False)
    if done.returncode != 0:
        return []
    try:
        parsed = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return []
    return parsed if isinstance(parsed, list) else []


def list_netns() -> list[str]:
    """Names of all named network namespaces (`ip netns list`)."""
    done = run(["ip", "netns", "list"], what="ip netns list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def nft_apply(netns: str, script: str) -> None:
    """Apply an nftables script atomically inside namespace *netns*."""
    run(["nsenter", f"--net=/run/netns/{netns}", "nft", "-f", "-"], stdin=script,
        what=f"nft in {netns}")
