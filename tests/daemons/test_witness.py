"""skyge-witness as a real process on loopback: votes over gRPC, its startup hold, status, and
fields out of range refused naming the field."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from skyge.clients.lab.configs import write_daemon_config
from skyge.services.common.paths import NodePaths
from skyge.v1 import common_pb2
from skyge.v1 import witness_pb2 as pb
from skyge.v1 import witness_pb2_grpc
from skyge.services.common.tls import Credentials, Identity, TlsFiles
from tests.daemons.test_runner import issue, wait_serving

START_TIMEOUT_S = 60
VOTE_MS, MAX_HOLDOVER_MS = 300, 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def witness(tmp_path: Path):
    paths = NodePaths.at(tmp_path)
    write_daemon_config(tmp_path, "witness", {"vote_ms": VOTE_MS,
                                              "max_holdover_ms": MAX_HOLDOVER_MS})
    ca = tmp_path / "ca"
    issue(ca, Identity("witness"), paths.etc / "tls")
    client = Credentials.load(TlsFiles.of_prefix(issue(ca, Identity.node(1), tmp_path / "n1")))
    address = f"127.0.0.1:{free_port()}"
    with open(tmp_path / "witness.out", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skyge.services.witness", "-r",
                                 str(tmp_path), "--listen", address], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_serving(paths.socket("witness"), timeout=START_TIMEOUT_S,
                     service="skyge.v1.Witness")
        with grpc.secure_channel(address, client.channel(), client.options()) as channel:
            yield witness_pb2_grpc.WitnessStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def vote(stub, domain: int, netid: int = 7, holdover_ms: int = 100) -> pb.VoteResponse:
    return stub.Vote(pb.VoteRequest(node=common_pb2.NodeId(netid=netid, domain=domain),
                                    holdover_ms=holdover_ms), timeout=10)


def test_votes_after_the_startup_hold_go_to_one_node_at_a_time(witness):
    first = vote(witness, 1)
    if not first.granted:  # still in its startup hold: it says how long
        assert first.holder_domain == 0 and 0 < first.retry_after_ms <= 1.01 * (
            VOTE_MS + MAX_HOLDOVER_MS) + 1, first
        time.sleep(first.retry_after_ms / 1000)
        first = vote(witness, 1)
    assert first.granted and first.valid_ms == VOTE_MS
    other = vote(witness, 2)
    assert not other.granted and other.holder_domain == 1 and "node 1 holds" in other.detail
    status = witness.Status(pb.WitnessStatusRequest(), timeout=10)
    assert [(c.netid, c.holder_domain) for c in status.clusters] == [(7, 1)]
    assert status.clusters[0].refused >= 1 and status.vote_ms == VOTE_MS


@pytest.mark.parametrize("request_fields,named", [
    ({"netid": 0, "domain": 1}, "node.netid must be 1 to 1024"),
    ({"netid": 1, "domain": 65}, "node.domain must be 1 to 64"),
    ({"netid": 1, "domain": 1, "holdover_ms": MAX_HOLDOVER_MS + 1},
     f"holdover must be 0 to {MAX_HOLDOVER_MS} ms"),
])
def test_fields_out_of_range_are_refused_naming_them(witness, request_fields, named):
    holdover = request_fields.pop("holdover_ms", 0)
    with pytest.raises(grpc.RpcError) as raised:
        witness.Vote(pb.VoteRequest(node=common_pb2.NodeId(**request_fields),
                                    holdover_ms=holdover), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in raised.value.details()
    assert vote(witness, 3, netid=9).holder_domain in (0, 3)  # still serving
