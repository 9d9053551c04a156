"""skyge-bus on the lab: real heartbeat and bus daemons on three nodes.

One 3-node cluster serves the tests that leave it intact (each uses its own bus names); the
crash tests build their own. Clients are the `skyge` CLI run inside the nodes, or gRPC stubs on a
node's Unix socket (reachable from the host: the node root is a host folder).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any
from collections.abc import Iterator

import grpc
import psutil
import pytest

from skyge.clients.lab import Lab
from skyge.clients.lab.daemons import start_daemons, stop_daemons
from skyge.services.common.paths import NodePaths
from skyge.v1 import bus_pb2 as pb, bus_pb2_grpc
from tests.cluster import heartbeat_support as hs
from tests.cluster.conftest import unique_lab_name

pytestmark = pytest.mark.lab

SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]
BUS_ARGS = ("-l", "LOG_INFO", "-t", "all")


# ---------------------------------------------------------------- helpers

def start_cluster(lab: Lab) -> None:
    hs.start_cluster(lab)
    for node in lab.nodes:
        start_daemons(node, ["bus"], extra_args=BUS_ARGS)
    wait_routes(lab)


def channel(node: Any) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{NodePaths.at(node.root).socket('bus')}")


def stub(node: Any) -> Any:
    return bus_pb2_grpc.BusStub(channel(node))


def wait_routes(lab: Lab, timeout: float = 15.0) -> None:
    """Every node's bus daemon reaches every member's (its membership is known)."""
    domains = [n.id for n in lab.nodes if not n.crashed]

    def ready() -> bool:
        for node in lab.nodes:
            if node.crashed:
                continue
            with channel(node) as ch:
                for domain in domains:
                    bus_pb2_grpc.BusStub(ch).ListBuses(pb.ListBusesRequest(domain=domain),
                                                       timeout=2)
        return True

    hs.wait_for("bus daemons to reach each other", ready, timeout)


def cli(node: Any, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return node.run([*SKYGE, *args], timeout=timeout)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


class Spy:
    """`skyge bus spy` running in a node; stdout lines collected by a thread."""

    def __init__(self, node: Any, *args: str) -> None:
        self.proc = subprocess.Popen(node.command([*SKYGE, *args]), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=node.environment(),
                                     start_new_session=True)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read_err, daemon=True).start()
        threading.Thread(target=self._read_out, daemon=True).start()
        if not self._ready.wait(15):
            self.stop()
            raise AssertionError(f"spy not listening: {''.join(self.err)}")

    def _read_err(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.err.append(line)
            if line.startswith("listening to bus"):
                self._ready.set()
        self._ready.set()

    def _read_out(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"spy still running after {timeout} s: {self.lines} "
                                 f"{self.err}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture(scope="module")
def cluster(lab_support: None) -> Iterator[Lab]:
    lab = Lab.up(nodes=3, name=unique_lab_name())
    try:
        start_cluster(lab)
        yield lab
    finally:
        lab.down()


# ---------------------------------------------------------------- the seed's chapter 4

def test_seed_walkthrough_from_several_nodes(cluster):
    n1, n2, n3 = cluster.nodes
    created = cli(n3, "bus", "create", "-d", "1", "-n", "Mytestmb")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "create service Mytestmb 0 1 successfully.\n"

    listed = cli(n2, "bus", "list", "-d", "1")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"There are {len(lines) - 1} services"
    assert f"Service{len(lines) - 2}: Mytestmb 0 64" == lines[-1]
    assert any(line.endswith(": log.buluos.skyge.com 0 3") for line in lines)  # standard buses

    slots = n1.root / "etc" / "skyge" / "bus" / "slots"
    assert os.readlink(slots / "64") == "../buses/Mytestmb"
    cfg = (slots / "64" / "service.cfg").read_text().splitlines()
    assert cfg[:2] == ['type = "collector";', "slot = 64;"] and cfg[2].startswith("magic = ")

    spy = Spy(n2, "bus", "spy", "-d", "1", "-n", "Mytestmb", "--count", "1")
    json_spy = Spy(n1, "-o", "json", "bus", "spy", "-d", "1", "-n", "Mytestmb", "--count", "1")
    sent = cli(n3, "bus", "send", "-d", "1", "-n", "Mytestmb", "-m", "Hello")
    assert (sent.returncode, sent.stdout) == (0, "send successfully\n")
    assert spy.wait() == 0 and spy.lines == ["Hello"]
    assert json_spy.wait() == 0
    message = json.loads(json_spy.lines[0])
    assert (message["data"], message["sender_domain"], message["sequence"]) == ("Hello", 3, 1)
    assert message["time_unix_ns"] > 0 and message["time"].endswith("Z")

    deleted = cli(n2, "bus", "delete", "-d", "1", "-n", "Mytestmb")
    assert (deleted.returncode, deleted.stdout) == (0, "Delete service Mytestmb successfully.\n")
    assert not (slots / "64").is_symlink()
    init = cli(n1, "bus", "init", "-d", "2", "-s", "lock")
    assert init.stdout == "log.buluos.skyge.com has been existed\n"


def test_bad_input_is_refused_with_clear_errors(cluster):
    n1, n2, _ = cluster.nodes
    name = unique("small")
    assert cli(n1, "bus", "create", "-d", "2", "-n", name, "--max-payload", "10").returncode == 0
    cases = [
        (["bus", "create", "-d", "2", "-n", "bad name"], 2,
         "name: must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        (["bus", "create", "-d", "2", "-n", "x" * 65], 2, "(65 characters)"),
        (["bus", "create", "-d", "2", "-n", name], 1, f"domain 2 already has a bus '{name}'"),
        (["bus", "send", "-d", "2", "-n", name, "-m", "x" * 11], 2,
         f"messages[0].data: 11 bytes is over the limit of bus '{name}', 0-10 bytes"),
        (["bus", "send", "-d", "9", "-n", name, "-m", "x"], 1,
         "domain 9 is not in the membership (members: 1, 2, 3) (NOT_FOUND)"),
        (["bus", "list", "-d", "70"], 2, "-d/--domain: must be from 1 to 64, got 70"),
        (["bus", "spy", "-d", "2", "-n", "nosuch"], 1, "no bus 'nosuch' on domain 2"),
        (["bus", "spy", "-d", "2", "-n", name, "--from", "99"], 2,
         "from_sequence: must be from 1 to 1"),
        (["bus", "delete", "-d", "3", "-n", "nosuch"], 1, "no bus 'nosuch' on domain 3"),
    ]
    for args, status, fragment in cases:
        result = cli(n1, *args)
        assert result.returncode == status, (args, result.stdout, result.stderr)
        assert fragment in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    with channel(n2) as ch:  # a request over gRPC's 4 MiB limit does not hurt the daemon
        with pytest.raises(grpc.RpcError) as error:
            bus_pb2_grpc.BusStub(ch).Publish(pb.PublishRequest(
                domain=2, name=name, messages=[pb.Payload(data=b"x" * (5 << 20))]), timeout=10)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert bus_pb2_grpc.BusStub(ch).ListBuses(pb.ListBusesRequest(), timeout=5).buses


# ---------------------------------------------------------------- order, resume, gaps

def test_one_total_order_under_concurrent_publishers(cluster):
    name = unique("order")
    stub(cluster.nodes[0]).CreateBus(pb.CreateBusRequest(domain=2, name=name, retain_messages=8192),
                                     timeout=5)
    per_publisher, batch = 600, 20
    subscribers = []
    for node in (cluster.nodes[0], cluster.nodes[2]):
        call = stub(node).Subscribe(pb.SubscribeRequest(domain=2, name=name, max_batch=1024))
        next(call)  # in place
        subscribers.append(call)

    def publish(node: Any) -> None:
        s = stub(node)
        for start in range(0, per_publisher, batch):
            s.Publish(pb.PublishRequest(domain=2, name=name, messages=[
                pb.Payload(data=f"{node.id}:{i}".encode()) for i in range(start, start + batch)]),
                timeout=10)

    threads = [threading.Thread(target=publish, args=(n,)) for n in cluster.nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    total = per_publisher * len(cluster.nodes)
    orders = []
    for call in subscribers:
        seen: list[tuple[int, str, int]] = []
        for delivery in call:
            assert delivery.missed == 0
            seen += [(m.sequence, m.data.decode(), m.sender_domain) for m in delivery.messages]
            if len(seen) >= total:
                break
        call.cancel()
        assert [s for s, _, _ in seen] == list(range(1, total + 1))  # consecutive, no gaps
        for node in cluster.nodes:  # each publisher's messages in its own order
            mine = [int(d.split(":")[1]) for _, d, sender in seen if sender == node.id]
            assert mine == list(range(per_publisher))
        orders.append(seen)
    assert orders[0] == orders[1]  # every subscriber sees the same total order


def test_resume_from_a_sequence(cluster):
    n1, _, n3 = cluster.nodes
    name = unique("resume")
    s1 = stub(n1)
    s1.CreateBus(pb.CreateBusRequest(domain=2, name=name, retain_messages=5), timeout=5)
    for i in range(1, 9):
        s1.Publish(pb.PublishRequest(domain=2, name=name, messages=[pb.Payload(data=b"%d" % i)]),
                   timeout=5)
    spy = cli(n3, "-o", "json", "bus", "spy", "-d", "2", "-n", name, "--from", "6", "--count", "3")
    assert spy.returncode == 0, spy.stderr
    assert [json.loads(line)["sequence"] for line in spy.stdout.splitlines()] == [6, 7, 8]
    too_old = cli(n3, "bus", "spy", "-d", "2", "-n", name, "--from", "2")
    assert too_old.returncode == 2
    assert "from_sequence: must be from 4 to 9" in too_old.stderr
    assert "no longer retained" in too_old.stderr


def test_slow_subscriber_is_told_its_gap_and_owner_memory_stays_flat(cluster):
    n1, n2, n3 = cluster.nodes
    name = unique("slow")
    stub(n1).CreateBus(pb.CreateBusRequest(domain=2, name=name, retain_messages=64), timeout=5)
    slow = stub(n3).Subscribe(pb.SubscribeRequest(domain=2, name=name, max_batch=64))
    next(slow)  # subscribed, then reads nothing while the bus runs far ahead
    owner = psutil.Process(n2.find("skyge-bus")[0])
    before = owner.memory_info().rss
    total, batch = 60_000, 500
    publisher = stub(n1).PublishStream(
        pb.PublishRequest(domain=2, name=name, messages=[pb.Payload(data=b"x" * 1000)] * batch)
        for _ in range(total // batch))
    assert sum(ack.count for ack in publisher) == total  # 60 MB published, never blocked
    growth = owner.memory_info().rss - before
    assert growth < 25 << 20, f"owner RSS grew by {growth >> 20} MiB"
    received = missed = 0
    last = 0
    for delivery in slow:
        missed += delivery.missed
        for message in delivery.messages:
            expected = last + 1 + (delivery.missed if message is delivery.messages[0] else 0)
            assert message.sequence == expected
            last = message.sequence
        received += len(delivery.messages)
        if received + missed >= total:
            break
    slow.cancel()
    assert missed > 0 and received + missed == total and last == total


# ---------------------------------------------------------------- persistence, log collection

def test_buses_and_numbers_survive_a_daemon_restart(cluster):
    n1, n2, _ = cluster.nodes
    name = unique("keep")
    s1 = stub(n1)
    s1.CreateBus(pb.CreateBusRequest(domain=2, name=name, slot=500), timeout=5)
    first = s1.Publish(pb.PublishRequest(domain=2, name=name, messages=[pb.Payload()] * 3),
                       timeout=5)
    stop_daemons(n2, ["bus"])
    start_daemons(n2, ["bus"], extra_args=BUS_ARGS)
    wait_routes(cluster)
    info = {b.name: b for b in s1.ListBuses(pb.ListBusesRequest(domain=2), timeout=5).buses}[name]
    assert info.slot == 500 and info.last_sequence >= first.first_sequence + 2
    again = s1.Publish(pb.PublishRequest(domain=2, name=name, messages=[pb.Payload()]), timeout=5)
    assert again.first_sequence > first.first_sequence + 2  # never reused


def test_log_records_are_collected_per_node(cluster):
    n1, n2, _ = cluster.nodes
    log = n1.root / "var" / "log" / "skyge" / "cluster" / "domain-2.log"
    marker = unique("marker")
    # a record as a daemon with `-t bus` publishes it on its log bus of node 2
    record = json.dumps({"time_unix_ns": time.time_ns(), "daemon": "ha", "level": "ERR",
                         "pid": 42, "message": f"line one {marker}\nline two"})
    stub(n2).Publish(pb.PublishRequest(name="log.ha.skyge.com", messages=[
        pb.Payload(data=record.encode(), content_type="application/json")]), timeout=5)

    def collected() -> list[str]:
        text = log.read_text() if log.exists() else ""
        return [line for line in text.splitlines() if marker in line]

    line, = hs.wait_for("the record in n1's domain-2.log", collected, timeout=10)
    assert " domain=2 daemon=ha level=ERR pid=42 line one " in line
    assert line.endswith(f"{marker}\\nline two")  # one line per record
    # the daemons' own records (started with -t all) are collected too
    own = hs.wait_for("skyge-bus records of domain 2", lambda: "daemon=bus level=NOTICE"
                      in (log.read_text() if log.exists() else ""), timeout=10)
    assert own


# ---------------------------------------------------------------- crashes

def test_crashes_end_streams_and_clean_up(make_lab):
    lab = make_lab(3)
    start_cluster(lab)
    n1, n2, n3 = lab.nodes
    name = unique("crash")
    stub(n1).CreateBus(pb.CreateBusRequest(domain=2, name=name), timeout=5)

    def subscribers() -> int:
        return {b.name: b for b in stub(n1).ListBuses(pb.ListBusesRequest(domain=2),
                                                      timeout=5).buses}[name].subscribers

    # a subscriber process killed: the owner drops its subscription
    spy = Spy(n3, "bus", "spy", "-d", "2", "-n", name)
    hs.wait_for("one subscriber", lambda: subscribers() == 1, timeout=10)
    spy.stop()
    hs.wait_for("the killed spy's subscription to go", lambda: subscribers() == 0, timeout=10)

    # a subscriber's node crashes: the owner drops its subscription when it leaves
    spy = Spy(n3, "bus", "spy", "-d", "2", "-n", name)
    hs.wait_for("one subscriber", lambda: subscribers() == 1, timeout=10)
    n3.crash()
    hs.wait_for("the crashed node's subscription to go", lambda: subscribers() == 0, timeout=10)
    spy.stop()

    # the owner crashes: streams relayed through other nodes end with UNAVAILABLE
    spy = Spy(n1, "bus", "spy", "-d", "2", "-n", name)
    t0 = time.monotonic()
    n2.crash()
    status = spy.wait(timeout=15)
    elapsed = time.monotonic() - t0
    assert status == 1
    assert spy.err[-1].startswith("skyge: Subscribe: owner domain 2 left the membership")
    assert elapsed < 5, f"stream ended {elapsed:.1f} s after the crash"
    refused = cli(n1, "bus", "send", "-d", "2", "-n", name, "-m", "x")
    assert refused.returncode == 1 and "domain 2 is not in the membership" in refused.stderr
