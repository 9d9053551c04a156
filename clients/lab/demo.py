"""The README's main job: a virtual cluster on this machine, shown working step by step.

It builds a 3-node lab, shows each node reaching the others over both networks and the gateway's
reference IPs, starts the five skyge daemons on every node, cuts one cable to show that only that
path is lost, and takes everything down again. Later issues extend it to the HA failover story.
"""
from __future__ import annotations

import time
from typing import Callable

from skyge.clients.lab import GATEWAY_IPS, Lab, LabNode
from skyge.clients.lab.daemons import start_daemons, stop_daemons
from skyge.services.common.paths import DAEMONS

DEMO_LAB = "demo"
PING_TIMEOUT_S = 1


def _reaches(node: LabNode, address: str) -> bool:
    return node.run(["ping", "-c", "1", "-W", str(PING_TIMEOUT_S), address], timeout=5).returncode == 0


def _matrix(lab: Lab, nic: str) -> dict[str, dict[str, bool]]:
    address_of = {"eth0": lambda n: n.public_ip, "eth1": lambda n: n.private_ip}[nic]
    return {src.key: {dst.key: _reaches(src, address_of(dst)) for dst in lab.nodes if dst is not src}
            for src in lab.nodes}


def run_demo(say: Callable[[str], None], nodes: int = 3) -> dict:
    """Run the demo, narrating through `say`; returns what was observed (for --output json)."""
    report: dict = {"nodes": nodes}
    started = time.monotonic()
    with Lab.up(nodes=nodes, name=DEMO_LAB) as lab:
        say(f"lab '{DEMO_LAB}' up: {nodes} nodes, gateway {' '.join(GATEWAY_IPS)}, client "
            f"{lab.client.address()}")
        for node in lab.nodes:
            say(f"  {node.key}: eth0 {node.public_ip}  eth1 {node.private_ip}  root {node.root}")
        for nic, network in (("eth0", "public"), ("eth1", "private")):
            matrix = _matrix(lab, nic)
            report[f"{network}_reachability"] = matrix
            ok = all(all(row.values()) for row in matrix.values())
            say(f"{network} network ({nic}): every node reaches every other: {'yes' if ok else 'NO'}")
        gateway = {n.key: any(_reaches(n, ip) for ip in GATEWAY_IPS) for n in lab.nodes}
        report["reference_ip_reachable"] = gateway
        say("reference IPs reachable from " + ", ".join(k for k, v in gateway.items() if v))

        say(f"starting {', '.join('skyge-' + d for d in DAEMONS)} on every node ...")
        for node in lab.nodes:
            start_daemons(node, extra_args=("-l", "LOG_INFO"))
        say("all daemons serving (grpc health) on " + ", ".join(n.key for n in lab.nodes))
        report["daemons_serving"] = True

        first, second = lab.node(1), lab.node(2)
        first.cut("eth1")
        cut = {"eth0": _reaches(second, first.public_ip), "eth1": _reaches(second, first.private_ip)}
        report["after_cutting_n1_eth1"] = cut
        say(f"cut n1's eth1 cable: n2 reaches n1 over eth0: {'yes' if cut['eth0'] else 'no'}, "
            f"over eth1: {'yes' if cut['eth1'] else 'no'}")
        first.restore("eth1")
        for node in lab.nodes:
            stop_daemons(node)
        say("daemons stopped; taking the lab down")
    report["seconds"] = round(time.monotonic() - started, 2)
    say(f"done in {report['seconds']} s: no namespace, link or process left behind")
    return report
