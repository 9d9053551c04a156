"""Heartbeat daemons on lab nodes: start/stop, waits and membership watches (their config is
written by `skyge.clients.lab.configs`).

Shared by the heartbeat lab tests and the benchmarks (and by later daemons' tests, which need a
membership first). Every wait is bounded and says what it waited for when it gives up.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyge.clients.lab import Lab, LabNode
from skyge.clients.lab.configs import configure_heartbeat
from skyge.v1 import heartbeat_pb2 as pb, heartbeat_pb2_grpc

START_TIMEOUT = 20.0
DAEMON = "heartbeat"


def socket_path(node: LabNode) -> Path:
    return node.root / "run" / "skyge" / f"{DAEMON}.sock"


def channel(node: LabNode) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{socket_path(node)}")


def start(node: LabNode, *args: str, wait: bool = True,
          timeout: float = START_TIMEOUT) -> subprocess.Popen[bytes]:
    """Start skyge-heartbeat inside the node (its namespaces, its root); wait until serving."""
    proc = node.spawn([sys.executable, "-m", "skyge.services.heartbeat", "-r", str(node.root),
                       *args], name=DAEMON)
    if wait:
        wait_serving(node, proc, timeout)
    return proc


def log_text(node: LabNode) -> str:
    log = node.root / "var" / "log" / f"{DAEMON}.log"
    return log.read_text(errors="replace") if log.exists() else ""


def wait_serving(node: LabNode, proc: subprocess.Popen[bytes] | None = None,
                 timeout: float = START_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{node.key}: skyge-heartbeat exited {proc.returncode}:\n"
                                 f"{log_text(node)[-3000:]}")
        if socket_path(node).exists():
            with channel(node) as ch:
                try:
                    reply = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service="skyge.v1.Heartbeat"), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
        time.sleep(0.05)
    raise AssertionError(f"{node.key}: skyge-heartbeat not serving after {timeout:g} s:\n"
                         f"{log_text(node)[-3000:]}")


def stop(node: LabNode, timeout: float = 10.0) -> None:
    """SIGTERM (clean stop: LEAVE datagrams) and wait until gone."""
    node.kill(DAEMON, signal.SIGTERM, wait=timeout)


def pid(node: LabNode) -> int:
    pids = node.find(DAEMON)
    assert pids, f"{node.key}: no heartbeat daemon"
    return pids[0]


def members(node: LabNode) -> dict[int, pb.Member]:
    with channel(node) as ch:
        view = heartbeat_pb2_grpc.HeartbeatStub(ch).ListMembers(pb.ListMembersRequest(), timeout=5)
    return {m.node.domain: m for m in view.members}


def view(node: LabNode) -> pb.MembershipView:
    with channel(node) as ch:
        return heartbeat_pb2_grpc.HeartbeatStub(ch).ListMembers(pb.ListMembersRequest(), timeout=5)


def links(node: LabNode) -> dict[tuple[int, int], pb.Link]:
    with channel(node) as ch:
        reply = heartbeat_pb2_grpc.HeartbeatStub(ch).ListLinks(pb.ListLinksRequest(), timeout=5)
    return {(link.peer_domain, link.path): link for link in reply.links}


def stats(node: LabNode) -> pb.HeartbeatStats:
    with channel(node) as ch:
        return heartbeat_pb2_grpc.HeartbeatStub(ch).GetStats(pb.GetStatsRequest(), timeout=5)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0,
             interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; AssertionError naming `what` otherwise."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except grpc.RpcError as error:
            last = f"RPC failed: {error.code()}"
        if last and not isinstance(last, str):
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} "
                                 f"(last: {last!r})")
        time.sleep(interval)


def wait_members(nodes: Iterable[LabNode], expected: Iterable[int], timeout: float = 10.0) -> None:
    """Every node in `nodes` sees exactly the domains `expected`."""
    wanted = set(expected)
    nodes = list(nodes)

    def converged() -> bool | str:
        seen = {n.key: sorted(members(n)) for n in nodes}
        wrong = {k: v for k, v in seen.items() if set(v) != wanted}
        return True if not wrong else f"views {wrong}, want {sorted(wanted)}"

    wait_for(f"{[n.key for n in nodes]} to see members {sorted(wanted)}", converged, timeout)


def start_cluster(lab: Lab, nodes: Iterable[LabNode] | None = None,
                  timeout: float = 20.0, **options: Any) -> None:
    """Configure and start heartbeat on `nodes` (default all), wait for one full view; `options`
    go to heartbeat.cfg (see `configure_heartbeat`)."""
    nodes = list(nodes if nodes is not None else lab.nodes)
    configure_heartbeat(lab, nodes, **options)
    procs = [(n, start(n, wait=False)) for n in nodes]
    for node, proc in procs:
        wait_serving(node, proc)
    wait_members(nodes, [n.id for n in nodes], timeout)


@dataclass
class Seen:
    """One membership event as a watch stream delivered it."""

    kind: str  # snapshot, joined, left, link
    domain: int  # the member (or link peer) concerned; 0 for a snapshot
    time_unix_ns: int
    received_unix_ns: int
    view_id: int
    reason: int = 0  # LeaveReason for left
    path: int = 0
    up: bool = False  # link state for link events
    message: Any = None


@dataclass
class Watch:
    """A WatchMembership stream on one node, read by a thread into `events`."""

    node: LabNode
    events: list[Seen] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self._channel = channel(self.node)
        self._call = heartbeat_pb2_grpc.HeartbeatStub(self._channel).WatchMembership(
            pb.WatchMembershipRequest())
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"{self.node.key}: no snapshot from WatchMembership")

    def _read(self) -> None:
        try:
            for event in self._call:
                now = time.time_ns()
                which = event.WhichOneof("event")
                if which == "snapshot":
                    seen = Seen("snapshot", 0, event.time_unix_ns, now, event.view_id,
                                message=event.snapshot)
                elif which == "joined":
                    seen = Seen("joined", event.joined.node.domain, event.time_unix_ns, now,
                                event.view_id, message=event.joined)
                elif which == "left":
                    seen = Seen("left", event.left.member.node.domain, event.time_unix_ns, now,
                                event.view_id, reason=event.left.reason, message=event.left)
                else:
                    link = event.link_changed
                    seen = Seen("link", link.peer_domain, event.time_unix_ns, now, event.view_id,
                                path=link.path, up=link.state == pb.LINK_UP, message=link)
                with self._lock:
                    self.events.append(seen)
                self._ready.set()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{error.code()}: {error.details()}"
        finally:
            self._ready.set()

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.events)

    def of(self, kind: str, domain: int | None = None, after_ns: int = 0) -> list[Seen]:
        return [e for e in self.snapshot() if e.kind == kind and e.time_unix_ns >= after_ns
                and (domain is None or e.domain == domain)]

    def wait(self, kind: str, domain: int | None = None, after_ns: int = 0,
             timeout: float = 10.0) -> Seen:
        found = wait_for(f"{self.node.key}: a {kind!r} event of {domain}",
                         lambda: self.of(kind, domain, after_ns), timeout, 0.005)
        return found[0]

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)
        self._channel.close()


def watches(nodes: Iterable[LabNode]) -> dict[int, Watch]:
    return {n.id: Watch(n) for n in nodes}


def close_all(items: Mapping[int, Watch]) -> None:
    for watch in items.values():
        watch.close()


def send_datagrams(node: LabNode, nic: str, datagrams: Sequence[bytes], port: int = 7400,
                   destination: str | None = None) -> None:
    """Send raw UDP datagrams from a Python socket inside `node`, bound to `nic`, to the NIC's
    broadcast address (or `destination`)."""
    code = (
        "import socket, sys\n"
        "nic, port, dest, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])\n"
        "data = sys.stdin.buffer.read()\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, nic.encode())\n"
        "at = 0\n"
        "for _ in range(n):\n"
        "    size = int.from_bytes(data[at:at + 4], 'big'); at += 4\n"
        "    s.sendto(data[at:at + size], (dest, port)); at += size\n"
    )
    dest = destination or ("192.168.1.255" if nic == "eth0" else "10.0.0.255")
    blob = b"".join(len(d).to_bytes(4, "big") + d for d in datagrams)
    cmd = node.command([sys.executable, "-c", code, nic, str(port), dest, str(len(datagrams))])
    done = subprocess.run(cmd, input=blob, capture_output=True, timeout=30,
                          env=node.environment())
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def capture_datagrams(node: LabNode, nic: str, count: int, port: int = 7400,
                      timeout: float = 5.0) -> list[bytes]:
    """Receive `count` datagrams on `nic` inside `node` (a second socket on the heartbeat port)."""
    code = (
        "import socket, sys, time\n"
        "nic, port = sys.argv[1], int(sys.argv[2])\n"
        "n, limit = int(sys.argv[3]), float(sys.argv[4])\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, nic.encode())\n"
        "s.bind(('0.0.0.0', port)); s.settimeout(limit)\n"
        "out = sys.stdout.buffer\n"
        "for _ in range(n):\n"
        "    data = s.recv(65535)\n"
        "    out.write(len(data).to_bytes(4, 'big') + data)\n"
        "out.flush()\n"
    )
    cmd = node.command([sys.executable, "-c", code, nic, str(port), str(count), str(timeout)])
    done = subprocess.run(cmd, capture_output=True, timeout=timeout + 30, env=node.environment())
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    blob, found, at = done.stdout, [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at:at + 4], "big")
        found.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    return found
