"""Run skyge's own daemons on lab nodes: start them, wait until they serve, stop them.

Tests, benchmarks and the demo all start daemons the same way: `python -m skyge.services.NAME`
inside the node (its namespaces, `-r` its root), logs in the node's var/log, readiness judged by
the daemon's grpc.health.v1 answer on its Unix socket (reachable from the host, since the node
root is a host folder).
"""
from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyge.clients.lab._net import GATEWAY_IPS
from skyge.clients.lab.cluster import Lab, LabHost, LabNode
from skyge.clients.lab.configs import write_daemon_config
from skyge.clients.lab.errors import LabError
from skyge.services.common.paths import DAEMONS, WITNESS_PORT, NodePaths
from skyge.v1 import witness_pb2, witness_pb2_grpc

START_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.02
STOP_TIMEOUT_S = 10.0


def is_serving(node: LabHost, daemon: str, timeout_s: float = 1.0) -> bool:
    """True when the node's daemon answers SERVING on its Unix socket."""
    socket = NodePaths.at(node.root).socket(daemon)
    if not socket.exists():
        return False
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_serving(node: LabHost, daemons: Iterable[str], timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until every named daemon serves; LabError naming the laggards (and their log) if not."""
    waiting = list(daemons)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        waiting = [d for d in waiting if not is_serving(node, d)]
        if waiting:
            time.sleep(POLL_INTERVAL_S)
    if waiting:
        logs = ", ".join(str(node.root / "var" / "log" / f"skyge-{d}.log") for d in waiting)
        raise LabError(f"{node.key}: {', '.join(waiting)} not serving after {timeout_s:g} s "
                       f"(see {logs})")


def start_daemons(node: LabNode, daemons: Sequence[str] = DAEMONS, *,
                  extra_args: Sequence[str] = ("-l", "LOG_DEBUG"),
                  wait: bool = True) -> dict[str, int]:
    """Start skyge daemons on a node (each named `skyge-NAME` for `node.kill`); returns their
    PIDs."""
    pids = {}
    for daemon in daemons:
        if daemon not in DAEMONS:
            raise LabError(f"unknown daemon {daemon!r} (one of {', '.join(DAEMONS)})")
        proc = node.spawn([sys.executable, "-m", f"skyge.services.{daemon}", "-r", str(node.root),
                           *extra_args], name=f"skyge-{daemon}")
        pids[daemon] = proc.pid
    if wait:
        wait_serving(node, daemons)
    return pids


def stop_daemons(node: LabNode, daemons: Sequence[str] = DAEMONS) -> None:
    """SIGTERM the node's skyge daemons (clean stop: a heartbeat daemon announces its leave)."""
    for daemon in daemons:
        if node.find(f"skyge-{daemon}"):
            try:
                node.kill(f"skyge-{daemon}", signal.SIGTERM, wait=STOP_TIMEOUT_S)
            except LabError as error:
                log = node.root / "var" / "log" / f"skyge-{daemon}.log"
                tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
                raise LabError("\n".join([f"{error}; the end of {log}:", *tail])) from None


#: where the lab's witness listens: the gateway, which both networks' nodes reach on eth0
WITNESS_ADDRESS = f"{GATEWAY_IPS[0]}:{WITNESS_PORT}"
#: the longest hold-over the lab's witness allows: above the lock daemon's default switch time
#: (775 ms), short enough that its startup hold (vote + this) stays near 2 s
WITNESS_MAX_HOLDOVER_MS = 1000


def start_witness(lab: Lab) -> str:
    """Run `skyge-witness` in the gateway (the two-node clusters' third machine) and wait until
    its startup hold is over (a real witness runs long before the cluster); returns the address
    to give lock.cfg's `witness`."""
    gateway = lab.gateway
    write_daemon_config(gateway, "witness", {"max_holdover_ms": WITNESS_MAX_HOLDOVER_MS})
    gateway.spawn([sys.executable, "-m", "skyge.services.witness", "-r", str(gateway.root),
                   "--listen", WITNESS_ADDRESS, "-l", "LOG_INFO"], name="skyge-witness")
    wait_serving(gateway, ("witness",))
    socket = NodePaths.at(gateway.root).socket("witness")
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = witness_pb2_grpc.WitnessStub(channel)
        deadline = time.monotonic() + START_TIMEOUT_S
        while (hold_ms := stub.Status(witness_pb2.WitnessStatusRequest(),
                                      timeout=5).startup_hold_ms):
            if time.monotonic() > deadline:
                raise LabError(f"the witness still holds its votes after {START_TIMEOUT_S:g} s")
            time.sleep(hold_ms / 1000)
    return WITNESS_ADDRESS
