"""skyge-ha on a 3-node lab with the real daemons (heartbeat, bus, lock, ha), real floating IPs and
real mounts (a loop-device image as the shared disk; each node has its own mount namespace).

One lab for the module (the tests run in order and build on each other, like an operator's
session): the seed's mysql-style example (slots/fifo/0, onstart, a floating IP and a store) plus
stack/2 and random/1 services, started on n1, then n2, then n3; a few bad service.cfg files on n1.
Then: bad files refused cleanly; onstart and the three takeover orders; the floating IP reachable
from the client namespace and the store mounted on the active node only; dynamic add / start /
stop / release / remove of another service while mysql keeps running; a failed status check
switches over and counts the failure; a commanded switch; a node crash hands each service to the
next waiter in its order; stopall. Every wait is bounded.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest

from skyge.clients.lab import Lab, LabNode
from skyge.clients.lab.daemons import stop_daemons
from skyge.clients.lab.configs import configure_heartbeat, service_dir
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, DEMO_VIP, fetch, install_demo_service,
                                    placement, service_status, start_node, wait_members,
                                    wait_placement)
from skyge.v1 import bus_pb2, bus_pb2_grpc

from .conftest import lab_unavailable, unique_lab_name

pytestmark = pytest.mark.lab

MYSQL_PORT, BIND_PORT, SMB_PORT, WEB_PORT = 8080, 8081, 8082, 8084
BAD_FILES = {  # slot folder (under n1's slots/) -> (file text, what the log must name)
    "stack/3": ('script = "/bin/true";\n', ["stack/3/service.cfg", "name"]),
    "random/5": ('name = "badfip";\nscript = "/bin/true";\n'
                 'fip = "eth0-1.2.3-255.255.255.0-1.2.3.255:";\n',
                 ["random/5/service.cfg:3", "fip", "IP '1.2.3' is not an IPv4 address"]),
    "fifo/7": ('name = "typo";\nscript = "/bin/true";\ncheck_intervall = 5;\n',
               ["fifo/7/service.cfg:3", "check_intervall"]),
    "fifo/8": ('name = "range";\nscript = "/bin/true";\ncheck_interval = 0;\n',
               ["fifo/8/service.cfg:3", "check_interval"]),
}


@pytest.fixture(scope="module")
def shared_disk(tmp_path_factory):
    """A 32 MiB ext4 image on a loop device; detached afterwards."""
    if lab_unavailable():
        pytest.skip(lab_unavailable())
    for tool in ("losetup", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    image = tmp_path_factory.mktemp("disk") / "shared.img"
    with open(image, "wb") as disk:
        disk.truncate(32 << 20)
    made = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True, timeout=30)
    if made.returncode != 0:
        pytest.skip(f"no loop device: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True, capture_output=True,
                       timeout=60)
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)


class Cluster:
    def __init__(self, lab: Lab, device: str) -> None:
        self.lab = lab
        self.device = device
        self.mountpoint = lab.root / "shared" / "mysql"

    def node(self, i: int) -> LabNode:
        return self.lab.node(i)

    def cli(self, node: LabNode, *args: str, json_out: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "skyge.clients.cli.main", "--root", str(node.root)]
        if json_out:
            argv += ["-o", "json"]
        return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)

    def vip_holders(self, ip: str = DEMO_VIP) -> list[int]:
        return [n.id for n in self.lab.nodes if not n.crashed and
                f" {ip}/" in n.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout]

    def mounted_on(self) -> list[int]:
        return [n.id for n in self.lab.nodes if not n.crashed and
                n.run(["mountpoint", "-q", str(self.mountpoint)]).returncode == 0]

    def log(self, node: LabNode, daemon: str = "ha") -> str:
        path = node.root / "var" / "log" / f"skyge-{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _service(lab: Lab, nodes, type: str, slot: int, name: str, port: int, **options: Any) -> None:
    install_demo_service(lab, nodes, type=type, slot=slot, name=name, port=port, **options)


@pytest.fixture(scope="module")
def cluster(shared_disk, request) -> Cluster:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab.up(nodes=3, name=unique_lab_name())
    request.addfinalizer(lab.down)
    c = Cluster(lab, shared_disk)
    configure_heartbeat(lab)
    store = f"-{shared_disk}-{c.mountpoint}-750-nobody-nogroup:"
    _service(lab, None, "fifo", 0, "mysql", MYSQL_PORT, store=store)
    _service(lab, None, "random", 1, "bind", BIND_PORT, vip=None)
    _service(lab, None, "stack", 2, "smb", SMB_PORT, vip=None)
    n1 = lab.node(1)
    for where, (text, _) in BAD_FILES.items():
        folder = n1.root / "etc" / "skyge" / "ha" / "slots" / where
        folder.mkdir(parents=True)
        (folder / "service.cfg").write_text(text)
    (n1.root / "etc" / "skyge" / "ha" / "slots" / "random" / "x").mkdir()
    for node in lab.nodes:  # the membership and the lock first, on every node
        start_node(node, CLUSTER_DAEMONS[:-1])
    wait_members(n1, 3)
    for node in lab.nodes:  # n1 first: it runs everything; then n2, then n3 queue
        start_node(node, ("ha",), extra_args=("-l", "LOG_INFO", "-t", "all"))
        expected = list(range(2, node.id + 1))
        for type, slot in (("fifo", 0), ("random", 1), ("stack", 2)):
            wait_placement(n1, lambda p, expected=expected: p[0] == "running" and p[1] == 1
                           and sorted(p[2]) == expected, type=type, slot=slot, timeout=30,
                           what=f"running on 1, waiting {expected}")
    return c


def test_bad_service_cfg_files_are_refused_cleanly(cluster):
    log = cluster.log(cluster.node(1))
    for where, (_, words) in BAD_FILES.items():
        line = next((text for text in log.splitlines()
                     if "service.cfg refused" in text and where in text), None)
        assert line is not None, f"no refusal logged for {where}:\n{log[-3000:]}"
        for word in words:
            assert word in line, (word, line)
    assert "random/x: a slot folder must be named 0 to 1023" in log
    assert "3 service(s) loaded" in log and "5 refused" in log

    query = cluster.cli(cluster.node(2), "ha", "query", "-d", "1")  # asked on n2, forwarded
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == [
        "Type : random : Slot : 1   Service : bind",
        "Type : fifo : Slot : 0   Service : mysql",
        "Type : stack : Slot : 2   Service : smb"]
    refused = cluster.cli(cluster.node(1), "ha", "svc", "-d", "1", "-s", "8", "-t", "fifo",
                          "-a", "add")
    assert refused.returncode == 2
    assert "fifo/8/service.cfg:3" in refused.stderr and "check_interval" in refused.stderr


def test_onstart_and_takeover_orders(cluster):
    n1 = cluster.node(1)
    assert placement(n1, "fifo", 0) == ("running", 1, [2, 3])    # first started first
    assert placement(n1, "stack", 2) == ("running", 1, [3, 2])   # last started first
    state, active, waiting = placement(n1, "random", 1)
    assert (state, active, sorted(waiting)) == ("running", 1, [2, 3])

    text = cluster.cli(cluster.node(3), "ha", "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    at = next(i for i, text in enumerate(lines)
              if text.startswith("Service -- fifo: 0 is running on 1"))
    assert lines[at + 1] == "          domain waiting for lock :[ 2 ] [ 3 ]"
    at = next(i for i, text in enumerate(lines)
              if text.startswith("Service -- stack: 2 is running on 1"))
    assert lines[at + 1] == "          domain waiting for lock :[ 3 ] [ 2 ]"
    data = json.loads(cluster.cli(n1, "ha", "status", json_out=True).stdout)
    mysql = next(s for s in data["services"] if s["name"] == "mysql")
    assert mysql["state"] == "SERVICE_RUNNING" and int(mysql["fencing_token"]) >= 1
    assert int(mysql["since_unix_ns"]) > 0 and [n["domain"] for n in mysql["nodes"]] == [1, 2, 3]

    # every state change went to the HA log bus (collected into n1's cluster log) and the state bus
    deadline = time.monotonic() + 10
    collected = n1.root / "var" / "log" / "skyge" / "cluster" / "domain-1.log"
    while time.monotonic() < deadline:
        text = collected.read_text(errors="replace") if collected.exists() else ""
        if "daemon=ha" in text and "mysql (fifo/0) on domain 1: starting -> running" in text:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no HA state change in the collected log {collected}")
    with grpc.insecure_channel(f"unix:{n1.root / 'run' / 'skyge' / 'bus.sock'}") as channel:
        bus = bus_pb2_grpc.BusStub(channel)
        info = next(b for b in bus.ListBuses(bus_pb2.ListBusesRequest(), timeout=5).buses
                    if b.name == "state.service.ha.skyge.com")
        stream = bus.Subscribe(bus_pb2.SubscribeRequest(
            name=info.name, from_sequence=max(1, info.oldest_sequence)), timeout=5)
        records = []
        try:
            for delivery in stream:
                records += [json.loads(m.data) for m in delivery.messages]
                if any(r["state"] == "running" and r["name"] == "mysql" for r in records):
                    break
        except grpc.RpcError:
            pass
    running = [r for r in records if r["name"] == "mysql" and r["state"] == "running"]
    assert running and running[0]["domain"] == 1 and running[0]["previous"] == "starting"


def test_floating_ip_and_store_only_on_the_active_node(cluster):
    status = service_status(cluster.node(2), "fifo", 0)
    answer = fetch(cluster.lab.client, DEMO_VIP, MYSQL_PORT)
    assert answer == f"n1 token {status.fencing_token}"  # the fencing token reached the script
    assert cluster.vip_holders() == [1]
    addresses = cluster.node(1).run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    line = next(text for text in addresses.splitlines() if DEMO_VIP in text)
    assert "eth0:1024" in line and "brd 192.168.1.255" in line
    assert cluster.mounted_on() == [1]
    owner = cluster.node(1).run(["stat", "-c", "%a %U %G", str(cluster.mountpoint)]).stdout.split()
    assert owner == ["750", "nobody", "nogroup"]


def test_dynamic_add_start_stop_release_remove_while_mysql_runs(cluster):
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)
    token = service_status(n1, "fifo", 0).fencing_token
    _service(cluster.lab, [n2, n3], "stack", 4, "web", WEB_PORT, vip=None, onstart=False)

    def svc(domain: int, action: str, on: LabNode = n1) -> subprocess.CompletedProcess[str]:
        return cluster.cli(on, "ha", "svc", "-d", str(domain), "-s", "4", "-t", "stack", "-a",
                           action)

    for domain in (3, 2):
        done = svc(domain, "add")  # from n1, for another node
        assert done.returncode == 0, done.stderr
    assert "Service : web" in cluster.cli(n1, "ha", "query", "-d", "3").stdout
    assert placement(n1, "stack", 4)[:2] == ("stopped", 0)
    assert svc(3, "start").returncode == 0
    assert svc(2, "start").returncode == 0
    assert placement(n1, "stack", 4) == ("running", 3, [2])

    stop = svc(3, "stop")  # stopped on 3, lock kept: nobody takes over
    assert stop.returncode == 0 and "Service -- stack: 4 is stopped on 3" in stop.stdout
    time.sleep(1.5)
    assert placement(n1, "stack", 4) == ("stopped", 3, [2])
    held_token = service_status(n1, "stack", 4).fencing_token
    assert svc(3, "start").returncode == 0
    assert placement(n1, "stack", 4) == ("running", 3, [2])
    assert service_status(n1, "stack", 4).fencing_token == held_token

    assert svc(3, "release").returncode == 0  # 2 takes over
    wait_placement(n1, lambda p: p == ("running", 2, []), "stack", 4, what="running on 2")
    refused = svc(2, "remove")
    assert refused.returncode == 1 and "stop or release it first" in refused.stderr
    assert svc(3, "remove").returncode == 0
    assert svc(2, "stop").returncode == 0
    assert svc(2, "remove").returncode == 0
    assert service_status(n1, "stack", 4) is None  # gone from every node
    for node in (n2, n3):  # then its files go too (the seed's procedure)
        shutil.rmtree(service_dir(node, "stack", 4))
    assert "Service : web" not in cluster.cli(n1, "ha", "query", "-d", "2").stdout

    # mysql never moved
    assert placement(n1, "fifo", 0) == ("running", 1, [2, 3])
    assert service_status(n1, "fifo", 0).fencing_token == token
    assert fetch(cluster.lab.client, DEMO_VIP, MYSQL_PORT) == f"n1 token {token}"


def test_failed_check_switches_over_and_counts_then_switch_command(cluster):
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)
    pidfile = cluster.lab.root / "demo" / f"mysql-{MYSQL_PORT}" / "server-1.pid"
    n1.run(["sh", "-c", f"kill -9 $(cat {pidfile})"], check=True)  # the service dies on n1
    wait_placement(n2, lambda p: p == ("running", 2, [3, 1]), "fifo", 0, timeout=20,
                   what="taken over by 2, 1 queued again at the back")
    status = service_status(n2, "fifo", 0)
    assert status.fail_count == 1
    assert [(s.domain, s.fail_count) for s in status.nodes] == [(1, 1), (2, 0), (3, 0)]
    assert fetch(cluster.lab.client, DEMO_VIP, MYSQL_PORT).startswith("n2 token ")
    assert cluster.vip_holders() == [2] and cluster.mounted_on() == [2]
    text = cluster.cli(n3, "ha", "status").stdout
    assert "Service -- fifo: 0 is running on 2" in text and "failures 1" in text

    switched = cluster.cli(n1, "ha", "svc", "-d", "0", "-s", "0", "-t", "fifo", "-a", "switch")
    assert switched.returncode == 0, switched.stderr
    wait_placement(n1, lambda p: p == ("running", 3, [1, 2]), "fifo", 0, what="switched to 3")
    assert fetch(cluster.lab.client, DEMO_VIP, MYSQL_PORT).startswith("n3 token ")
    assert cluster.vip_holders() == [3] and cluster.mounted_on() == [3]


def test_node_crash_hands_each_service_to_its_next_waiter(cluster):
    n2, n3 = cluster.node(2), cluster.node(3)

    def svc(slot: int, type: str, domain: int, action: str) -> None:
        done = cluster.cli(n2, "ha", "svc", "-d", str(domain), "-s", str(slot), "-t", type,
                           "-a", action)
        assert done.returncode == 0, done.stderr

    # stack: released on 1, the last waiter (3) takes it; 1 starts again: it is now the last
    assert placement(n2, "stack", 2) == ("running", 1, [3, 2])
    svc(2, "stack", 1, "release")
    wait_placement(n2, lambda p: p == ("running", 3, [2]), "stack", 2, what="stack -> 3")
    svc(2, "stack", 1, "start")
    assert placement(n2, "stack", 2) == ("running", 3, [1, 2])
    assert placement(n2, "fifo", 0) == ("running", 3, [1, 2])

    n3.crash()  # power off: fifo goes to its first waiter (1), stack to its last one (1)
    wait_placement(n2, lambda p: p == ("running", 1, [2]), "fifo", 0, what="fifo -> 1")
    wait_placement(n2, lambda p: p == ("running", 1, [2]), "stack", 2, what="stack -> 1")
    state, active, waiting = placement(n2, "random", 1)
    assert state == "running" and active in (1, 2) and waiting == [3 - active]
    assert fetch(cluster.lab.client, DEMO_VIP, MYSQL_PORT).startswith("n1 token ")
    assert cluster.vip_holders() == [1] and cluster.mounted_on() == [1]


def test_stopall_stops_everything_everywhere(cluster):
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)
    n3.boot()  # back with its daemons: it queues (at the back) for every service
    start_node(n3, CLUSTER_DAEMONS)
    for type, slot in (("fifo", 0), ("random", 1), ("stack", 2)):
        wait_placement(n2, lambda p: p[0] == "running" and 3 in p[2], type, slot, timeout=30,
                       what="n3 queued again")
    done = cluster.cli(n2, "ha", "stopall", json_out=True)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert {s["name"]: (s["state"], s.get("waiting_domains", [])) for s in services} == {
        "bind": ("SERVICE_STOPPED", []), "mysql": ("SERVICE_STOPPED", []),
        "smb": ("SERVICE_STOPPED", [])}
    assert cluster.vip_holders() == [] and cluster.mounted_on() == []
    assert fetch(cluster.lab.client, DEMO_VIP, MYSQL_PORT, deadline_s=0.5) is None
    for node in (n1, n2, n3):
        stop_daemons(node, ("ha", "lock", "bus", "heartbeat"))
