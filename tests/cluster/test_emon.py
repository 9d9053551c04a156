"""skyge-emon on the lab: samples published on the seed's emon buses and read from another node,
values read from another node over TCP, a `switch` watermark moving an HA service away, and a
`refuse_new` watermark keeping a node out of the HA lock queues.

One 2-node cluster (heartbeat + bus + emon on both) serves the tests that leave it intact.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any
from collections.abc import Callable, Iterator

import grpc
import pytest

from skyge.clients.lab import Lab
from skyge.clients.lab.configs import (write_daemon_config, write_ecs_config, write_probe_config,
                                       write_service_config)
from skyge.clients.lab.daemons import start_daemons, stop_daemons, wait_serving
from skyge.services.common.paths import TCP_PORTS, NodePaths
from skyge.v1 import bus_pb2, bus_pb2_grpc, emon_pb2, emon_pb2_grpc, ha_pb2, ha_pb2_grpc
from tests.cluster import heartbeat_support as hs
from tests.cluster.conftest import unique_lab_name

pytestmark = pytest.mark.lab

SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]
ARGS = ("-l", "LOG_DEBUG")
PLUGIN = "level"
START_TIMEOUT_S = 60.0  # generous: the machine may be shared with other test runs


def start(node: Any, daemons: list[str]) -> None:
    start_daemons(node, daemons, extra_args=ARGS, wait=False)
    wait_serving(node, daemons, timeout_s=START_TIMEOUT_S)


def configure_emon(node: Any, value: float = 33) -> None:
    """emon.cfg at 200 ms, and a plug-in probe `level` printing the number in ROOT/level.value."""
    write_daemon_config(node, "emon", {"interval_ms": 200})
    (node.root / "level.value").write_text(f"{value}\n")
    program = node.root / "level.sh"
    program.write_text(f"#!/bin/sh\ncat {node.root / 'level.value'}\n")
    program.chmod(0o755)
    write_probe_config(node, PLUGIN, {"exec": str(program), "unit": "level"})


def bus_stub(node: Any) -> Any:
    return bus_pb2_grpc.BusStub(grpc.insecure_channel(
        f"unix:{NodePaths.at(node.root).socket('bus')}"))


def emon_stub(node: Any) -> Any:
    return emon_pb2_grpc.EmonStub(grpc.insecure_channel(
        f"unix:{NodePaths.at(node.root).socket('emon')}"))


@pytest.fixture(scope="module")
def cluster(lab_support: None) -> Iterator[Lab]:
    lab = Lab.up(nodes=2, name=unique_lab_name())
    try:
        hs.start_cluster(lab, timeout=START_TIMEOUT_S)
        for node in lab.nodes:
            start(node, ["bus"])
            configure_emon(node)
            start(node, ["emon"])
        yield lab
    finally:
        for node in lab.nodes:
            stop_daemons(node, ["emon", "bus"])
        lab.down()


def read_bus(node: Any, domain: int, name: str, count: int, timeout: float = 60.0) -> list[Any]:
    """The next `count` messages of bus (domain, name), subscribed through `node`'s bus daemon."""
    deadline = time.monotonic() + timeout
    while True:
        stream = bus_stub(node).Subscribe(bus_pb2.SubscribeRequest(domain=domain, name=name),
                                          timeout=max(1.0, deadline - time.monotonic()))
        messages: list[Any] = []
        try:
            for delivery in stream:
                messages.extend(delivery.messages)
                if len(messages) >= count:
                    stream.cancel()
                    return messages[:count]
        except grpc.RpcError as error:
            # the plug-in's bus is created by emon at its first sample; the bus daemons may still
            # be meeting each other: retry until the deadline
            if error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_samples_are_published_on_the_emon_buses_and_read_from_another_node(cluster):
    n1, n2 = cluster.nodes
    for name, unit in (("cpu_load", "percent"), ("mem_load", "percent"), ("disk_usage", "kB"),
                       (PLUGIN, "level")):
        messages = read_bus(n2, n1.id, f"{name}.emon.skyge.com", 3)
        bodies = [json.loads(m.data) for m in messages]
        assert all(m.sender_domain == n1.id and m.content_type == "application/json"
                   for m in messages)
        assert [b["probe"] for b in bodies] == [name] * 3 and {b["unit"] for b in bodies} == {unit}
        assert [m.sequence for m in messages] == sorted(m.sequence for m in messages)
        times = [b["time_unix_ns"] for b in bodies]
        assert times == sorted(times) and len(set(times)) == 3  # three distinct samples, in order
        if name == PLUGIN:
            assert {b["value"] for b in bodies} == {33.0}
    stats = emon_stub(n1).GetStats(emon_pb2.GetEmonStatsRequest(), timeout=5)
    assert stats.bus_reachable and stats.published > 0


def test_a_changed_plugin_value_reaches_the_other_node(cluster):
    n1, n2 = cluster.nodes
    (n2.root / "level.value").write_text("77.5\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (message,) = read_bus(n1, n2.id, f"{PLUGIN}.emon.skyge.com", 1)
        if json.loads(message.data)["value"] == 77.5:
            break
    else:
        raise AssertionError("node 1 never saw node 2's new value 77.5")
    (n2.root / "level.value").write_text("33\n")


def test_values_read_from_another_node_over_tcp(cluster):
    n1, n2 = cluster.nodes
    result = n2.run([*SKYGE, "--socket", f"{n1.public_ip}:{TCP_PORTS['emon']}", "-o", "json",
                     "emon", "show"], timeout=30)
    assert result.returncode == 0, result.stderr
    samples = {s["probe"]: s for s in json.loads(result.stdout)["samples"]}
    assert sorted(samples) == ["cpu_load", "disk_usage", "level", "mem_load"]
    assert 0 <= samples["cpu_load"]["value"] <= 100 and samples["level"]["value"] == 33


# ---- ECS for HA: switch and refuse_new watermarks acting on the HA daemon

def _ha_pair(make_lab: Any, watermark: str) -> tuple[Lab, Any, Any, Callable[[], Any]]:
    """2 nodes running bus, lock, ha and emon; the service svc (fifo/1) running on 1 and waiting
    on 2; every node's `level` probe at 10 with the ECS line `wm_50 = "<watermark>";`.
    Returns (lab, n1, n2, status of svc)."""
    lab = make_lab(2)
    n1, n2 = lab.nodes
    hs.start_cluster(lab, timeout=START_TIMEOUT_S)
    service_script = lab.root / "svc.sh"
    service_script.write_text("#!/bin/sh\n"
                              "state=\"$SKYGE_ROOT/svc.running\"\n"
                              "case \"$1\" in\n"
                              "  start) touch \"$state\" ;;\n"
                              "  stop) rm -f \"$state\" ;;\n"
                              "  status) test -e \"$state\" ;;\n"
                              "esac\n")
    service_script.chmod(0o755)
    for node in lab.nodes:
        write_service_config(node, "fifo", 1, {"name": "svc", "script": str(service_script),
                                               "check_interval": 1})
        configure_emon(node, value=10)
        write_ecs_config(node, PLUGIN, {"watermarks": "wm_50", "wm_50": watermark})
        start(node, ["bus", "lock", "ha", "emon"])

    ha1 = ha_pb2_grpc.HaStub(grpc.insecure_channel(f"unix:{NodePaths.at(n1.root).socket('ha')}"))
    for node in (n1, n2):  # add on both, start on 1 first: 1 runs it, 2 waits (fifo)
        for action in (ha_pb2.ACTION_ADD, ha_pb2.ACTION_START):
            ha1.Command(ha_pb2.CommandRequest(domain=node.id, type=ha_pb2.TAKEOVER_FIFO, slot=1,
                                              action=action), timeout=60)

    def status() -> Any:
        return ha1.Status(ha_pb2.StatusRequest(), timeout=10).services[0]

    hs.wait_for("svc running on 1 with 2 waiting", lambda: (
        (s := status()).state == ha_pb2.SERVICE_RUNNING and s.active_domain == n1.id
        and list(s.waiting_domains) == [n2.id]), timeout=30)
    return lab, n1, n2, status


def test_switch_watermark_moves_a_running_service_to_the_next_node(make_lab):
    lab, n1, n2, status = _ha_pair(make_lab, "switch::above")
    (n1.root / "level.value").write_text("80\n")  # node 1 crosses wm_50: switch
    hs.wait_for("svc running on 2", lambda: (
        (s := status()).state == ha_pb2.SERVICE_RUNNING and s.active_domain == n2.id), timeout=60)
    wm = emon_stub(n1).ListWatermarks(emon_pb2.ListWatermarksRequest(probe=PLUGIN), timeout=5)
    assert wm.watermarks[0].fired_count == 1 and "svc" in wm.watermarks[0].last_result
    for node in lab.nodes:
        stop_daemons(node, ["emon", "ha", "lock", "bus"])


def test_refuse_new_watermark_keeps_a_node_out_of_the_queues_even_across_an_ha_restart(make_lab):
    lab, n1, n2, status = _ha_pair(make_lab, "refuse_new::above")
    (n2.root / "level.value").write_text("80\n")  # node 2 in trouble: it takes nothing new
    hs.wait_for("2 out of the queue", lambda: list(status().waiting_domains) == [], timeout=30)
    assert status().active_domain == n1.id  # what runs keeps running
    wm = emon_stub(n2).ListWatermarks(emon_pb2.ListWatermarksRequest(probe=PLUGIN), timeout=5)
    assert wm.refusing_new and "refuses new services" in wm.watermarks[0].last_result
    # a restarted HA daemon asks emon first: it does not queue meanwhile
    n2.kill("skyge-ha")
    start(n2, ["ha"])
    time.sleep(1.0)
    assert list(status().waiting_domains) == []
    (n2.root / "level.value").write_text("10\n")  # back to normal: re-armed, accepted again
    hs.wait_for("2 queued again", lambda: list(status().waiting_domains) == [n2.id], timeout=30)
    for node in lab.nodes:
        stop_daemons(node, ["emon", "ha", "lock", "bus"])
