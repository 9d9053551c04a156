"""The README's main job: a service kept running on a virtual 3-node cluster through a node crash.

`run_demo` builds a 3-node lab, starts the skyge daemons on every node (n1 first), configures a
demo service on each node (`slots/fifo/0/service.cfg`: a small TCP server started by a user
script, behind the floating IP 192.168.1.100 on the public network), shows `skyge ha status`,
fetches from the service in the client namespace, crashes the active node (power off), and shows
the client reaching the service again on the next node, with the measured time.
`bench.demo_repeat` runs the same steps in labs of its own and watches them from outside through
a `DemoWatch`.

The helpers here (the demo service, the client-side prober, status calls) are shared with the HA
lab tests and `bench.failover`; the config files are written by `skyge.clients.lab.configs`.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Sequence

import grpc

from skyge.clients.lab import GATEWAY_IPS, Lab, LabHost, LabNode
from skyge.clients.lab.configs import (configure_heartbeat, write_lock_config,
                                       write_service_config)
from skyge.clients.lab.daemons import start_daemons, stop_daemons
from skyge.clients.lab.etcd import MIN_MEMBERS, start_etcd
from skyge.clients.lab.errors import LabError
from skyge.v1 import ha_pb2 as pb, ha_pb2_grpc

DEMO_LAB = "demo"
PING_TIMEOUT_S = 1
DEMO_VIP = "192.168.1.100"
DEMO_PORT = 8080
#: the daemons a node needs to run HA services (emon is not needed)
CLUSTER_DAEMONS = ("heartbeat", "bus", "lock", "ha")

# The demo service's program: bind, listen, fork (the child writes the pid file, the parent
# exits 0 once it exists, so that `script start` returns once the port accepts), then answer
# every connection with "n<domain> token <fencing token>". Run with -I -S: starts in ~15 ms, and
# imports nothing of skyge, so it writes its pid file atomically itself (temp file + rename).
SERVER_CODE = r'''
import os, signal, socket, sys, time
port, domain, token, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
pid = os.fork()
if pid:
    for _ in range(200):
        if os.path.exists(pidfile):
            break
        time.sleep(0.001)
    os._exit(0)
os.setsid()
with open(pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(pidfile + ".tmp", pidfile)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
answer = f"n{domain} token {token}\n".encode()
while True:
    c, _ = s.accept()
    try:
        c.sendall(answer)
    except OSError:
        pass
    c.close()
'''

# The user script, seed style: start|stop|status, exit 0 = success / running, 1 = failure.
SCRIPT = r'''#!/bin/sh
# skyge demo service: a tiny TCP server on port {port}
DIR="{dir}"
PIDFILE="$DIR/server-$SKYGE_DOMAIN.pid"
# a live process (a zombie waiting for its reaper is dead)
live() {{ kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }}
alive() {{ [ -f "$PIDFILE" ] && live "$(cat "$PIDFILE")"; }}
case "$1" in
  start)
    alive && exit 0
    exec "{python}" -I -S "$DIR/server.py" {port} "$SKYGE_DOMAIN" "$SKYGE_FENCING_TOKEN" \
      "$PIDFILE" ;;
  stop)
    if alive; then
      pid="$(cat "$PIDFILE")"; kill "$pid"
      for i in 1 2 3 4 5 6 7 8 9 10; do live "$pid" || break; sleep 0.02; done
    fi
    # a server whose start was interrupted before it wrote its pid file
    pkill -KILL -f "^{python} -I -S $DIR/server.py {port} $SKYGE_DOMAIN " 2>/dev/null
    rm -f "$PIDFILE"; exit 0 ;;
  status)
    alive && exit 0; exit 1 ;;
esac
exit 1
'''

# Runs in the client namespace: connect to VIP:PORT in a loop, one JSON line per attempt:
# [start_ns, end_ns, ok, answer or error]. Short connect timeout: a SYN sent to a dead node's MAC
# is simply retried on a new socket. The answer timeout bounds an attempt on a frozen node (its
# kernel still accepts the connection, its server does not answer).
PROBER_CODE = r'''
import json, socket, sys, time
vip, port, timeout, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
out = open(sys.argv[5], "a", buffering=1)
answer_timeout = float(sys.argv[6])
while True:
    t0 = time.time_ns()
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((vip, port))
        s.settimeout(answer_timeout)
        data = s.recv(64).decode().strip()
        if not data:  # closed with no answer (a server being killed): not an answer
            raise ConnectionResetError
        ok = True
    except OSError as e:
        data, ok = type(e).__name__, False
    finally:
        s.close()
    out.write(json.dumps([t0, time.time_ns(), ok, data]) + "\n")
    if ok or pause:
        time.sleep(pause)
'''


# --- cluster setup ------------------------------------------------------------------------------
def install_demo_service(lab: Lab, nodes: Iterable[LabNode] | None = None, *, type: str = "fifo",
                         slot: int = 0, name: str = "demo", vip: str | None = DEMO_VIP,
                         port: int = DEMO_PORT, onstart: bool = True, check_interval: int = 1,
                         check_failures: int = 1, store: str = "",
                         extra: dict[str, Any] | None = None) -> Path:
    """Write the demo program and script (shared, under the lab root) and the service.cfg of
    slots/TYPE/SLOT on every node given; returns the script's path."""
    folder = lab.root / "demo" / f"{name}-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.py").write_text(SERVER_CODE)
    script = folder / "service.sh"
    script.write_text(SCRIPT.format(port=port, dir=folder, python=sys.executable))
    script.chmod(0o755)
    values: dict[str, Any] = {"name": name, "desc": "skyge demo TCP service",
                              "script": str(script), "onstart": "yes" if onstart else "no",
                              "start_timeout": 10, "stop_timeout": 10,
                              "check_interval": check_interval, "check_failures": check_failures}
    if vip:
        values["fip"] = f"eth0-{vip}-255.255.255.0-192.168.1.255:"
    if store:
        values["store"] = store
    values.update(extra or {})
    for node in nodes if nodes is not None else lab.nodes:
        write_service_config(node, type, slot, values)
    return script


def start_node(node: LabNode, daemons: Sequence[str] = CLUSTER_DAEMONS,
               extra_args: Sequence[str] = ("-l", "LOG_INFO")) -> None:
    start_daemons(node, daemons, extra_args=extra_args)


def wait_members(node: LabNode, count: int, timeout: float = 20.0) -> None:
    """Until the node's heartbeat daemon sees `count` members."""
    from skyge.v1 import heartbeat_pb2, heartbeat_pb2_grpc
    socket = node.root / "run" / "skyge" / "heartbeat.sock"
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            try:
                reply = heartbeat_pb2_grpc.HeartbeatStub(channel).ListMembers(
                    heartbeat_pb2.ListMembersRequest(), timeout=2)
                seen = len(reply.members)
                if seen >= count:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.05)
    raise LabError(f"{node.key}: {seen} members after {timeout:g} s, expected {count}")


# --- HA calls -----------------------------------------------------------------------------------
def ha_call(node: LabNode, rpc: str, request: Any, timeout: float = 30.0) -> Any:
    """A unary Ha RPC on the node's HA daemon (its Unix socket)."""
    with grpc.insecure_channel(f"unix:{node.root / 'run' / 'skyge' / 'ha.sock'}") as channel:
        return getattr(ha_pb2_grpc.HaStub(channel), rpc)(request, timeout=timeout)


TYPE_PB = {"random": pb.TAKEOVER_RANDOM, "fifo": pb.TAKEOVER_FIFO, "stack": pb.TAKEOVER_STACK}


def service_status(node: LabNode, type: str = "fifo", slot: int = 0) -> pb.ServiceStatus | None:
    try:
        reply = ha_call(node, "Status", pb.StatusRequest(), timeout=5)
    except grpc.RpcError:
        return None
    return next((s for s in reply.services if s.type == TYPE_PB[type] and s.slot == slot), None)


def placement(node: LabNode, type: str = "fifo",
              slot: int = 0) -> tuple[str, int, list[int]] | None:
    """(state, active domain, waiting domains) of a service, as `node` reports it."""
    status = service_status(node, type, slot)
    if status is None:
        return None
    return (pb.ServiceState.Name(status.state).removeprefix("SERVICE_").lower(),
            status.active_domain, list(status.waiting_domains))


def wait_placement(node: LabNode, expected: Callable[[tuple[str, int, list[int]]], bool],
                   type: str = "fifo", slot: int = 0, timeout: float = 20.0,
                   what: str = "") -> tuple[str, int, list[int]]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = placement(node, type, slot)
        if last is not None and expected(last):
            return last
        time.sleep(0.05)
    raise LabError(f"{type}/{slot} on {node.key}: {what or 'expected placement'} not reached in "
                   f"{timeout:g} s; last seen (state, active, waiting) = {last}")


def status_text(node: LabNode) -> str:
    """`skyge ha status` as the CLI prints it."""
    from skyge.clients.cli.ha_commands import render_status
    from skyge.clients.cli.rpc import to_dict
    return render_status(to_dict(ha_call(node, "Status", pb.StatusRequest(), timeout=10)))


# --- the client side ----------------------------------------------------------------------------
def fetch(client: LabHost, vip: str = DEMO_VIP, port: int = DEMO_PORT,
          deadline_s: float = 3.0) -> str | None:
    """One answer of the demo service from the client namespace (retrying until the deadline)."""
    code = ("import socket,sys\ns=socket.create_connection((sys.argv[1], int(sys.argv[2])), "
            "timeout=0.3)\nprint(s.recv(64).decode().strip())")
    end = time.monotonic() + deadline_s
    while True:
        done = client.run([sys.executable, "-I", "-S", "-c", code, vip, str(port)], timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
        if time.monotonic() >= end:
            return None
        time.sleep(0.05)


class Prober:
    """A connect loop in the client namespace (see PROBER_CODE); `attempts()` reads its log."""

    def __init__(self, lab: Lab, vip: str = DEMO_VIP, port: int = DEMO_PORT,
                 timeout_s: float = 0.02, pause_s: float = 0.005, name: str = "prober",
                 answer_timeout_s: float = 0.5) -> None:
        self.lab = lab
        self.log = lab.root / f"{name}.jsonl"
        self.log.unlink(missing_ok=True)
        self.name = name
        self.proc = lab.client.spawn([sys.executable, "-I", "-S", "-c", PROBER_CODE, vip,
                                      str(port), str(timeout_s), str(pause_s), str(self.log),
                                      str(answer_timeout_s)], name=name)

    def attempts(self) -> list[tuple[int, int, bool, str]]:
        if not self.log.exists():
            return []
        rows: list[tuple[int, int, bool, str]] = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written
                start, end, ok, data = json.loads(line)
                rows.append((start, end, ok, data))
        return rows

    def first_answer_after(self, t0_ns: int, exclude: str | None = None
                           ) -> tuple[int, str] | None:
        """(end time ns, answer) of the first successful attempt started after t0 from a node
        other than `exclude` ("n1")."""
        for start, end, ok, data in self.attempts():
            if start >= t0_ns and ok and (exclude is None or not data.startswith(exclude + " ")):
                return end, data
        return None

    def wait_answer_after(self, t0_ns: int, exclude: str | None = None,
                          timeout: float = 10.0) -> tuple[int, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_answer_after(t0_ns, exclude)
            if found:
                return found
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        with contextlib.suppress(LabError):
            self.lab.client.kill(self.name)


# --- the demo -----------------------------------------------------------------------------------
def _reaches(node: LabHost, address: str) -> bool:
    return node.run(["ping", "-c", "1", "-W", str(PING_TIMEOUT_S), address],
                    timeout=5).returncode == 0


class DemoWatch:
    """Where an observer (bench.demo_repeat) looks at the demo from outside: the demo calls these
    at fixed points and ignores what they do. This base class does nothing."""

    def lab_up(self, lab: Lab) -> None:
        """The lab is up; no daemon runs yet."""

    def before_crash(self, lab: Lab, victim: LabNode) -> None:
        """Called right before `victim.crash()`."""

    def before_shutdown(self, lab: Lab) -> None:
        """The demo is over (or failed): called before its daemons are stopped, while the lab and
        its logs are still there."""


BACKENDS = ("builtin", "etcd")


def run_demo(say: Callable[[str], None], nodes: int = 3, *, lab_name: str = DEMO_LAB,
             watch: DemoWatch | None = None, fence: bool = False,
             backend: str = "builtin") -> dict:
    """Run the demo, narrating through `say`; returns what was observed (for --output json).

    `lab_name` and `watch` let a benchmark run the same steps in its own lab and observe them.
    With `fence`, every lock daemon has the lab's fence command: the crashed node's service is
    taken over once it is known off rather than when its leases ran out. With `backend` "etcd"
    the locks are kept in an etcd of one member per node (three nodes or more), started in the
    nodes before the daemons."""
    if backend not in BACKENDS:
        raise LabError(f"unknown lock backend {backend!r} (builtin or etcd)")
    if backend == "etcd" and nodes < MIN_MEMBERS:
        raise LabError(f"the etcd backend needs {MIN_MEMBERS} nodes or more, got {nodes}: etcd "
                       f"grants only with a majority, and of two nodes cut apart neither has "
                       f"one; two-node clusters use the built-in authority (the default)")
    watch = watch or DemoWatch()
    report: dict = {"nodes": nodes, "backend": backend}
    started = time.monotonic()
    with Lab.up(nodes=nodes, name=lab_name) as lab:
        say(f"lab '{lab_name}' up: {nodes} nodes (eth0 192.168.1.11.., eth1 10.0.0.11..), "
            f"gateway {' '.join(GATEWAY_IPS)}, client {lab.client.address()}")
        watch.lab_up(lab)
        try:
            _check_networks(lab, say, report)
            if backend == "etcd":
                endpoints = start_etcd(lab)
                report["etcd_endpoints"] = endpoints
                say(f"etcd: one member per node on its private address ({endpoints}), "
                    f"a leader elected")
            _start_cluster(lab, say, report, fence, backend)
            _crash_active(lab, say, report, watch)
        finally:
            watch.before_shutdown(lab)
        survivors = [n for n in lab.nodes if n.id != report["active_before"]]
        for node in reversed(survivors):  # waiters first: nothing is taken over on the way out
            stop_daemons(node, ("ha",))
        for node in survivors:
            stop_daemons(node, tuple(reversed(CLUSTER_DAEMONS[:-1])))
        say("daemons stopped; taking the lab down")
    report["seconds"] = round(time.monotonic() - started, 2)
    say(f"done in {report['seconds']} s: no namespace, link or process left behind")
    return report


def _check_networks(lab: Lab, say: Callable[[str], None], report: dict) -> None:
    for nic, network in (("eth0", "public"), ("eth1", "private")):
        address_of = {"eth0": lambda n: n.public_ip, "eth1": lambda n: n.private_ip}[nic]
        matrix = {src.key: {dst.key: _reaches(src, address_of(dst)) for dst in lab.nodes
                            if dst is not src} for src in lab.nodes}
        report[f"{network}_reachability"] = matrix
    ok = all(all(row.values()) for key in ("public_reachability", "private_reachability")
             for row in report[key].values())
    say(f"networks: every node reaches every other on eth0 and eth1: {'yes' if ok else 'NO'}")


def _start_cluster(lab: Lab, say: Callable[[str], None], report: dict, fence: bool,
                   backend: str = "builtin") -> None:
    """Daemons on every node, the demo service running with every other node waiting."""
    nodes = lab.size
    configure_heartbeat(lab)
    install_demo_service(lab)
    report["fenced"] = fence
    lock: dict[str, Any] = {}
    if fence:
        lock["fence_command"] = lab.fence_command()
        say("fence_command (lock.cfg): the lab's power switch; a node out of the membership "
            "for 250 ms is powered off, and its service is taken over once it is off")
    else:
        say("no fence_command: a lost node's service is taken over when its leases ran out "
            "(run `skyge demo --fence` for the fenced path)")
    if backend == "etcd" or fence:
        for node in lab.nodes:
            write_lock_config(node, lock, backend=backend)
    if backend == "etcd":
        say("lock.cfg: backend = \"etcd\", each node's own member first in etcd_endpoints; "
            "a node's locks live on its etcd lease (TTL 2 s)")
    say(f"service 'demo' (slots/fifo/0/service.cfg on every node): a TCP server on port "
        f"{DEMO_PORT} started by a user script, floating IP {DEMO_VIP} on eth0, onstart")
    for node in lab.nodes:  # membership and locks first
        start_node(node, CLUSTER_DAEMONS[:-1])
    wait_members(lab.node(1), nodes)
    for node in lab.nodes:  # n1 first: with fifo order it runs the service, n2 then n3 wait
        start_node(node, ("ha",))
        if node.id == 1:
            wait_placement(node, lambda p: p[0] == "running" and p[1] == 1,
                           what="running on 1")
    say(f"started skyge-{', skyge-'.join(CLUSTER_DAEMONS)} on " +
        ", ".join(n.key for n in lab.nodes))
    report["daemons_serving"] = True
    observer = lab.node(lab.size)
    _, active, waiting = wait_placement(
        observer, lambda p: p[0] == "running" and len(p[2]) == nodes - 1,
        what=f"running, {nodes - 1} nodes waiting")
    report.update(active_before=active, waiting_before=waiting)
    text = status_text(observer)
    report["status_before"] = text
    say("$ skyge ha status\n" + text)
    answer = fetch(lab.client)
    report["answer_before"] = answer
    say(f"client {lab.client.address()} -> {DEMO_VIP}:{DEMO_PORT}: {answer!r}")


def _crash_active(lab: Lab, say: Callable[[str], None], report: dict, watch: DemoWatch) -> None:
    """Crash the active node; the client is answered by the next node."""
    nodes, active, waiting = lab.size, report["active_before"], report["waiting_before"]
    victim = lab.node(active)
    prober = Prober(lab)
    try:
        time.sleep(0.3)
        say(f"crashing {victim.key} (power off: cables dead, every process killed) ...")
        watch.before_crash(lab, victim)
        t0 = time.time_ns()
        victim.crash()
        found = prober.wait_answer_after(t0, exclude=victim.key, timeout=15)
    finally:
        prober.stop()
    if found is None:
        raise LabError("the service did not come back on another node within 15 s")
    end_ns, answer_after = found
    report["answer_after"] = answer_after
    report["failover_ms"] = round((end_ns - t0) / 1e6, 1)
    say(f"client -> {DEMO_VIP}:{DEMO_PORT}: {answer_after!r}, "
        f"{report['failover_ms']} ms after the crash")
    survivor = lab.node(waiting[0])
    _, report["active_after"], report["waiting_after"] = wait_placement(
        survivor, lambda p: p[0] == "running" and p[1] != active and
        len(p[2]) == nodes - 2, what=f"running, {nodes - 2} node(s) waiting")
    text = status_text(survivor)
    report["status_after"] = text
    say(f"$ skyge ha status   (on {survivor.key})\n" + text)
