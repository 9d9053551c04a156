"""skyge-ha under faults, on a 3-node lab with the real daemons (heartbeat, bus, lock, ha):
the death of a service's main process seen through its pidfile, local restarts, the user
heartbeat (pulses), emon's refusal of new services, isolation with and without a reachable
reference IP, a daemon restart carrying on what its node was asked to do, and force_reboot.

One lab for the module; the tests run in order (an operator's session). Every service runs on
n1 first (n1's HA starts first), n2 and n3 wait in that order (fifo).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest

from skyge.clients.lab import GATEWAY_IPS, Lab, LabNode
from skyge.clients.lab.daemons import start_daemons, wait_serving
from skyge.clients.lab.configs import configure_heartbeat, write_daemon_config
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, fetch, ha_call, install_demo_service,
                                    placement, service_status, start_node, wait_members,
                                    wait_placement)
from skyge.services.ha.resources.cgroup import ENTER, Cgroups, ServiceCgroup
from skyge.services.ha.resources.script import read_pidfile
from skyge.v1 import ha_pb2 as pb

from . import heartbeat_support as hs
from .conftest import lab_unavailable, unique_lab_name

pytestmark = pytest.mark.lab

#: service -> (fifo slot, port, floating IP, service.cfg extras)
SERVICES = {
    "web": (0, 8080, "192.168.1.100", {}),
    "again": (1, 8081, "192.168.1.101", {"restarts": 1}),
    "pulsed": (2, 8082, "192.168.1.102", {"pulse_timeout_ms": 1500}),
    "badstop": (3, 8083, "192.168.1.103", {"force_reboot": "yes"}),
}
ISOLATION_SCRIPT = r'''#!/bin/sh
echo "$SKYGE_DOMAIN $SKYGE_SERVICES" >> "{marker}"
'''


class Cluster:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.isolation_marker = lab.root / "isolated.txt"

    def node(self, i: int) -> LabNode:
        return self.lab.node(i)

    def cli(self, node: LabNode, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skyge.clients.cli.main", "--root",
                               str(node.root), *args], capture_output=True, text=True, timeout=60)

    def pidfile(self, name: str, node: LabNode) -> Path:
        _slot, port, _, _ = SERVICES[name]
        return self.lab.root / "demo" / f"{name}-{port}" / f"server-{node.id}.pid"

    def where(self, name: str) -> tuple[str, int, list[int]] | None:
        return placement(self.node(1) if not self.node(1).crashed else self.node(2), "fifo",
                         SERVICES[name][0])

    def wait(self, name: str, expected, what: str, timeout: float = 20.0):
        alive = next(n for n in self.lab.nodes if not n.crashed)
        return wait_placement(alive, expected, "fifo", SERVICES[name][0], timeout=timeout,
                              what=what)

    def status(self, name: str) -> pb.ServiceStatus:
        alive = next(n for n in self.lab.nodes if not n.crashed)
        status = service_status(alive, "fifo", SERVICES[name][0])
        assert status is not None
        return status

    def log(self, node: LabNode) -> str:
        path = node.root / "var" / "log" / "skyge-ha.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _install(lab: Lab) -> None:
    for name, (slot, port, vip, extra) in SERVICES.items():
        for node in lab.nodes:  # each node's pidfile path names the node
            pidfile = lab.root / "demo" / f"{name}-{port}" / f"server-{node.id}.pid"
            install_demo_service(lab, [node], slot=slot, name=name, port=port, vip=vip,
                                 extra={"pidfile": str(pidfile), **extra})
    script = lab.root / "isolation.sh"
    script.write_text(ISOLATION_SCRIPT.format(marker=lab.root / "isolated.txt"))
    script.chmod(0o755)
    for node in lab.nodes:
        write_daemon_config(node, "ha", {
            "reference_ips": ":".join(GATEWAY_IPS), "isolation_script": str(script),
            "reboot_command": node.self_crash_command()})


@pytest.fixture(scope="module")
def cluster(request) -> Cluster:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab.up(nodes=3, name=unique_lab_name())
    request.addfinalizer(lab.down)
    c = Cluster(lab)
    configure_heartbeat(lab)
    _install(lab)
    for node in lab.nodes:
        start_node(node, CLUSTER_DAEMONS[:-1])
    wait_members(c.node(1), 3)
    for node in lab.nodes:
        start_node(node, ("ha",))
        expected = list(range(2, node.id + 1))
        for name in SERVICES:
            c.wait(name, lambda p, expected=expected: (p[:2] == ("running", 1)
                                                       and sorted(p[2]) == expected),
                   f"running on 1, waiting {expected}", timeout=30)
    return c


def test_process_death_is_seen_at_once_through_the_pidfile(cluster):
    n1 = cluster.node(1)
    pid = read_pidfile(cluster.pidfile("web", n1))
    token = cluster.status("web").fencing_token
    began = time.monotonic()
    n1.kill(pid)
    state = cluster.wait("web", lambda p: p[:2] == ("running", 2), "taken over by 2", timeout=5)
    took = time.monotonic() - began
    # the check interval is 1 s: a takeover well inside it came from the pidfd, not a check
    assert took < 1.0, f"took {took:.2f} s"
    status = cluster.status("web")
    assert status.fencing_token > token
    n1_view = next(n for n in status.nodes if n.domain == 1)
    assert n1_view.fail_count == 1 and "died" in cluster.log(n1)
    assert fetch(cluster.lab.client, "192.168.1.100", 8080) == f"n2 token {status.fencing_token}"
    # n1 backs off (failure_backoff 1 s), then waits again, at the back
    cluster.wait("web", lambda p: p[2] == [3, 1], "n1 back in the queue", timeout=10)
    assert state[2] in ([3], [3, 1])


def test_local_restarts_come_before_a_switch(cluster):
    n1 = cluster.node(1)
    token = cluster.status("again").fencing_token
    first = read_pidfile(cluster.pidfile("again", n1))
    n1.kill(first)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # restarted in place: a new process, same lock and token
        status = cluster.status("again")
        try:
            second = read_pidfile(cluster.pidfile("again", n1))
        except Exception:
            second = first
        if status.state == pb.SERVICE_RUNNING and second != first and status.active_domain == 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"not restarted on n1: {placement(n1, 'fifo', 1)}")
    assert status.fencing_token == token and "restart 1 of 1 here" in cluster.log(n1)
    n1.kill(second)  # restarts used up: switched
    cluster.wait("again", lambda p: p[:2] == ("running", 2), "switched to 2", timeout=5)


def test_a_service_whose_pulses_stop_is_switched(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    # pulses are not expected before the first one: well past the timeout it still runs on 1
    time.sleep(2.0)
    assert cluster.where("pulsed")[:2] == ("running", 1)
    # the CLI's pulse (the seed's sk_user_heartbeat) arms it; an application then pulses over
    # gRPC every 0.1 s: a CLI start-up (~0.35 s, more in a namespace and under load) is too slow
    # to pulse with; the timeout (1.5 s) leaves room for a loaded machine's stalls
    done = cluster.cli(n1, "ha", "pulse", "-n", "pulsed")
    assert done.returncode == 0 and "pulse taken" in done.stdout, done.stderr
    # the application pulses for at least two timeouts, and while the CLI's refusals are checked
    # (each CLI run may take longer than the timeout on a loaded machine)
    replies: list[int] = []
    stop_pulsing = threading.Event()

    def pulse_until_stopped() -> None:
        while not stop_pulsing.wait(0.1):
            replies.append(ha_call(n1, "Pulse", pb.PulseRequest(name="pulsed"),
                                   timeout=5).pulse_timeout_ms)

    pulser = threading.Thread(target=pulse_until_stopped, daemon=True)
    pulser.start()
    try:
        time.sleep(3.0)
        assert cluster.where("pulsed")[:2] == ("running", 1)
        elsewhere = cluster.cli(n2, "ha", "pulse", "-t", "fifo", "-s", "2")
        assert elsewhere.returncode == 1 and "does not run on domain 2" in elsewhere.stderr
        no_pulse = cluster.cli(n2, "ha", "pulse", "-n", "web")  # web has no pulse_timeout_ms
        assert no_pulse.returncode == 1 and "pulse_timeout_ms 0" in no_pulse.stderr
        usage = cluster.cli(n1, "ha", "pulse", "-t", "fifo")
        assert usage.returncode == 2 and "-n NAME or by -t TYPE -s SLOT" in usage.stderr
        unknown = cluster.cli(n1, "ha", "pulse", "-n", "nosuch")
        assert unknown.returncode == 1 and "no service named 'nosuch'" in unknown.stderr
        assert cluster.where("pulsed")[:2] == ("running", 1)
    finally:
        stop_pulsing.set()
        pulser.join(10)
    assert replies and set(replies) == {1500}
    # the pulses stop: hung, switched to 2
    cluster.wait("pulsed", lambda p: p[:2] == ("running", 2), "switched after the pulses stopped",
                 timeout=10)
    assert "no user heartbeat (pulse) for 1500 ms" in cluster.log(n1)


def test_a_node_refusing_new_services_leaves_the_queues_until_it_accepts_again(cluster):
    n3 = cluster.node(3)
    reply = ha_call(n3, "SetRefuseNew",
                    pb.SetRefuseNewRequest(refuse=True, reason="cpu_load wm_90"))
    assert reply.refusing and reply.services_affected >= 1
    cluster.wait("badstop", lambda p: p[:2] == ("running", 1) and 3 not in p[2],
                 "n3 out of the queue")
    with pytest.raises(grpc.RpcError) as error:
        ha_call(n3, "SetRefuseNew", pb.SetRefuseNewRequest(refuse=True, reason="x" * 300))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in error.value.details()
    reply = ha_call(n3, "SetRefuseNew", pb.SetRefuseNewRequest(refuse=False))
    assert not reply.refusing
    cluster.wait("badstop", lambda p: p[:2] == ("running", 1) and 3 in p[2], "n3 queued again")


def test_a_restarted_ha_daemon_carries_on_what_its_node_was_told(cluster):
    """A service started by command (not onstart) on a backup waits there again after its HA
    daemon was killed -9 and restarted (as systemd's Restart= does)."""
    n3 = cluster.node(3)
    assert cluster.cli(n3, "ha", "svc", "-d", "3", "-t", "fifo", "-s", "0", "-a", "release") \
        .returncode == 0
    cluster.wait("web", lambda p: 3 not in p[2], "n3 released web")
    assert cluster.cli(n3, "ha", "svc", "-d", "3", "-t", "fifo", "-s", "0", "-a", "start") \
        .returncode == 0
    n3.kill("skyge-ha")
    start_daemons(n3, ("ha",), extra_args=("-l", "LOG_INFO"))
    cluster.wait("web", lambda p: 3 in p[2], "n3 waiting for web again")
    # a release is remembered too: after a restart it does not queue
    assert cluster.cli(n3, "ha", "svc", "-d", "3", "-t", "fifo", "-s", "1", "-a", "release") \
        .returncode == 0
    n3.kill("skyge-ha")
    start_daemons(n3, ("ha",), extra_args=("-l", "LOG_INFO"))
    cluster.wait("web", lambda p: 3 in p[2], "n3 waiting for web again")
    time.sleep(0.5)
    assert 3 not in cluster.where("again")[2]
    assert cluster.cli(n3, "ha", "svc", "-d", "3", "-t", "fifo", "-s", "1", "-a", "start") \
        .returncode == 0


def test_an_ha_daemon_killed_on_the_active_node_leaves_the_service_running_there(cluster):
    """The lock daemon keeps the dead daemon's holds (keep_holds): nobody takes over while the
    service still runs there; the restarted daemon adopts it with the same token."""
    active = cluster.where("web")[1]
    node = cluster.node(active)
    token = cluster.status("web").fencing_token
    node.kill("skyge-ha")
    time.sleep(1.5)  # far beyond a takeover (~50 ms): nobody took over
    assert cluster.where("web")[:2] == ("running", active)
    assert fetch(cluster.lab.client, "192.168.1.100", 8080) == f"n{active} token {token}"
    start_daemons(node, ("ha",), extra_args=("-l", "LOG_INFO"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the restarted daemon's own view: running, same token
        status = cluster.status("web")
        mine = next((n for n in status.nodes if n.domain == active), None)
        if mine is not None and mine.state == pb.SERVICE_RUNNING:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"n{active} did not adopt web: {status}")
    assert status.active_domain == active and mine.fencing_token == token
    assert "adopted: already running" in cluster.log(node) or \
        "lock kept across an HA daemon restart" in cluster.log(node)


def test_ha_killed_with_its_whole_cgroup_leaves_the_service_running_and_adopts_it(cluster):
    """As systemd stops or restarts skyge-ha (KillMode=control-group): every process of the
    daemon's cgroup is killed. The service runs in its own cgroup, so it keeps answering, with
    the same process, and the restarted daemon adopts it with the same token."""
    cgroups = Cgroups.find(Path("/"))
    if cgroups is None:
        pytest.skip("this host has no writable cgroup v2 hierarchy")
    active = cluster.where("web")[1]
    node = cluster.node(active)
    token = cluster.status("web").fencing_token
    server = read_pidfile(cluster.pidfile("web", node))
    unit = cgroups.mount / f"skyge-test-{cluster.lab.name}-ha"  # the daemon's own, as systemd's
    unit.mkdir()
    try:
        node.kill("skyge-ha")
        inside = Path("/sys/fs/cgroup") / unit.relative_to(cgroups.mount)  # the lab's mount
        in_unit = ["/bin/sh", "-c", ENTER, str(inside / "cgroup.procs"), sys.executable, "-m",
                   "skyge.services.ha", "-r", str(node.root), "-l", "LOG_INFO"]
        node.spawn(in_unit, name="skyge-ha")
        wait_serving(node, ("ha",))
        cluster.wait("web", lambda p: p[:2] == ("running", active), "adopted after the restart")
        assert ServiceCgroup(unit).pids(), "the daemon runs in the test's cgroup"
        assert server not in ServiceCgroup(unit).pids()
        ServiceCgroup(unit).kill()  # the daemon and everything else in its cgroup
        hs.wait_for("the HA daemon's cgroup to empty", lambda: not ServiceCgroup(unit).pids(), 10)
        assert fetch(cluster.lab.client, "192.168.1.100", 8080) == f"n{active} token {token}"
        assert read_pidfile(cluster.pidfile("web", node)) == server and psutil.pid_exists(server)
        adopted = cluster.log(node).count("adopted: already running")
        node.spawn(in_unit, name="skyge-ha")
        wait_serving(node, ("ha",))
        cluster.wait("web", lambda p: p[:2] == ("running", active), "adopted again")
        hs.wait_for("the restarted daemon adopts web", lambda: cluster.log(node).count(
            "adopted: already running") > adopted or "lock kept across an HA daemon restart"
            in cluster.log(node), 20)
        assert cluster.status("web").fencing_token == token
        assert read_pidfile(cluster.pidfile("web", node)) == server
    finally:
        node.kill("skyge-ha")
        ServiceCgroup(unit).kill()
        hs.wait_for("the test cgroup to empty", lambda: not ServiceCgroup(unit).pids(), 10)
        unit.rmdir()
        start_daemons(node, ("ha",), extra_args=("-l", "LOG_INFO"))
        cluster.wait("web", lambda p: p[:2] == ("running", active), "adopted by a plain daemon")


def test_in_maintenance_the_ha_daemon_restarts_without_moving_anything(cluster):
    """Pacemaker's maintenance mode, cluster-wide: waiting nodes leave the queue, commands are
    refused, and skyge-ha on the active node stopped cleanly (SIGTERM, as `systemctl stop`)
    leaves the service answering from the same process with the same token, its floating IP
    on that node only; the restarted daemon adopts it as it is. Maintenance off: the others
    queue again and the service is managed (switchable) again."""
    active = cluster.where("web")[1]
    node = cluster.node(active)
    others = [n.id for n in cluster.lab.nodes if n.id != active]
    token = cluster.status("web").fencing_token
    server = read_pidfile(cluster.pidfile("web", node))
    on = cluster.cli(node, "ha", "maintenance", "on", "--all")
    assert on.returncode == 0, on.stderr
    assert "1, 2, 3" in on.stdout
    cluster.wait("web", lambda p: p[:2] == ("running", active) and not p[2],
                 "the others left web's queue")
    assert list(ha_call(node, "Status", pb.StatusRequest()).maintenance_domains) == [1, 2, 3]
    refused = cluster.cli(node, "ha", "svc", "-d", str(active), "-t", "fifo", "-s", "0",
                          "-a", "switch")
    assert refused.returncode != 0 and "maintenance" in refused.stderr, refused

    node.kill("skyge-ha", signal.SIGTERM, wait=60)
    assert "maintenance: leaving" in cluster.log(node)
    assert fetch(cluster.lab.client, "192.168.1.100", 8080) == f"n{active} token {token}"
    assert psutil.pid_exists(server)
    holders = [n.id for n in cluster.lab.nodes
               if " 192.168.1.100/" in n.run(["ip", "-4", "-o", "addr"]).stdout]
    assert holders == [active]

    start_daemons(node, ("ha",), extra_args=("-l", "LOG_INFO"))
    hs.wait_for("the restarted daemon adopts web as it is",
                lambda: "adopted as it is" in cluster.log(node), 30)
    mine = next(n for n in cluster.status("web").nodes if n.domain == active)
    assert mine.state == pb.SERVICE_RUNNING and mine.unmanaged and mine.fencing_token == token
    assert read_pidfile(cluster.pidfile("web", node)) == server

    off = cluster.cli(node, "ha", "maintenance", "off", "--all")
    assert off.returncode == 0, off.stderr
    cluster.wait("web", lambda p: p[:2] == ("running", active) and sorted(p[2]) == others,
                 "the others wait for web again", timeout=30)
    status = cluster.status("web")
    assert not any(n.unmanaged for n in status.nodes) and status.fencing_token == token
    assert fetch(cluster.lab.client, "192.168.1.100", 8080) == f"n{active} token {token}"


def test_a_partitioned_node_that_reaches_the_gateway_is_not_isolated(cluster):
    lab, n3 = cluster.lab, cluster.node(3)
    lab.partition([[3], [1, 2]], gateway=0)  # n3 alone, with the gateway
    try:
        time.sleep(1.5)
        assert "a reference IP answers" in cluster.log(n3)
        assert not cluster.isolation_marker.exists()
    finally:
        lab.heal()
    wait_members(n3, 3)


def test_an_isolated_node_stops_its_services_and_runs_the_isolation_script(cluster):
    n2 = cluster.node(2)
    running = sorted(name for name in SERVICES if cluster.where(name)[:2] == ("running", 2))
    assert running, "n2 runs nothing"
    for nic in ("eth0", "eth1"):
        n2.cut(nic)
    try:
        for name in running:  # taken over elsewhere (the majority side)
            cluster.wait(name, lambda p: p[0] == "running" and p[1] in (1, 3),
                         f"{name} taken over from isolated n2", timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not cluster.isolation_marker.exists():
            time.sleep(0.05)
        assert cluster.isolation_marker.read_text().split() == ["2", *running]
        assert "this node is isolated" in cluster.log(n2)
        for name in running:  # the floating IPs left n2
            vip = SERVICES[name][2]
            assert f" {vip}/" not in n2.run(["ip", "-4", "-o", "addr"]).stdout
    finally:
        for nic in ("eth0", "eth1"):
            n2.restore(nic)
    wait_members(n2, 3)
    for name in running:
        cluster.wait(name, lambda p: 2 in p[2], f"n2 waiting for {name} again", timeout=15)
    assert "isolation over" in cluster.log(n2)


def test_a_failed_stop_with_force_reboot_reboots_the_node(cluster):
    n1 = cluster.node(1)
    assert cluster.where("badstop")[:2] == ("running", 1)
    script = cluster.lab.root / "demo" / "badstop-8083" / "service.sh"
    text = script.read_text()
    script.write_text(text.replace("  stop)\n", "  stop)\n    exit 1\n", 1))
    try:
        done = cluster.cli(n1, "ha", "svc", "-d", "1", "-t", "fifo", "-s", "3", "-a", "release")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not n1.crashed:
            time.sleep(0.05)
        assert n1.crashed, f"n1 did not reboot: {done.stdout} {done.stderr}"
    finally:
        script.write_text(text)
    cluster.wait("badstop", lambda p: p[0] == "running" and p[1] in (2, 3),
                 "taken over after the reboot", timeout=10)
