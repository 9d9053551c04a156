"""Clients in other languages against a running lab cluster, over mutual TLS from the client
namespace: the Node.js client (clients/node, @grpc/grpc-js) and the C++ example client
(clients/cpp, Debian's libgrpc++) each list the members, watch the membership, take and give
back a lock, read HA status and switch a service."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from skyge.clients.lab import Lab, public_ip
from skyge.clients.lab.configs import configure_heartbeat
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, install_demo_service, placement, start_node,
                                    wait_members, wait_placement)
from skyge.services.common import pki
from skyge.services.common.tls import Identity

from .conftest import unique_lab_name

pytestmark = pytest.mark.lab

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
CPP_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "cpp"


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


@pytest.fixture(scope="module")
def cpp_tour(tmp_path_factory) -> Path:
    """clients/cpp built with CMake against Debian's libgrpc++-dev (about 30 s on 2 cores)."""
    build = tmp_path_factory.mktemp("cpp-build")
    for step in (["cmake", "-S", str(CPP_CLIENT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (step, done.stdout[-3000:], done.stderr[-3000:])
    return build / "skyge_tour"


def test_the_cpp_client_drives_the_cluster_over_mutual_tls(cluster, cpp_tour):
    state, active, waiting = placement(cluster.node(1))
    assert state == "running" and waiting
    cert = admin_certificate(cluster, "cppclient")
    done = cluster.client.run([str(cpp_tour), public_ip(1), str(cert), "700", "2", str(active),
                               "0"], timeout=120)
    assert done.returncode == 0, done.stderr
    tour = dict(line.split(" ", 1) if " " in line else (line, "") for line in
                done.stdout.splitlines())
    assert tour["members"].split() == ["1", "2", "3"] and tour["first_event"] == "snapshot"
    assert int(tour["fencing_token"]) >= 1 and tour["released"] == "yes"
    assert (int(tour["active"]), [int(d) for d in tour["waiting"].split()]) == (active, waiting)
    assert tour["switched"] == "yes"
    wait_placement(cluster.node(1), lambda p: p[:2] == ("running", waiting[0]),
                   what=f"switched to n{waiting[0]}", timeout=30)
