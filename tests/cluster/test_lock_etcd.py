"""The lock daemon's etcd backend (lock.cfg `backend = "etcd"`) on the virtual cluster: real
daemons, and a real etcd of one member per node inside the nodes, on the private network
(`skyge.clients.lab.etcd.start_etcd`, what `skyge lab up --etcd` runs).

One 3-node lab for the module, the tests in order, like an operator's session: the seed's
test_d_lock across the three nodes; the demo service (HA) cut off from the others with its
node, then its node crashed, each time taken over by another node with the floating IP never
on two nodes (`ip monitor address` in every node) and the client never answered by a replaced
server. Then, on labs of their own: a two-node lock.cfg with `backend = "etcd"` is refused with
the reason, and an etcd that does not answer at start stops the daemon with a clear error.
Every wait is bounded and ends on an event.
"""
from __future__ import annotations

import datetime
import subprocess
import sys
import time

import pytest

from skyge.clients.lab import GATEWAY_IPS, Lab, LabNode
from skyge.clients.lab.configs import write_lock_config
from skyge.clients.lab.demo import (Prober, install_demo_service, run_demo, service_status,
                                    start_node, wait_placement)
from skyge.clients.lab.etcd import etcd_binary, start_etcd
from skyge.clients.lab.errors import LabError
from skyge.clients.lab.observe import (AddressMonitor, holder_intervals, interleaved_answers,
                                       overlaps)
from tests.cluster import heartbeat_support as hs
from tests.cluster import lock_support as ls

from .conftest import lab_unavailable, unique_lab_name

pytestmark = pytest.mark.lab

#: how long a takeover may take at most here: etcd's lease (TTL 2 s), extended by a new etcd
#: leader when the lost node held the leadership (an election, then its timeout again), plus
#: etcd's expiry scan, the HA start, and a loaded two-core machine
TAKEOVER_S = 20.0
#: a daemon that is refused or cannot start says so within this
START_S = 60.0


@pytest.fixture(scope="module")
def cluster():
    """3 nodes, an etcd member in each, heartbeat + lock (etcd) + bus + HA, the demo service
    running on n1 with n2 then n3 waiting; an address monitor in every node from before the
    service starts."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        etcd_binary()
    except LabError as error:
        pytest.skip(str(error))
    lab = Lab.up(nodes=3, name=unique_lab_name())
    monitors: list[AddressMonitor] = []
    try:
        ls.start_cluster(lab, backend="etcd")
        install_demo_service(lab)
        for node in lab.nodes:
            start_node(node, ("bus",))
        monitors = [AddressMonitor(node, "etcd") for node in lab.nodes]
        for node in lab.nodes:  # n1 first: it runs the service, n2 and n3 queue in that order
            start_node(node, ("ha",))
            if node.id == 1:
                wait_placement(node, lambda p: p[0] == "running" and p[1] == 1,
                               what="running on 1", timeout=30)
        yield lab, monitors
    finally:
        for monitor in monitors:
            monitor.stop()
        lab.down()


def log(node: LabNode, daemon: str) -> str:
    path = node.root / "var" / "log" / f"skyge-{daemon}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def lease_lost_since(node: LabNode, t0_ns: int) -> bool:
    """Whether `node`'s lock daemon lost its etcd lease after t0 (then its waits failed and
    were asked again: they lost their place in the queue)."""
    since = datetime.datetime.fromtimestamp(t0_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    return any(line[:23] >= since and ("etcd did not confirm" in line or "lease ended" in line)
               for line in log(node, "lock").splitlines())


def next_in_line(lab: Lab, waiting: list[int], t0_ns: int) -> list[int]:
    """Who may take the service over: the first waiter, or, if a waiter lost its
    etcd lease meanwhile (etcd without a leader for a whole lease, which a loaded machine may
    cause), any of them."""
    survivors = [lab.node(d) for d in waiting]
    return waiting if any(lease_lost_since(n, t0_ns) for n in survivors) else waiting[:1]


def settled(lab: Lab, waiting: int) -> tuple[int, int, list[int]]:
    """(active domain, its fencing token, waiting domains) once the service runs with
    `waiting` nodes queued, as every live node reports it."""
    live = [n for n in lab.nodes if not n.crashed]
    _, active, queue = wait_placement(live[0], lambda p: p[0] == "running" and
                                      len(p[2]) == waiting,
                                      what=f"running, {waiting} waiting", timeout=TAKEOVER_S)
    status = service_status(lab.node(active))
    assert status is not None and status.fencing_token > 0
    return active, status.fencing_token, queue


def takeover(lab: Lab, monitors: list[AddressMonitor], prober: Prober, victim: LabNode,
             t0_ns: int, token: int, crashed: bool = False) -> tuple[int, str]:
    """After a fault of the active node `victim` at t0: the client is answered by another
    node under a newer token; the floating IP was never on two nodes; no replaced server
    answered again. Returns (the new node, its answer)."""
    found = prober.wait_answer_after(t0_ns, exclude=victim.key, timeout=TAKEOVER_S)
    assert found is not None, f"nobody but {victim.key} answered within {TAKEOVER_S:g} s"
    _, answer = found
    node = int(answer.split()[0][1:])
    assert node != victim.id and int(answer.split()[-1]) > token, answer
    time.sleep(0.5)  # attempts after the first answer: a replaced server must not come back
    ends = {victim.key: [t0_ns]} if crashed else {}
    assert overlaps(holder_intervals(monitors, ends)) == []
    assert interleaved_answers(prober.attempts(), t0_ns, time.time_ns()) == []
    return node, answer


def test_seed_test_d_lock_across_three_nodes_on_etcd(cluster):
    """The seed's test_d_lock (`skyge lock test`, see test_lock.py) with the locks in etcd:
    n1 holds, Ctrl+C hands the lock to n2 then n3, tokens (etcd revisions) growing."""
    lab, _ = cluster
    ls.seed_lock_test(lab)
    authority = ls.authority(lab.node(2))
    assert authority.has_quorum and "etcd: majority 2 of 3 members" in authority.quorum_rule
    peers = ls.cli(lab.node(2), "lock", "peers")
    assert peers.returncode == 1 and "keeps its locks in etcd" in peers.stderr, peers


def test_a_cut_off_node_loses_its_locks_and_another_takes_its_service_over(cluster):
    """The active node is partitioned from the others (the gateway and the client stay with
    them): its lock daemon's etcd lease is not confirmed any more, so its holds end and its
    HA daemon stops the service; the others' etcd expires that lease and the next waiter takes
    the service over, never while the cut-off node still held the floating IP. Healed, the
    node queues again."""
    lab, monitors = cluster
    active, token, waiting = settled(lab, 2)
    victim = lab.node(active)
    prober = Prober(lab)
    try:
        assert prober.wait_answer_after(time.time_ns(), timeout=10) is not None
        t0 = time.time_ns()
        lab.partition([[active]], gateway=1)
        try:
            node, _ = takeover(lab, monitors, prober, victim, t0, token)
            assert node in next_in_line(lab, waiting, t0)
            monitor = next(m for m in monitors if m.node is victim)
            dropped = monitor.first_delete_after(t0)
            assert dropped is not None, f"{victim.key} kept the floating IP"
            added = min(t for m in monitors if m.node is not victim
                        if (t := m.first_add_after(t0)) is not None)
            assert dropped < added
            assert "etcd did not confirm this node's lease" in log(victim, "lock")
            assert "lock lost" in log(victim, "ha") or "ownership deadline" in log(victim, "ha")
        finally:
            lab.heal()
        settled(lab, 2)  # the healed node queues again
    finally:
        prober.stop()


def test_the_active_node_crashes_and_the_next_node_takes_its_service_over(cluster):
    """Power off of the active node (its etcd member dies with it): the next waiter gets the
    lock once etcd expired the crashed node's lease, and the client is answered from it."""
    lab, monitors = cluster
    active, token, waiting = settled(lab, 2)
    victim = lab.node(active)
    prober = Prober(lab)
    try:
        assert prober.wait_answer_after(time.time_ns(), timeout=10) is not None
        t0 = time.time_ns()
        victim.crash()
        node, answer = takeover(lab, monitors, prober, victim, t0, token, crashed=True)
        assert node in next_in_line(lab, waiting, t0), answer
        assert settled(lab, 1)[0] == node
    finally:
        prober.stop()


def run_lock(node: LabNode, *args: str) -> tuple[int, str]:
    """skyge-lock in the foreground on `node` until it exits: (status, what it said)."""
    done = node.run([sys.executable, "-m", "skyge.services.lock", "-r", str(node.root), *args],
                    timeout=START_S)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("two_nodes", [{"expected_nodes": 2},
                                       {"reference_ips": ":".join(GATEWAY_IPS)}, "-i"])
def test_etcd_in_a_two_node_config_is_refused_with_the_reason(make_lab, two_nodes):
    lab = make_lab(2)
    n1 = lab.node(1)
    write_lock_config(n1, two_nodes if isinstance(two_nodes, dict) else {}, backend="etcd")
    status, said = run_lock(n1, *(["-i", ":".join(GATEWAY_IPS)] if two_nodes == "-i" else []))
    assert status in (1, 2), said
    assert "backend" in said and "three or more nodes" in said, said
    assert 'backend = "builtin"' in said, said  # and it points at the built-in authority


def test_an_etcd_that_does_not_answer_at_start_stops_the_daemon_with_a_clear_error(make_lab):
    lab = make_lab(1)
    n1 = lab.node(1)
    hs.start_cluster(lab)
    write_lock_config(n1, backend="etcd")  # n1's private address, where no etcd listens
    status, said = run_lock(n1)
    assert status == 1, said
    assert f"etcd is not reachable at {n1.private_ip}:2379" in said, said
    assert "etcd_endpoints" in said, said
    assert "Traceback" not in said and "Exception ignored" not in said, said  # the error alone


def test_the_demo_on_etcd_fails_the_service_over(lab_support):
    """`skyge demo --backend etcd`: the same steps and report as on the built-in authority
    (test_demo.py), in a lab of its own name (so another demo on this machine is no matter)."""
    lines: list[str] = []
    report = run_demo(lines.append, lab_name=unique_lab_name(), backend="etcd")
    assert report["backend"] == "etcd" and report["daemons_serving"] is True
    assert report["etcd_endpoints"].count(":2379") >= 3, report["etcd_endpoints"]
    active, waiting = report["active_before"], report["waiting_before"]
    assert sorted([active, *waiting]) == [1, 2, 3]
    assert f"Service -- fifo: 0 is running on {active}" in report["status_before"]
    assert report["answer_before"].startswith(f"n{active} token ")
    after = int(report["answer_after"].split()[0][1:])
    assert after in waiting, report["answer_after"]
    assert int(report["answer_after"].split()[-1]) > int(report["answer_before"].split()[-1])
    assert 0 < report["failover_ms"] < 15000
    assert report["active_after"] == after and len(report["waiting_after"]) == 1
    assert any("etcd" in line for line in lines)


def test_etcd_needs_three_nodes_in_the_lab_and_the_demo(make_lab):
    """`skyge lab up --etcd` and `skyge demo --backend etcd` with two nodes are refused at
    once, before any lab is made, naming the built-in authority."""
    cli = [sys.executable, "-m", "skyge.clients.cli.main"]
    for argv in (["lab", "up", "--nodes", "2", "--etcd", "--name", unique_lab_name()],
                 ["demo", "--backend", "etcd", "--nodes", "2"]):
        done = subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "3" in done.stderr and "built-in authority" in done.stderr, done.stderr
    lab = make_lab(2)
    with pytest.raises(LabError, match="built-in authority"):
        start_etcd(lab)
    assert not any(node.find("etcd") for node in lab.nodes)
