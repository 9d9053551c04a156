"""etcd for the lock daemon's etcd backend (lock.cfg `backend = "etcd"`): Debian's etcd-server,
which `deploy/install.sh` installs.

`member_argv` is the one etcd command line (the lab's members, one per node on its private
network, and `LoopbackEtcd`, one member on 127.0.0.1 for the daemon tests and benchmarks).

In a lab (`skyge lab up --etcd`, `skyge demo --backend etcd`, the lab tests and benchmarks),
`start_etcd(lab)` runs one member per node inside that node (so a crashed node's member dies
with it), on both its addresses (eth1, eth0: one cut cable leaves it in the cluster) with its
data in ROOT/var/lib/etcd, waits until the members have a leader, and returns what lock.cfg's
`etcd_endpoints` takes; `endpoints_for(node, members)` orders that list with the node's own
member first (its lock daemon talks to it while it answers). A booted node's member is started
again with `start_member` (its data is kept).
The timing is etcd's defaults divided by two (heartbeat 50 ms, election 500 ms): a dead leader
is replaced in about half a second, and a loaded two-core machine does not make it flap.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from skyge.clients.lab.cluster import Lab, LabNode
from skyge.clients.lab.errors import LabError

__all__ = ["CLIENT_PORT", "MIN_MEMBERS", "PEER_PORT", "ClientTls", "LoopbackEtcd", "endpoints_for",
           "etcd_binary", "etcdctl", "leader", "member_argv", "members_of", "running", "start_etcd",
           "start_member", "stop_etcd", "wait_healthy"]

CLIENT_PORT = 2379
PEER_PORT = 2380
HEARTBEAT_MS = 50
ELECTION_MS = 500
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: the fewest lab members `start_etcd` runs: etcd grants only with a majority, which two nodes
#: cut apart never have (two-node clusters use the built-in authority)
MIN_MEMBERS = 3
#: the name a lab node's member is spawned under (`LabNode.find`, `LabNode.kill`)
SPAWN_NAME = "etcd"
#: bounds of one `etcdctl endpoint health` in a node while waiting for a leader
CHECK_DIAL_S = 1
CHECK_COMMAND_S = 2


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        raise LabError("etcd is not installed: deploy/install.sh installs Debian's etcd-server")
    return found


@dataclass(frozen=True)
class ClientTls:
    """PEM files for etcd's client port over TLS with client certificates: the CA, the
    member's own certificate and key, and one client's (for the readiness check)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_flags(self) -> list[str]:
        return ["--cert-file", str(self.server_cert), "--key-file", str(self.server_key),
                "--trusted-ca-file", str(self.ca), "--client-cert-auth"]

    def etcdctl_flags(self) -> list[str]:
        return ["--cacert", str(self.ca), "--cert", str(self.client_cert),
                "--key", str(self.client_key)]


def member_argv(name: str, data_dir: Path, ips: Sequence[str],
                cluster: Mapping[str, Sequence[str]], *, client_port: int = CLIENT_PORT,
                peer_port: int = PEER_PORT, client_tls: ClientTls | None = None) -> list[str]:
    """etcd for member `name` at `ips` of a new cluster (`cluster`: every member's name -> its
    addresses). A member on several networks talks to its peers on whichever works (etcd tries
    a peer's next URL when one fails), as skyge's own daemons use every heartbeat path. With
    `client_tls` its client port speaks TLS and asks for a client certificate."""
    peers = ",".join(f"{member}=http://{address}:{peer_port}"
                     for member, addresses in sorted(cluster.items()) for address in addresses)

    def urls(port: int, scheme: str = "http") -> str:
        return ",".join(f"{scheme}://{ip}:{port}" for ip in ips)

    client_scheme = "https" if client_tls else "http"
    return [etcd_binary(), "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", urls(client_port, client_scheme),
            "--advertise-client-urls", urls(client_port, client_scheme),
            *(client_tls.server_flags() if client_tls else []),
            "--listen-peer-urls", urls(peer_port),
            "--initial-advertise-peer-urls", urls(peer_port),
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            # a member back from a partition asks before it campaigns (the default from etcd
            # 3.5 on): without it its higher term deposes the leader, and every lease waits
            # for the election that follows
            "--pre-vote",
            "--log-level", "warn"]


def etcdctl() -> str:
    found = shutil.which("etcdctl")
    if found is None:
        raise LabError("etcdctl is not installed: deploy/install.sh installs Debian's "
                       "etcd-client")
    return found


# -- one member per lab node ---------------------------------------------------------------------
def _data_dir(node: LabNode) -> Path:
    return node.root / "var" / "lib" / "etcd"


def _addresses(node: LabNode) -> tuple[str, str]:
    """A member listens on both of its node's networks, the private one first."""
    return node.private_ip, node.public_ip


def _cluster(members: Iterable[LabNode]) -> dict[str, tuple[str, str]]:
    return {node.key: _addresses(node) for node in members}


def _endpoint(node: LabNode) -> str:
    return ",".join(f"{ip}:{CLIENT_PORT}" for ip in _addresses(node))


def endpoints_for(node: LabNode | None, members: Sequence[LabNode]) -> str:
    """lock.cfg's `etcd_endpoints` for `node`'s lock daemon: both addresses of every member
    (IP:2379, private first), the node's own member first (None: in node order)."""
    ordered = sorted(members, key=lambda m: (node is None or m.key != node.key, m.id))
    return ",".join(_endpoint(m) for m in ordered)


def members_of(lab: Lab) -> list[LabNode]:
    """The nodes whose etcd member was started by `start_etcd` (running or not): the nodes
    with an etcd data folder."""
    return [node for node in lab.nodes if _data_dir(node).is_dir()]


def running(node: LabNode) -> bool:
    """Whether `node` runs its etcd member (a crashed node runs nothing)."""
    return not node.crashed and bool(node.find(SPAWN_NAME))


def start_member(node: LabNode, members: Sequence[LabNode]) -> int:
    """Start `node`'s member of the lab etcd made of `members` (spawned as "etcd", output in
    ROOT/var/log/etcd.log); its PID. A member whose data folder exists (a booted node) rejoins
    with its data."""
    if running(node):
        raise LabError(f"{node.key}: its etcd member runs already")
    data = _data_dir(node)
    data.parent.mkdir(parents=True, exist_ok=True)
    argv = member_argv(node.key, data, _addresses(node), _cluster(members))
    return node.spawn(argv, name=SPAWN_NAME).pid


def wait_healthy(node: LabNode, members: Sequence[LabNode],
                 timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until `etcdctl endpoint health`, run in `node`, finds every member of `members` answering
    a linearizable read (the cluster has a leader); LabError with etcdctl's last words and the
    members' logs if not within `timeout_s`."""
    argv = [etcdctl(), "--endpoints", endpoints_for(node, members),
            "--dial-timeout", f"{CHECK_DIAL_S}s", "--command-timeout", f"{CHECK_COMMAND_S}s",
            "endpoint", "health"]
    deadline = time.monotonic() + timeout_s
    while True:
        gone = [m.key for m in members if not m.crashed and not running(m)]
        if gone:
            raise LabError(f"the etcd member of {', '.join(gone)} exited: see "
                           f"{', '.join(str(m.root / 'var/log/etcd.log') for m in members)}")
        done = node.run(argv, timeout=CHECK_DIAL_S + CHECK_COMMAND_S + 10,
                        env={"ETCDCTL_API": "3"})
        if done.returncode == 0:
            return
        last = " ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-1:])
        if time.monotonic() >= deadline:
            raise LabError(f"lab etcd on {', '.join(m.key for m in members)} not healthy after "
                           f"{timeout_s:g} s ({last}): see "
                           f"{', '.join(str(m.root / 'var/log/etcd.log') for m in members)}")
        time.sleep(0.1)


def leader(members: Sequence[LabNode]) -> LabNode | None:
    """The node whose member leads the lab etcd, as the first running member says (None: no
    leader, or nobody answered)."""
    asking = next((m for m in members if running(m)), None)
    if asking is None:
        return None
    done = asking.run([etcdctl(), "--endpoints", endpoints_for(None, members), "--dial-timeout",
                       f"{CHECK_DIAL_S}s", "--command-timeout", f"{CHECK_COMMAND_S}s",
                       "endpoint", "status", "-w", "json"],
                      timeout=CHECK_DIAL_S + CHECK_COMMAND_S + 10, env={"ETCDCTL_API": "3"})
    try:
        statuses = json.loads(done.stdout or "[]")
    except ValueError:
        return None
    for status in statuses:
        header = status.get("Status", {})
        if header.get("leader") and header.get("leader") == header.get("header", {}).get(
                "member_id"):
            address = status.get("Endpoint", "").rsplit(":", 1)[0]
            return next((m for m in members if address in _addresses(m)), None)
    return None


def start_etcd(lab: Lab, nodes: Sequence[LabNode] | None = None, *,
               timeout_s: float = READY_TIMEOUT_S) -> str:
    """One etcd member per node of `nodes` (default: every node), inside the node, on its
    private address; waits until the members have a leader. Returns every member's
    addresses (lock.cfg's `etcd_endpoints`; `endpoints_for` puts a node's own first).
    Refused (LabError) with fewer than three nodes."""
    members = list(nodes if nodes is not None else lab.nodes)
    if len(members) < MIN_MEMBERS:
        raise LabError(f"the lab's etcd needs {MIN_MEMBERS} or more nodes, got {len(members)}: "
                       f"etcd grants only with a majority, and of two nodes cut apart neither "
                       f"has one; two-node clusters use the lock daemon's built-in authority "
                       f"(backend = \"builtin\") with its two-node rule")
    etcd_binary()
    etcdctl()
    try:
        for node in members:
            start_member(node, members)
        wait_healthy(members[0], members, timeout_s)
    except BaseException:
        stop_etcd(members)
        raise
    return endpoints_for(None, members)


def stop_etcd(nodes: Iterable[LabNode]) -> None:
    """SIGTERM the etcd member of each node that runs one (by its PID) and wait until gone."""
    for node in nodes:
        if running(node):
            node.kill(SPAWN_NAME, signal.SIGTERM, wait=STOP_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopbackEtcd:
    """One etcd member on 127.0.0.1 (free ports, data under `folder`), started on enter and
    killed (by PID) on exit."""

    def __init__(self, folder: Path, client_tls: ClientTls | None = None) -> None:
        self.folder = folder
        self.client_tls = client_tls
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.endpoint = f"127.0.0.1:{self.client_port}"
        self.log = folder / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LoopbackEtcd:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = member_argv("default", self.folder / "data", ["127.0.0.1"],
                           {"default": ["127.0.0.1"]}, client_port=self.client_port,
                           peer_port=self.peer_port, client_tls=self.client_tls)
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                                            stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until etcd answers a linearizable read (it has a leader)."""
        deadline = time.monotonic() + timeout_s
        etcdctl = shutil.which("etcdctl") or "etcdctl"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabError(f"etcd exited {self.process.returncode}: see {self.log}")
            tls = self.client_tls.etcdctl_flags() if self.client_tls else []
            done = subprocess.run([etcdctl, "--endpoints", self.endpoint, *tls, "get",
                                   "ready-check"],
                                  capture_output=True, timeout=10, check=False,
                                  env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
            if done.returncode == 0:
                return
            time.sleep(0.1)
        raise LabError(f"etcd at {self.endpoint} not ready after {timeout_s:g} s: see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
