"""The virtual cluster lab on real namespaces: connectivity, every fault, isolation, cleanup.

Needs root (skipped otherwise). Every lab has a unique name and is taken down by the fixtures,
even when a test fails; every ping and wait is bounded.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable, Sequence

import pytest

from skyge.clients.cli import lab_commands
from skyge.clients.cli.output import CommandFailed, Output, UsageError
from skyge.clients.lab import (GATEWAY_IPS, LAB_ROOT, Lab, LabError, LabHost, cleanup_stale,
                               destroy)

pytestmark = pytest.mark.lab

CLIENT = "192.168.1.250"
LAB_LINK_NAMES = {"n1e0", "n1e1", "n2e0", "n2e1", "gw", "cl", "pub", "priv"}


def reach(pairs: Sequence[tuple[LabHost, str]], deadline: float = 1.5) -> list[bool]:
    """For each (host, ip): does a ping get an answer within *deadline* s?

    Pairs are pinged in parallel, once per round, until each has answered or the deadline has
    passed (ping itself gives up at the first "host unreachable" while ARP is still resolving).
    """
    results = [False] * len(pairs)
    pending = list(range(len(pairs)))
    end = time.monotonic() + deadline
    while pending:
        procs = {i: subprocess.Popen(pairs[i][0].command(["ping", "-q", "-n", "-c", "1", "-W",
                                                          "0.3", pairs[i][1]]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in pending}
        for i, proc in procs.items():
            try:
                results[i] = proc.wait(timeout=10) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pending = [i for i in pending if not results[i]]
        if time.monotonic() >= end:
            break
        time.sleep(0.1)
    return results


def check_reach(pairs: Sequence[tuple[LabHost, str]], expect: Sequence[bool] | bool = True,
                deadline: float = 1.5) -> None:
    """Assert which (host, ip) pairs answer a ping; the message lists the wrong ones."""
    wanted = [expect] * len(pairs) if isinstance(expect, bool) else list(expect)
    got = reach(pairs, deadline)
    wrong = [f"{h.key}->{ip}: {'reached' if ok else 'unreachable'}"
             for (h, ip), ok, want in zip(pairs, got, wanted, strict=True) if ok != want]
    assert not wrong, wrong


def loss_share(host: LabHost, ip: str, count: int = 200) -> float:
    """Share of `count` quick pings from host to ip that got no answer."""
    done = host.run(["ping", "-q", "-n", "-c", str(count), "-i", "0.002", "-W", "0.5", ip],
                    timeout=30)
    for line in done.stdout.splitlines():
        if "received" in line:
            received = int(line.split(",")[1].split()[0])
            return 1 - received / count
    raise AssertionError(f"no ping summary: {done.stdout!r} {done.stderr!r}")


def node_mounts(host: LabHost) -> str:
    return host.run(["cat", "/proc/self/mountinfo"], check=True).stdout


# -- basics -------------------------------------------------------------------------------------
def test_every_host_reaches_every_other_on_both_networks(lab: Lab) -> None:
    pairs: list[tuple[LabHost, str]] = []
    for node in lab.nodes:
        for other in lab.nodes:
            if other is not node:
                pairs += [(node, other.public_ip), (node, other.private_ip)]
        pairs += [(node, ip) for ip in (*GATEWAY_IPS, CLIENT)]
    pairs += [(lab.client, ip) for ip in GATEWAY_IPS]
    pairs += [(lab.gateway, n.public_ip) for n in lab.nodes]
    check_reach(pairs)


def test_nodes_have_eth0_eth1_with_distinct_macs_and_roots(lab: Lab) -> None:
    macs = set()
    for node in lab.nodes:
        links = json.loads(node.run(["ip", "-j", "link", "show"], check=True).stdout)
        names = {link["ifname"]: link for link in links}
        assert set(names) == {"lo", "eth0", "eth1"}
        for nic in ("eth0", "eth1"):
            assert names[nic]["address"] == node.mac(nic)
            macs.add(names[nic]["address"])
        for sub in ("etc", "run", "var/log"):
            assert (node.root / sub).is_dir()
        assert node.root == LAB_ROOT / lab.name / node.key
        env = node.run(["sh", "-c", "echo $SKYGE_ROOT"], check=True).stdout.strip()
        assert env == str(node.root)
    assert len(macs) == 2 * lab.size


def test_bad_arguments_are_refused() -> None:
    for nodes in (0, 65, "3", True):
        with pytest.raises(LabError, match="1 to 64"):
            Lab.up(nodes=nodes, name="tbad")  # type: ignore[arg-type]
    for name in ("", "Bad", "a-b", "x" * 17, "1abc"):
        with pytest.raises(LabError, match="lab name"):
            Lab.up(nodes=1, name=name)


# -- network faults -----------------------------------------------------------------------------
def test_cut_stops_only_that_path_and_restore_brings_it_back(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    n1.cut("eth0")
    assert reach([(n1, n2.public_ip), (n1, n2.private_ip), (n2, n3.public_ip),
                  (n1, GATEWAY_IPS[0]), (n2, n1.public_ip)]) == [False, True, True, False, False]
    flags = json.loads(n1.run(["ip", "-j", "link", "show", "dev", "eth0"], check=True).stdout)[0]
    assert "NO-CARRIER" in flags["flags"]
    state = n1.links()["eth0"]
    assert state.cut and not state.up and n1.links()["eth1"].up
    n1.restore("eth0")
    assert not n1.links()["eth0"].cut
    assert all(reach([(n1, n2.public_ip), (n2, n1.public_ip), (n1, GATEWAY_IPS[1])], deadline=2))


def test_partition_separates_exactly_the_groups_and_heal_restores(
        make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(4)
    n1, n2, n3, n4 = lab.nodes
    assert lab.partition([[1], [2, 3]]) == [[1], [2, 3], [4]]
    pairs: list[tuple[LabHost, str]] = []
    expect = []
    for a, b, same in ((n1, n2, False), (n2, n3, True), (n3, n4, False), (n1, n4, False)):
        pairs += [(a, b.public_ip), (a, b.private_ip)]
        expect += [same, same]
    pairs += [(n1, GATEWAY_IPS[0]), (n2, GATEWAY_IPS[0]), (lab.client, n1.public_ip),
              (lab.client, n4.public_ip)]
    expect += [True, False, True, False]
    assert reach(pairs) == expect
    assert lab.status()["partition"] == {"groups": [[1], [2, 3], [4]], "gateway": 0}

    lab.partition([[1, 2]], gateway=None)  # re-partition: gateway and client alone
    assert reach([(n1, n2.private_ip), (n1, n3.private_ip), (n1, GATEWAY_IPS[0]),
                  (n3, GATEWAY_IPS[1]), (n3, n4.public_ip)]) == [True, False, False, False, True]

    lab.heal()
    everyone = [(a, b.private_ip) for a in lab.nodes for b in lab.nodes if a is not b]
    everyone += [(n, GATEWAY_IPS[0]) for n in lab.nodes]
    check_reach(everyone, deadline=2)
    assert lab.status()["partition"] is None


def test_loss_drops_roughly_the_share_asked(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    # learn the MACs first: lost ARP frames would stall the path for a second at a time
    check_reach([(n1, n2.private_ip), (n2, n1.private_ip), (n1, n2.public_ip)])
    n1.set_loss("eth1", 50, "out")
    assert 0.30 <= loss_share(n1, n2.private_ip) <= 0.70
    assert loss_share(n1, n2.public_ip, count=50) == 0  # other NIC untouched
    n1.set_loss("eth1", 50, "in")  # now both directions: a round trip is lost 75 % of the time
    assert 0.60 <= loss_share(n1, n2.private_ip) <= 0.90
    n1.set_loss("eth1", 0)
    assert loss_share(n1, n2.private_ip, count=50) == 0
    n1.set_loss("eth1", 100, peer=2)  # only the path n1 <-> n2
    assert reach([(n1, n2.private_ip), (n1, n3.private_ip), (n3, n2.private_ip)]) == \
        [False, True, True]
    n1.clear_loss()
    assert lab.status()["loss"] == []
    with pytest.raises(LabError, match="0 to 100"):
        n1.set_loss("eth0", 120)
    with pytest.raises(LabError, match="direction"):
        n1.set_loss("eth0", 10, "sideways")


def test_clear_faults_undoes_every_fault(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    n1.cut("eth0")
    lab.partition([[1, 2]])
    n2.set_loss("eth1", 100)
    n3.freeze()
    lab.clear_faults()
    status = lab.status()
    assert status["partition"] is None and status["loss"] == []
    assert all(h["state"] == "up" for h in status["hosts"])
    assert all(nic["link"] == "up" and nic["bridge"] in ("pub", "priv")
               for h in status["hosts"] for nic in h["nics"].values())
    check_reach([(a, b.private_ip) for a in lab.nodes for b in lab.nodes if a is not b] +
                [(n1, n3.public_ip), (n1, GATEWAY_IPS[0])], deadline=3)


UDP_RECEIVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
print("ready", flush=True)
s.settimeout(1.0)
n = 0
try:
    while True:
        s.recv(100)
        n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""
UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
errors = 0
for _ in range(20):
    try:
        s.sendto(b"x", (sys.argv[1], 9999))
    except OSError:
        errors += 1
    time.sleep(0.005)
print(errors)
"""


def udp_delivered(sender: LabHost, receiver: LabHost, ip: str) -> tuple[int, int]:
    """(datagrams received out of 20, send errors) from sender to receiver's ip."""
    proc = subprocess.Popen(receiver.command([sys.executable, "-c", UDP_RECEIVER]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        errors = int(sender.run([sys.executable, "-c", UDP_SENDER, ip], check=True).stdout)
        out, _ = proc.communicate(timeout=10)
        return int(out.strip()), errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_loss_can_be_asymmetric_and_is_silent(lab: Lab) -> None:
    n1, n2, _ = lab.nodes
    assert all(reach([(n1, n2.private_ip), (n2, n1.private_ip)]))  # learn the MACs first
    n1.set_loss("eth1", 100, "out")
    assert udp_delivered(n2, n1, n1.private_ip) == (20, 0)  # into n1: fine
    assert udp_delivered(n1, n2, n2.private_ip) == (0, 0)  # out of n1: all lost, no send error


# -- processes ----------------------------------------------------------------------------------
def test_freeze_and_thaw_stop_and_continue_the_processes(lab: Lab) -> None:
    n1 = lab.node(1)
    proc = n1.spawn(["sleep", "60"], name="sleeper")
    other = lab.node(2).spawn(["sleep", "60"])
    assert n1.find("sleeper") == [proc.pid]
    frozen = n1.freeze()
    assert proc.pid in frozen and n1.frozen
    assert {p.pid: p.state for p in n1.processes()}[proc.pid] == "T"
    assert [p.state for p in lab.node(2).processes()] == ["S"]  # other nodes untouched
    n1.thaw()
    assert not n1.frozen
    assert {p.pid: p.state for p in n1.processes()}[proc.pid] in ("S", "R")
    assert other.poll() is None


def test_kill_signals_only_the_named_process_and_refuses_the_holder_and_strangers(lab: Lab) -> None:
    n1 = lab.node(1)
    a = n1.spawn(["sleep", "60"], name="a")
    b = n1.spawn(["sleep", "60"], name="b")
    assert n1.kill("a") == [a.pid]
    assert a.wait(timeout=5) == -signal.SIGKILL
    assert b.poll() is None and n1.pids() == [b.pid]
    with pytest.raises(LabError, match="holder"):
        n1.kill(n1.holder_pid or 0)
    with pytest.raises(LabError, match="not a process"):
        n1.kill(os.getpid())
    n1.kill(b.pid, signal.SIGTERM, wait=5)
    assert b.wait(timeout=5) == -signal.SIGTERM
    assert n1.pids() == []


def test_crash_kills_everything_and_cuts_links_boot_brings_a_fresh_node(lab: Lab) -> None:
    n1, n2, _ = lab.nodes
    proc = n2.spawn(["sleep", "60"])
    mnt = n2.root / "mnt"
    mnt.mkdir()
    n2.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    (n2.root / "run" / "daemon.pid").write_text("1\n")
    n2.cut("eth1")
    old_holder = n2.holder_pid

    n2.crash()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert n2.crashed and n2.pids(include_holder=True) == [] and n2.holder_pid is None
    assert not any(state.up for state in n2.links().values())
    assert reach([(n1, n2.public_ip), (n1, n2.private_ip)]) == [False, False]
    with pytest.raises(LabError, match="crashed"):
        n2.run(["true"])
    n2.crash()  # idempotent

    n2.boot()
    assert not n2.crashed and n2.holder_pid not in (None, old_holder)
    assert n2.pids() == [] and not (n2.root / "run" / "daemon.pid").exists()
    assert str(mnt) not in node_mounts(n2)  # fresh mount namespace
    links = n2.links()
    assert links["eth0"].up and not links["eth1"].up and links["eth1"].cut  # still unplugged
    assert reach([(n1, n2.public_ip), (n2, GATEWAY_IPS[0])], deadline=2) == [True, True]
    n2.restore("eth1")
    assert reach([(n1, n2.private_ip)], deadline=2) == [True]
    with pytest.raises(LabError, match="running"):
        n2.boot()


def test_a_node_being_crashed_reads_as_crashed_never_as_a_broken_lab(lab: Lab) -> None:
    """A fence powers a node off (`crash`) while something still asks that node for commands
    (the bench's two-node fence variant, checking who reaches whom): every refusal says it is
    crashed, none that the lab is broken, also in the moment between the kill of its processes
    and the crash being recorded."""
    n2 = lab.nodes[1]
    refusals: list[str] = []
    stop = threading.Event()

    def ask() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                n2.command(["true"])
            except LabError as error:
                refusals.append(str(error))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        time.sleep(0.05)
        n2.crash()
        time.sleep(0.05)
    finally:
        stop.set()
        asker.join(35)
        n2.boot()
    assert refusals and all("crashed" in text for text in refusals), sorted(set(refusals))


def test_mounts_are_per_node(lab: Lab) -> None:
    n1, n2, _ = lab.nodes
    mnt = n1.root / "data"
    mnt.mkdir()
    n1.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    n1.run(["sh", "-c", f"echo hello > {mnt}/file"], check=True)
    reader = n1.spawn(["sh", "-c", f"cat {mnt}/file; sleep 60"], name="reader")  # another process
    assert n1.run(["cat", f"{mnt}/file"], check=True).stdout == "hello\n"
    assert str(mnt) in node_mounts(n1)
    assert str(mnt) not in node_mounts(n2)
    assert n2.run(["cat", f"{mnt}/file"]).returncode != 0
    assert not os.path.ismount(mnt) and not (mnt / "file").exists()  # the machine sees nothing
    deadline = time.monotonic() + 5
    log = n1.root / "var" / "log" / "reader.log"
    while "hello" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.read_text() == "hello\n"
    n1.kill(reader.pid)


# -- life cycle ---------------------------------------------------------------------------------
def _leftovers(name: str, pids: Sequence[int]) -> dict[str, object]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {
        "namespaces": [line.split()[0] for line in namespaces.splitlines()
                       if line.startswith(f"{name}-")],
        "processes": [p for p in pids if Path(f"/proc/{p}").exists()
                      and Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[0] != "Z"],
        "folder": (LAB_ROOT / name).exists(),
        # veths only ever exist inside the lab's namespaces; the machine's list must not name any
        "veths": sorted(set(os.listdir("/sys/class/net")) & LAB_LINK_NAMES),
    }


def test_down_leaves_nothing_behind(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(2)
    pids = [lab.node(1).spawn(["sleep", "60"]).pid, lab.client.spawn(["sleep", "60"]).pid]
    pids += [h.holder_pid or 0 for h in lab.hosts]
    lab.node(2).freeze()
    lab.down()
    assert _leftovers(lab.name, pids) == {"namespaces": [], "processes": [], "folder": False,
                                          "veths": []}
    lab.down()  # idempotent
    with pytest.raises(LabError, match="not up"):
        Lab.attach(lab.name)


def test_a_live_lab_name_cannot_be_reused(lab: Lab) -> None:
    with pytest.raises(LabError, match="already up"):
        Lab.up(nodes=1, name=lab.name)
    assert cleanup_stale(lab.name) == []  # live: untouched
    assert Lab.attach(lab.name).node(3).run(["true"]).returncode == 0


def test_cleanup_stale_removes_a_lab_without_state(new_lab_name: Callable[[], str]) -> None:
    name = new_lab_name()
    try:
        lab = Lab.up(nodes=2, name=name, detached=True)
        pids = [lab.node(1).spawn(["sleep", "60"]).pid] + [h.holder_pid or 0 for h in lab.hosts]
        (LAB_ROOT / name / "state.json").unlink()
        assert cleanup_stale(name) == [name]
        assert _leftovers(name, pids) == {"namespaces": [], "processes": [], "folder": False,
                                          "veths": []}
    finally:
        destroy(name)


def test_cleanup_stale_removes_the_lab_of_a_dead_owner(new_lab_name: Callable[[], str]) -> None:
    name = new_lab_name()
    script = ("import os; from skyge.clients.lab import Lab; "
              f"Lab.up(nodes=2, name={name!r}).node(1).spawn(['sleep', '60']); os._exit(0)")
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert Path(f"/run/netns/{name}-n1").exists()  # left behind by the "crashed" run
        assert cleanup_stale(name) == [name]
        assert _leftovers(name, []) == {"namespaces": [], "processes": [], "folder": False,
                                        "veths": []}
    finally:
        destroy(name)


def test_sixty_four_nodes(make_lab: Callable[..., Lab]) -> None:
    started = time.monotonic()
    lab = make_lab(64)
    assert time.monotonic() - started < 15
    n1, n64 = lab.node(1), lab.node("n64")
    assert n64.public_ip == "192.168.1.74" and n64.private_ip == "10.0.0.74"
    assert all(reach([(n64, n1.private_ip), (n1, n64.public_ip), (n64, GATEWAY_IPS[1])]))
    assert len(lab.status()["hosts"]) == 66


# -- CLI ----------------------------------------------------------------------------------------
def cli(*argv: str) -> tuple[int, object]:
    parser = argparse.ArgumentParser(prog="skyge")
    groups = parser.add_subparsers(dest="group", required=True)
    lab_commands.register(groups)
    args = parser.parse_args(list(argv))
    stream = io.StringIO()
    code = args.handler(args, Output("json", stream))
    return code, json.loads(stream.getvalue()) if stream.getvalue() else None


def test_cli_up_status_exec_faults_down(new_lab_name: Callable[[], str]) -> None:
    name = new_lab_name()
    try:
        code, status = cli("lab", "up", "--nodes", "2", "--name", name)
        assert code == 0 and isinstance(status, dict) and status["nodes"] == 2
        code, done = cli("lab", "exec", "--name", name, "n1", "--", "ping", "-c1", "-w2",
                         "10.0.0.12")
        assert code == 0 and isinstance(done, dict) and "1 received" in done["stdout"]
        assert cli("lab", "cut", "n1", "eth1", "--name", name)[0] == 0
        code, status = cli("lab", "status", "--name", name)
        assert isinstance(status, dict)
        assert status["hosts"][0]["nics"]["eth1"]["link"] == "cut"
        assert status["hosts"][0]["nics"]["eth0"]["link"] == "up"
        assert cli("lab", "spawn", "n2", "--as", "sl", "--name", name, "--", "sleep", "60")[0] == 0
        assert cli("lab", "status", "--name", name)[1]["hosts"][1]["processes"] == 1  # type: ignore[index]
        assert cli("lab", "kill", "n2", "sl", "--name", name)[0] == 0
        with pytest.raises(UsageError, match=r"--nodes.*1 to 64"):
            cli("lab", "up", "--nodes", "65", "--name", name)
        with pytest.raises(CommandFailed, match="already up"):
            cli("lab", "up", "--nodes", "1", "--name", name)
        with pytest.raises(CommandFailed, match="no host"):
            cli("lab", "exec", "--name", name, "n9", "--", "true")
        assert cli("lab", "down", "--name", name) == (0, {"name": name, "removed": True})
        assert cli("lab", "down", "--name", name) == (0, {"name": name, "removed": False})
        with pytest.raises(CommandFailed, match="not up"):
            cli("lab", "status", "--name", name)
    finally:
        destroy(name)
