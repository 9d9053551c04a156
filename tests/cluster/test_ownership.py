"""Ownership under pauses, on a 3-node lab with the real daemons and the demo service: a pause
shorter than the leases moves nothing; a longer one moves the service once, and never leaves its
floating IP on two nodes at once. Judged from outside: `ip monitor address` in every node
namespace, and where the service runs.

One lab for the module; the tests run in order.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import pytest

from bench.failover import configure
from skyge.clients.lab.observe import AddressMonitor, holder_intervals
from skyge.clients.lab import GATEWAY_IPS, Lab, LabError, LabNode
from skyge.clients.lab.daemons import start_witness
from skyge.clients.lab.configs import configure_heartbeat, write_daemon_config
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, DEMO_VIP, placement, service_status,
                                    start_node, wait_members, wait_placement)
from skyge.services.ha.resources.script import read_pidfile
from skyge.services.common.paths import NodePaths
from skyge.services.lock.protocol import Timing
from skyge.v1 import witness_pb2, witness_pb2_grpc

from .conftest import lab_unavailable, unique_lab_name

pytestmark = pytest.mark.lab

#: well past any pause the leases ride out: a move would have happened by then
SETTLE_S = 3 * Timing().hold_lease_ns / 1e9


@pytest.fixture(scope="module")
def cluster():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab.up(nodes=3, name=unique_lab_name())
    monitors: list[AddressMonitor] = []
    try:
        configure_heartbeat(lab)
        configure(lab)
        for node in lab.nodes:
            start_node(node, [d for d in CLUSTER_DAEMONS if d != "ha"])
        wait_members(lab.node(1), lab.size)
        # watching before any service starts: every address a node ever holds is seen added
        monitors = [AddressMonitor(node, "own") for node in lab.nodes]
        for node in lab.nodes:  # n1's HA first: it runs the service, the others queue in order
            start_node(node, ("ha",))
            if node.id == 1:
                wait_placement(node, lambda p: p[0] == "running", what="running", timeout=30)
        yield lab, monitors
    finally:
        for monitor in monitors:
            monitor.stop()
        lab.down()


def daemon_pid(node: LabNode, daemon: str) -> int:
    return read_pidfile(node.root / "run" / "skyge" / f"{daemon}.pid")


def pause(node: LabNode, daemons: str | tuple[str, ...], seconds: float) -> None:
    pids = [daemon_pid(node, d) for d in ((daemons,) if isinstance(daemons, str) else daemons)]
    for pid in pids:
        node.kill(pid, signal.SIGSTOP, wait=0)
    try:
        time.sleep(seconds)
    finally:
        for pid in pids:
            node.kill(pid, signal.SIGCONT, wait=0)


def active(lab: Lab) -> tuple[int, int]:
    """(active domain, the service's fencing token) once it runs with two waiters."""
    try:
        _, domain, _ = wait_placement(lab.node(1), lambda p: p[0] == "running" and
                                      len(p[2]) == 2, what="running, two waiting", timeout=30)
    except LabError as error:
        tails = []
        for node in lab.nodes:
            for daemon in ("ha", "lock"):
                path = node.root / "var" / "log" / f"skyge-{daemon}.log"
                lines = path.read_text(errors="replace").splitlines() if path.exists() else []
                tails.append(f"--- {node.key} {daemon}\n" + "\n".join(lines[-12:]))
        raise LabError(f"{error}\n" + "\n".join(tails)) from None
    status = service_status(lab.node(domain))
    assert status is not None
    return domain, status.fencing_token


def two_holders(monitors: list[AddressMonitor], since_ns: int) -> list[str]:
    """Every stretch after `since_ns` in which two nodes held the floating IP."""
    intervals = [(start, end, node) for node, spans in holder_intervals(monitors, {}).items()
                 for start, end in spans if end > since_ns]
    found = []
    for i, (start_a, end_a, node_a) in enumerate(intervals):
        for start_b, end_b, node_b in intervals[i + 1:]:
            if node_a != node_b and start_a < end_b and start_b < end_a:
                found.append(f"{node_a} and {node_b} for "
                             f"{(min(end_a, end_b) - max(start_a, start_b)) / 1e6:.1f} ms")
    return found


@pytest.mark.parametrize("daemon", ["lock", "ha"])
def test_a_200_ms_pause_of_a_daemon_on_the_active_node_moves_nothing(cluster, daemon):
    lab, _monitors = cluster
    domain, token = active(lab)
    pause(lab.node(domain), daemon, 0.2)
    time.sleep(SETTLE_S)
    assert active(lab) == (domain, token)


def test_a_frozen_lock_daemon_costs_the_service_its_node_but_never_two_owners(cluster):
    """The lock daemon of the active node is stopped for 3 s: no Lost can come from it, yet the
    HA daemon's deadman stops the service at its ownership deadline, before the next node is
    granted the lock; the service moves once."""
    lab, monitors = cluster
    domain, token = active(lab)
    since = time.time_ns()
    pause(lab.node(domain), "lock", 3.0)
    moved, new_token = active(lab)
    assert moved != domain and new_token > token
    assert two_holders(monitors, since) == []
    log = (lab.node(domain).root / "var" / "log" / "skyge-ha.log").read_text(errors="replace")
    assert "ownership deadline passed" in log


def test_a_frozen_ha_daemon_with_a_live_lock_daemon_keeps_its_service(cluster):
    """The HA daemon of the active node is stopped for 2 s (longer than the lease): its lock
    daemon renewed all along, so its deadman, thawed past the deadline it last heard of, reads
    the renewal on the lease file and kills nothing."""
    lab, _monitors = cluster
    domain, token = active(lab)
    pause(lab.node(domain), "ha", 2.0)
    time.sleep(SETTLE_S)
    assert active(lab) == (domain, token)


def test_all_five_daemons_frozen_cost_the_service_its_node_but_never_two_owners(cluster):
    """Every skyge daemon the lab runs on the active node is stopped for 3 s (the HA daemon's own
    deadman thread with it): the backstop process, which outlives and outruns a frozen HA daemon,
    stops the service at the lease's end, before the next node is granted the lock."""
    lab, monitors = cluster
    domain, token = active(lab)
    since = time.time_ns()
    pause(lab.node(domain), tuple(CLUSTER_DAEMONS), 3.0)
    moved, new_token = active(lab)
    assert moved != domain and new_token > token
    assert two_holders(monitors, since) == []
    log = (lab.node(domain).root / "var" / "log" / "skyge" / "skyge-ha-deadman.log").read_text(
        errors="replace")
    assert "ownership deadline passed" in log


def test_ha_status_says_when_two_nodes_are_not_protected_against_a_cut(make_lab):
    """Two nodes: without a fence command `skyge ha status` warns that a cut where both reach the
    reference IP runs the services on both; with one (n1 here) it does not."""
    lab = make_lab(2)
    configure_heartbeat(lab)
    configure(lab)
    n1, n2 = lab.nodes
    write_daemon_config(n1, "lock", {"expected_nodes": 2, "fence_command": lab.fence_command()})
    write_daemon_config(n2, "lock", {"expected_nodes": 2})
    for node in lab.nodes:
        start_node(node)
    wait_placement(n1, lambda p: p[0] == "running", what="running", timeout=30)
    shown = {node.key: subprocess.run(
        [sys.executable, "-m", "skyge.clients.cli.main", "--root", str(node.root), "ha",
         "status"], capture_output=True, text=True, timeout=60) for node in lab.nodes}
    assert shown["n2"].returncode == 0, shown["n2"].stderr
    assert "WARNING: two nodes and neither fence_command nor witness" in shown["n2"].stdout
    assert shown["n1"].returncode == 0 and "WARNING" not in shown["n1"].stdout, shown["n1"].stdout


def test_a_floating_ip_another_host_answers_for_is_not_added_until_it_is_free(make_lab):
    """Duplicate address detection: while another host (here the gateway, standing in for a
    frozen or cut-off node whose kernel still answers for the address) answers ARP for the
    floating IP, the node granted the lock waits without adding it; once the address is free,
    it adds it and the service runs."""
    lab = make_lab(2)
    lab.gateway.run(["ip", "addr", "add", f"{DEMO_VIP}/24", "dev", "eth0"], check=True)
    configure_heartbeat(lab)
    configure(lab)
    for node in lab.nodes:
        start_node(node)
    _, domain, _ = wait_placement(lab.node(1), lambda p: p[0] == "starting", what="starting",
                                  timeout=30)
    log = lab.node(domain).root / "var" / "log" / "skyge-ha.log"
    deadline = time.monotonic() + 30
    while "waiting until it is free" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "no duplicate address detected"
        time.sleep(0.1)
    for node in lab.nodes:
        assert DEMO_VIP not in node.run(["ip", "-o", "-4", "addr", "show"]).stdout
    lab.gateway.run(["ip", "addr", "del", f"{DEMO_VIP}/24", "dev", "eth0"], check=True)
    wait_placement(lab.node(1), lambda p: p[0] == "running" and p[1] == domain,
                   what="running once the address is free", timeout=30)


def witness_refusals(lab: Lab) -> int:
    """Votes the lab's witness refused so far (it counts them)."""
    socket = NodePaths.at(lab.gateway.root).socket("witness")
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        status = witness_pb2_grpc.WitnessStub(channel).Status(witness_pb2.WitnessStatusRequest(),
                                                               timeout=10)
    return sum(cluster.refused for cluster in status.clusters)


def test_two_nodes_cut_apart_with_a_witness_run_the_service_on_the_holders_side_only(make_lab):
    """Both heartbeat paths between the two nodes cut, both still reaching the gateway, which
    runs skyge-witness: the node running the service keeps the witness's vote and the service;
    the other asks, is refused again and again, and never adds the floating IP. After the heal
    nothing moved; when the active node then crashes, the survivor gets the vote once the
    crashed node's has run out, and takes the service over."""
    lab = make_lab(2)
    witness = start_witness(lab)
    configure_heartbeat(lab)
    configure(lab)
    for node in lab.nodes:
        write_daemon_config(node, "lock", {"expected_nodes": 2,
                                           "reference_ips": ":".join(GATEWAY_IPS),
                                           "witness": witness})
        start_node(node, [d for d in CLUSTER_DAEMONS if d != "ha"])
    wait_members(lab.node(1), lab.size)
    monitors = [AddressMonitor(node, "own") for node in lab.nodes]
    try:
        for node in lab.nodes:
            start_node(node, ("ha",))
        _, domain, _ = wait_placement(lab.node(1), lambda p: p[0] == "running" and
                                      len(p[2]) == 1, what="running, one waiting", timeout=30)
        holder, other = lab.node(domain), next(n for n in lab.nodes if n.id != domain)
        token = service_status(holder).fencing_token
        since = time.time_ns()
        lab.cut_between(holder, other, 100)
        refused = witness_refusals(lab)
        deadline = time.monotonic() + 60
        while witness_refusals(lab) < refused + 8:  # ~4 s of asking: any vote would have passed
            assert time.monotonic() < deadline, "the cut-off node never asked the witness"
            time.sleep(0.2)
        assert two_holders(monitors, since) == []
        status = service_status(holder)
        assert status is not None and status.fencing_token == token
        assert placement(holder)[:2] == ("running", domain)
        lab.cut_between(holder, other, 0)
        wait_placement(holder, lambda p: p == ("running", domain, [other.id]),
                       what="running where it ran, the other waiting", timeout=30)
        assert two_holders(monitors, since) == []
        assert service_status(holder).fencing_token == token
        holder.crash()
        wait_placement(other, lambda p: p[:2] == ("running", other.id),
                       what="taken over by the survivor", timeout=30)
    finally:
        for monitor in monitors:
            if not monitor.node.crashed:
                monitor.stop()
