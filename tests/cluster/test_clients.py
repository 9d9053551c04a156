"""Clients in other languages against a running lab cluster, over mutual TLS from the client
namespace: the Node.js client (clients/node, @grpc/grpc-js) lists the members, watches the
membership, takes and gives back a lock, reads HA status and switches a service."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skyge.clients.lab import Lab, public_ip
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, configure_heartbeat, install_demo_service,
                                    start_node, wait_members, wait_placement)
from skyge.services.common import pki
from skyge.services.common.tls import Identity

from .conftest import unique_lab_name

pytestmark = pytest.mark.lab

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.fixture(scope="module")
def cluster(lab_support: None):
    lab = Lab.up(nodes=3, name=unique_lab_name())
    try:
        configure_heartbeat(lab)
        install_demo_service(lab, lab.nodes, slot=0, name="web")
        for node in lab.nodes:
            start_node(node, CLUSTER_DAEMONS[:-1])
        wait_members(lab.node(1), 3)
        for node in lab.nodes:  # n1 first: it runs the service, n2 and n3 wait in that order
            start_node(node, ("ha",))
            wait_placement(lab.node(1), lambda p, n=node.id: p[:2] == ("running", 1)
                           and p[2] == list(range(2, n + 1)), what=f"n{node.id} queued",
                           timeout=30)
        yield lab
    finally:
        lab.down()


def admin_certificate(lab: Lab, name: str) -> Path:
    ca = pki.Authority.load(lab.root / "ca")
    pki.install(lab.root / name, ca.cert_pem, ca.issue(Identity.admin(name)), cert_name=name)
    return lab.root / name / name


def test_the_nodejs_client_drives_the_cluster_over_mutual_tls(cluster):
    node = shutil.which("node")
    assert node, "deploy/install.sh installs Node.js"
    assert (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "deploy/install.sh installs the client's packages (npm ci in clients/node)"
    cert = admin_certificate(cluster, "nodeclient")
    done = cluster.client.run([node, str(NODE_CLIENT / "examples" / "tour.js"), public_ip(1),
                               str(cert), "700", "1", "1", "0"], timeout=120)
    assert done.returncode == 0, done.stderr
    tour = json.loads(done.stdout)
    assert tour["members"] == [1, 2, 3] and tour["first_event"] == "snapshot"
    assert int(tour["fencing_token"]) >= 1 and tour["released"]
    assert tour["before"] == {"active": 1, "waiting": [2, 3]}
    wait_placement(cluster.node(1), lambda p: p[:2] == ("running", 2), what="switched to n2",
                   timeout=30)
