"""skyge-heartbeat on the lab: real daemons in network namespaces, real faults.

Each lab node gets heartbeat.cfg with netid 1000, domain = node id, netcard1 eth0, netcard2 eth1
and the lab's cluster key (see skyge.clients.lab.configs). Every wait is bounded; every lab is
taken down by the fixtures, even when a test fails.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import grpc
import pytest

from skyge.clients.lab import Lab, LabNode
from skyge.clients.lab.configs import config_path, lab_key, write_heartbeat_config
from skyge.services.heartbeat.config import DEFAULT_DETECTOR
from skyge.v1 import common_pb2, heartbeat_pb2 as pb

from . import heartbeat_support as hs

pytestmark = pytest.mark.lab

ALL = [1, 2, 3]
DOMAIN_OFFSET = 8  # byte of the sender's domain in a datagram header (wire.py)


def cli(node: LabNode, *args: str, inside: bool = True,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`skyge ARGS` inside the node (NICs checked) or from the host with --root."""
    argv = [sys.executable, "-m", "skyge.clients.cli.main", *args]
    if inside:
        return node.run(argv, timeout=timeout)
    return subprocess.run([*argv[:3], "--root", str(node.root), *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "SKYGE_ROOT": "/"})


def measured(links: dict) -> dict | None:
    return links if all(link.rtt_ms > 0 for link in links.values()) else None


def dropped(node: LabNode) -> dict[str, int]:
    return dict(hs.stats(node).dropped)


# -- membership --------------------------------------------------------------------------------

def test_three_nodes_converge_with_links_identity_and_log(lab: Lab) -> None:
    hs.start_cluster(lab)
    for node in lab.nodes:
        view = hs.view(node)
        assert [m.node.domain for m in view.members] == ALL
        assert view.view_id == 3  # itself, then two joins
        for member in view.members:
            assert {p.path: p.nic for p in member.paths} == {1: "eth0", 2: "eth1"}
            assert all(p.up for p in member.paths), member
            peer = lab.node(member.node.domain)
            assert {p.path: list(p.addresses) for p in member.paths} == {
                1: [peer.public_ip], 2: [peer.private_ip]}
            assert member.grpc_ports["heartbeat"] == 7410
        links = hs.wait_for("RTT measured on every link",
                            lambda node=node: measured(hs.links(node)))
        assert sorted(links) == [(d, p) for d in ALL if d != node.id for p in (1, 2)]
        assert all(link.state == pb.LINK_UP and link.peer_nic == link.local_nic
                   for link in links.values())
        with hs.channel(node) as channel:
            from skyge.v1 import heartbeat_pb2_grpc
            identity = heartbeat_pb2_grpc.HeartbeatStub(channel).GetIdentity(
                pb.GetIdentityRequest(), timeout=5)
        assert (identity.node.netid, identity.node.domain) == (1000, node.id)
        assert {p.nic: p.hw_code for p in identity.paths} == {
            nic: node.mac(nic).replace(":", "") for nic in ("eth0", "eth1")}
        assert identity.incarnation > 0 and identity.daemon.node_root == str(node.root)
    log = hs.log_text(lab.node(3))
    assert "Established link <1000.3:eth0-1000.1:eth0>" in log
    assert "Established link <1000.3:eth1-1000.2:eth1>" in log
    stats = hs.stats(lab.node(1))
    assert all(p.datagrams_sent > 0 and p.datagrams_received > 0 for p in stats.paths)
    assert stats.membership_changes == 2


def test_one_path_cut_downs_that_link_only(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, n3 = lab.nodes
    watches = hs.watches(lab.nodes)
    try:
        n3.cut("eth0")
        for node in (n1, n2):
            seen = watches[node.id].wait("link", 3, timeout=5)
            assert (seen.path, seen.up) == (1, False)
        for other in (1, 2):
            hs.wait_for(f"n3's link to {other} on path 1 down",
                        lambda other=other: hs.links(n3)[(other, 1)].state == pb.LINK_DOWN, 5)
        assert hs.links(n1)[(3, 2)].state == pb.LINK_UP
        hs.wait_members(lab.nodes, ALL, 1)
        member = hs.members(n1)[3]
        assert {p.path: p.up for p in member.paths} == {1: False, 2: True}
        n3.restore("eth0")
        hs.wait_for("n1's link to n3 on path 1 up again",
                    lambda: hs.links(n1)[(3, 1)].state == pb.LINK_UP, 5)
        assert "Lost link <1000.1:eth0-1000.3:eth0>" in hs.log_text(n1)
        assert all(not w.of("left") for w in watches.values()), "membership changed"
    finally:
        hs.close_all(watches)


def test_both_paths_cut_node_down_everywhere_then_back_with_higher_view(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, n3 = lab.nodes
    before = {n.id: hs.view(n).view_id for n in lab.nodes}
    watches = hs.watches([n1, n2])
    try:
        n3.cut("eth0")
        n3.cut("eth1")
        for node in (n1, n2):
            left = watches[node.id].wait("left", 3, timeout=5)
            assert left.reason == pb.LEAVE_FAILED
        hs.wait_members([n1, n2], [1, 2], 2)
        hs.wait_members([n3], [3], 2)
        assert hs.links(n1).keys() == {(2, 1), (2, 2)}  # a departed peer's links go with it
        n3.restore("eth0")
        n3.restore("eth1")
        hs.wait_members(lab.nodes, ALL, 5)
        for node in lab.nodes:
            assert hs.view(node).view_id >= before[node.id] + 2
    finally:
        hs.close_all(watches)


def test_restart_is_a_new_incarnation(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, _ = lab.nodes
    old = hs.members(n1)[2].incarnation
    persisted = int((n2.root / "var/lib/skyge/heartbeat.incarnation").read_text())
    assert persisted == old
    n2.kill(hs.DAEMON)  # SIGKILL: no goodbye
    hs.start(n2)
    hs.wait_for("n1 to see n2's new incarnation",
                lambda: (m := hs.members(n1).get(2)) is not None and m.incarnation > old, 10)
    assert hs.members(n2)[2].incarnation > old
    hs.wait_members(lab.nodes, ALL, 5)


def test_clean_stop_leaves_at_once(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, n3 = lab.nodes
    watches = hs.watches([n1, n2])
    try:
        hs.stop(n3)
        for node in (n1, n2):
            left = watches[node.id].wait("left", 3, timeout=5)
            assert left.reason == pb.LEAVE_CLEAN  # not a timeout
        assert "Member <1000.3> left (clean)" in hs.log_text(n1)
        hs.wait_members([n1, n2], [1, 2], 1)
    finally:
        hs.close_all(watches)


def test_partition_one_against_two_and_heal(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, n3 = lab.nodes
    lab.partition([[1], [2, 3]])
    hs.wait_members([n1], [1], 5)
    hs.wait_members([n2, n3], [2, 3], 5)
    lab.heal()
    hs.wait_members(lab.nodes, ALL, 5)


def test_asymmetric_loss_is_seen_from_one_side_only(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, n3 = lab.nodes
    n1.set_loss("eth0", 100, "out")  # n1 hears everyone on eth0; nobody hears n1 there
    for node in (n2, n3):
        hs.wait_for(f"{node.key}'s link to n1 on path 1 down",
                    lambda node=node: hs.links(node)[(1, 1)].state == pb.LINK_DOWN, 5)
    hs.wait_for("n1's links on path 1 up (it still hears everyone there)",
                lambda: all(hs.links(n1)[(d, 1)].state == pb.LINK_UP for d in (2, 3)), 5)
    hs.wait_members(lab.nodes, ALL, 5)
    n1.set_loss("eth1", 100, "out")  # now n1 is mute on both paths, still hearing everyone
    hs.wait_members([n2, n3], [2, 3], 5)
    time.sleep(0.3)
    assert sorted(hs.members(n1)) == ALL
    n1.clear_loss()
    hs.wait_members(lab.nodes, ALL, 5)


def test_20_percent_loss_on_one_path_changes_no_membership(lab: Lab) -> None:
    hs.start_cluster(lab)
    watches = hs.watches(lab.nodes)
    try:
        for node in lab.nodes:
            node.set_loss("eth1", 20, "out")
        time.sleep(2)  # the adaptive detector learns the loss rate (~256 datagrams)
        learned = time.time_ns()
        time.sleep(8)
        events = [e for w in watches.values() for e in w.snapshot()]
        assert not [e for e in events if e.kind in ("left", "joined")]
        flaps = [e for e in events if e.kind == "link" and not e.up and e.time_unix_ns > learned]
        if DEFAULT_DETECTOR == "adaptive":
            assert len(flaps) <= 1, f"{len(flaps)} link flaps in 8 s at 20% loss"
        loss = [link.loss_percent for link in hs.links(lab.node(1)).values() if link.path == 2]
        assert all(5 < value < 40 for value in loss), loss
    finally:
        hs.close_all(watches)


# -- isolation from other clusters and attackers ----------------------------------------------

def test_foreign_netid_on_the_same_wires_is_never_seen(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    key = lab_key(lab)
    write_heartbeat_config(n3, netid=1001, key=key)
    hs.start_cluster(lab, nodes=[n1, n2])
    hs.start(n3)
    time.sleep(1)
    hs.wait_members([n1, n2], [1, 2], 1)
    hs.wait_members([n3], [3], 1)
    assert dropped(n1).get("foreign_netid", 0) > 0
    assert dropped(n3).get("foreign_netid", 0) > 0


def test_wrong_key_is_ignored_and_counted(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    write_heartbeat_config(n3, key=os.urandom(32))
    hs.start_cluster(lab, nodes=[n1, n2])
    hs.start(n3)
    time.sleep(1)
    hs.wait_members([n1, n2], [1, 2], 1)
    hs.wait_members([n3], [3], 1)
    assert dropped(n1).get("bad_signature", 0) > 0
    assert dropped(n3).get("bad_signature", 0) > 0


def test_replayed_and_fuzzed_datagrams_are_dropped_and_counted(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, _n2, n3 = lab.nodes
    captured = [d for d in hs.capture_datagrams(n3, "eth0", 60)
                if len(d) > DOMAIN_OFFSET and d[DOMAIN_OFFSET] == 2]
    assert len(captured) >= 10
    before = dropped(n1)
    view_before = hs.view(n1).view_id
    hs.send_datagrams(n3, "eth0", captured)  # n2's own datagrams, again, from another node
    hs.wait_for("n1 to count the replays",
                lambda: dropped(n1).get("replayed", 0) - before.get("replayed", 0)
                >= len(captured), 5)
    rng = random.Random(7)
    sample = captured[0]
    fuzz = [b"", b"S", b"SH", b"SH\x01", sample[:20], sample[:-1], b"XX" + sample[2:],
            sample[:2] + b"\x09" + sample[3:]]
    for _ in range(300):
        mutated = bytearray(sample)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        fuzz.append(bytes(mutated))
    fuzz += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 1400))) for _ in range(200)]
    fuzz.append(b"\xff" * 9000)
    hs.send_datagrams(n3, "eth0", fuzz)
    expected = len(fuzz) - 1  # the empty datagram is read as a zero-length one
    hs.wait_for("n1 to count every fuzzed datagram as dropped",
                lambda: sum(dropped(n1).values()) - sum(before.values()) - len(captured)
                - (dropped(n1).get("looped_back", 0) - before.get("looped_back", 0))
                >= expected, 5)
    counts = dropped(n1)
    for reason in ("truncated", "bad_magic", "bad_version", "bad_signature"):
        assert counts.get(reason, 0) > before.get(reason, 0), (reason, counts)
    hs.wait_members(lab.nodes, ALL, 1)
    assert hs.view(n1).view_id == view_before
    for node in lab.nodes:
        hs.wait_serving(node)


# -- names ---------------------------------------------------------------------------------------

def test_names_travel_to_peers_and_go_with_their_publisher(lab: Lab) -> None:
    hs.start_cluster(lab)
    n1, n2, _ = lab.nodes
    with hs.channel(n2) as channel:
        from skyge.v1 import heartbeat_pb2_grpc
        stub = heartbeat_pb2_grpc.HeartbeatStub(channel)
        cluster = stub.PublishName(pb.PublishNameRequest(
            type=7, lower=1, upper=9, scope=common_pb2.SCOPE_CLUSTER, value=b"db"), timeout=5)
        stub.PublishName(pb.PublishNameRequest(
            type=7, lower=20, upper=20, scope=common_pb2.SCOPE_NODE, value=b"local"), timeout=5)
        for request, code, field in (
                (pb.PublishNameRequest(type=1, scope=0), grpc.StatusCode.INVALID_ARGUMENT, "scope"),
                (pb.PublishNameRequest(type=1, lower=5, upper=4, scope=1),
                 grpc.StatusCode.INVALID_ARGUMENT, "upper"),
                (pb.PublishNameRequest(type=1, scope=1, value=b"x" * 257),
                 grpc.StatusCode.INVALID_ARGUMENT, "value")):
            with pytest.raises(grpc.RpcError) as caught:
                stub.PublishName(request, timeout=5)
            assert caught.value.code() == code and field in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.WithdrawName(pb.WithdrawNameRequest(publication_id=999), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            stub.LookupName(pb.LookupNameRequest(instance=3), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def seen_on_n1() -> list[pb.Publication]:
        with hs.channel(n1) as channel:
            from skyge.v1 import heartbeat_pb2_grpc
            return list(heartbeat_pb2_grpc.HeartbeatStub(channel).LookupName(
                pb.LookupNameRequest(type=7, instance=5), timeout=5).publications)

    found = hs.wait_for("n2's cluster-scope name on n1", seen_on_n1, 5)
    assert [(p.publisher.domain, p.publication_id, p.value) for p in found] == [
        (2, cluster.publication_id, b"db")]
    shown = cli(n1, "heartbeat", "config", "-s", inside=False)
    assert shown.returncode == 0, shown.stderr
    assert "Type" in shown.stdout and f"<1000.2:{cluster.publication_id}>" in shown.stdout
    assert "local" not in shown.stdout  # node scope stays on its node
    hs.stop(n2)
    hs.wait_for("n2's name gone from n1", lambda: not seen_on_n1() or None, 5)


# -- configuration and CLI ------------------------------------------------------------------

def test_seed_style_config_cli_then_show_watch_and_hw_code(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    for node in lab.nodes:
        for path, nic in ((1, "eth0"), (2, "eth1")):
            done = cli(node, "heartbeat", "config", "-n", "1000", "-d", str(node.id), "-e", nic,
                       "-p", str(path))
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"configured heartbeat path {path} on {nic} "
                                          f"(netid 1000, domain {node.id})")
    made = cli(n1, "heartbeat", "keygen")
    assert made.returncode == 0, made.stderr
    key_file = n1.root / "etc/skyge/heartbeat.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    assert 'key_file = "heartbeat.key";' in config_path(n1, "heartbeat").read_text()
    seed_file = n3.root / "jiluos.cfg"
    for node in (n2, n3):
        (node.root / "etc/skyge/heartbeat.key").write_bytes(key_file.read_bytes())
    seed_file.write_text('domain=3;\nsubnet=1000;\nnetcard1="eth0";\nnetcard2="eth1";\n'
                         'key_file="heartbeat.key";\n')
    done = cli(n3, "heartbeat", "config", "-r")
    assert done.returncode == 0 and "removed heartbeat config" in done.stdout
    done = cli(n3, "heartbeat", "config", "-c", str(seed_file))
    assert done.returncode == 0, done.stderr
    n2_config = config_path(n2, "heartbeat")
    cli(n2, "heartbeat", "config", "-c", str(n2_config))  # installs itself: no change
    n2_config.write_text(n2_config.read_text() + 'key_file = "heartbeat.key";\n')
    for node in lab.nodes:
        hs.start(node)
    hs.wait_members(lab.nodes, ALL, 10)

    shown = cli(n1, "heartbeat", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("node 1000.1  incarnation ")
    assert "<1000.1:eth1-1000.3:eth1>" in shown.stdout and "members (3):" in shown.stdout
    data = json.loads(cli(n1, "-o", "json", "heartbeat", "show").stdout)
    assert len(data["members"]["members"]) == 3 and len(data["links"]["links"]) == 4
    codes = cli(n1, "hw-code").stdout.strip()
    assert codes == "eth0 : 025b00010000 eth1 : 025b00010001"
    assert json.loads(cli(n1, "-o", "json", "hw-code").stdout) == {
        "eth0": "025b00010000", "eth1": "025b00010001"}
    stats = json.loads(cli(n1, "-o", "json", "heartbeat", "stats").stdout)
    assert stats["membership_changes"] == "2"

    watcher = subprocess.Popen(n1.command([sys.executable, "-m", "skyge.clients.cli.main",
                                           "heartbeat", "watch"]),
                               stdout=subprocess.PIPE, text=True, env=n1.environment())
    try:
        time.sleep(1.5)
        hs.stop(n3)
        time.sleep(0.5)
    finally:
        watcher.send_signal(signal.SIGINT)
        output, _ = watcher.communicate(timeout=10)
    lines = output.splitlines()
    assert "view 3 members 1000.1, 1000.2, 1000.3" in lines[0]
    assert any("Lost link <1000.1:eth0-1000.3:eth0>" in line for line in lines), lines
    assert any(line.endswith("left 1000.3 (clean leave)") for line in lines), lines


@pytest.mark.parametrize("args,fragment", [
    (["-n", "0", "-d", "1", "-e", "eth0", "-p", "1"], "-n/--netid: must be from 1 to 1024, got 0"),
    (["-n", "1025", "-d", "1", "-e", "eth0", "-p", "1"], "-n/--netid: must be from 1 to 1024"),
    (["-n", "1000", "-d", "65", "-e", "eth0", "-p", "1"], "-d/--domain: must be from 1 to 64"),
    (["-n", "1000", "-d", "1", "-e", "eth0", "-p", "9"], "-p/--path: must be from 1 to 8"),
    (["-n", "1000", "-d", "1", "-e", "eth/0", "-p", "1"], "-e/--nic: must be a network interface"),
    (["-n", "1000", "-d", "1", "-e", "eth7", "-p", "1"],
     "-e/--nic: no network interface 'eth7' on this node (it has eth0, eth1, lo)"),
    (["-n", "1000", "-d", "1", "-e", "eth0"], "-p missing"),
    (["-s", "-n", "1000"], "cannot be combined"),
])
def test_bad_config_input_is_refused_with_exit_2(lab: Lab, args: list[str], fragment: str) -> None:
    done = cli(lab.node(1), "heartbeat", "config", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert fragment in done.stderr
    assert not config_path(lab.node(1), "heartbeat").exists()


def test_config_disagreements_and_bad_files_are_refused(lab: Lab) -> None:
    n1 = lab.node(1)
    assert cli(n1, "heartbeat", "config", "-n", "1000", "-d", "1", "-e", "eth0",
               "-p", "1").returncode == 0
    for args, fragment in (
            (["-n", "1001", "-d", "1", "-e", "eth1", "-p", "2"], "configured with netid 1000"),
            (["-n", "1000", "-d", "2", "-e", "eth1", "-p", "2"], "configured with domain 1"),
            (["-n", "1000", "-d", "1", "-e", "eth0", "-p", "2"], "eth0 is already path 1")):
        done = cli(n1, "heartbeat", "config", *args)
        assert done.returncode == 2 and fragment in done.stderr, done.stderr
    bad = n1.root / "bad.cfg"
    bad.write_text('domain=1;\nsubnet=2000;\nnetcard1="eth0";\n')
    done = cli(n1, "heartbeat", "config", "-c", str(bad))
    assert done.returncode == 2 and f"{bad}:2: subnet: must be from 1 to 1024" in done.stderr
    bad.write_text('domain=1;\nsubnet=1000;\nnetcard1="eth5";\n')
    done = cli(n1, "heartbeat", "config", "-c", str(bad))
    assert done.returncode == 2 and "netcard1: no network interface 'eth5'" in done.stderr
    # From outside the node the NIC cannot be checked: the daemon checks it when it starts.
    done = cli(n1, "heartbeat", "config", "-n", "1000", "-d", "1", "-e", "eth9", "-p", "2",
               inside=False)
    assert done.returncode == 0 and "was not checked here" in done.stdout
    proc = n1.spawn([sys.executable, "-m", "skyge.services.heartbeat", "-r", str(n1.root)],
                    name="heartbeat-bad")
    assert proc.wait(30) == 2
    log = (n1.root / "var/log/heartbeat-bad.log").read_text()
    assert "netcard2: no network interface 'eth9' on this node (it has eth0, eth1, lo)" in log
    assert cli(n1, "heartbeat", "config", "-r").returncode == 0
    assert not config_path(n1, "heartbeat").exists()
    done = cli(n1, "heartbeat", "config", "-s")
    assert done.returncode == 1 and "no heartbeat config" in done.stderr


def test_short_key_is_refused_at_start(lab: Lab) -> None:
    n1 = lab.node(1)
    write_heartbeat_config(n1, key=b"too short")
    proc = n1.spawn([sys.executable, "-m", "skyge.services.heartbeat", "-r", str(n1.root)],
                    name="heartbeat-bad")
    assert proc.wait(30) == 2
    log = (n1.root / "var/log/heartbeat-bad.log").read_text()
    assert "key_file: the cluster key" in log and "must be 16 to 4096 bytes, it has 9" in log
