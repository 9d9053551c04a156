"""Lock daemons on lab nodes: config, start, readiness, a client, a keep_holds client process to
kill, a fence command, and the history checker.

Shared by tests/cluster/test_lock.py and bench/lock_latency.py. Every wait is bounded. Clients run
in the test process and reach a node's lock daemon through its Unix socket (node roots are host
folders), so their timestamps (time.monotonic_ns) share one clock with every lab process.
"""
from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable, Sequence

import grpc

from skyge.clients.lab import Lab, LabNode
from skyge.clients.lab.configs import write_lock_config
from skyge.clients.lab.daemons import start_daemons
from skyge.clients.lab.etcd import members_of, start_etcd
from skyge.services.lock.sim import Record, check_history
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_pb2_grpc, lock_peer_pb2, lock_peer_pb2_grpc
from tests.cluster import heartbeat_support as hs

__all__ = [
    "Client",
    "Fence",
    "Record",
    "authority",
    "check_history",
    "cli",
    "inspect",
    "peer_state",
    "seed_lock_test",
    "spawn_keeper",
    "start_cluster",
    "start_lock",
    "wait_etcd_ready",
    "wait_ready",
]

READY_TIMEOUT = 20.0


def target(node: LabNode) -> str:
    return f"unix:{node.root}/run/skyge/lock.sock"


def start_lock(node: LabNode, *, log_level: str = "LOG_INFO") -> None:
    start_daemons(node, ["lock"], extra_args=("-l", log_level))


def peer_state(node: LabNode) -> lock_peer_pb2.PeerState:
    with grpc.insecure_channel(target(node)) as channel:
        return lock_peer_pb2_grpc.LockPeerStub(channel).GetPeerState(
            lock_peer_pb2.GetPeerStateRequest(), timeout=5)


def authority(node: LabNode) -> lp.AuthorityInfo:
    with grpc.insecure_channel(target(node)) as channel:
        return lock_pb2_grpc.LockStub(channel).GetAuthority(lp.GetAuthorityRequest(), timeout=5)


def wait_ready(nodes: Iterable[LabNode], timeout: float = READY_TIMEOUT) -> int:
    """Every node follows one active authority and holds a hold lease; returns its domain."""
    nodes = list(nodes)

    def check() -> int | str:
        states = {n.id: peer_state(n) for n in nodes}
        authorities = {s.authority for s in states.values()}
        if len(authorities) != 1 or 0 in authorities:
            return f"authorities {authorities}"
        if any(s.hold_lease_left_ms <= 0 for s in states.values()):
            return "hold leases " + str({d: round(s.hold_lease_left_ms, 1)
                                         for d, s in states.items()})
        leader = authorities.pop()
        if leader in states and not states[leader].active:
            return "authority not active yet"
        return leader

    return hs.wait_for("an active lock authority followed by every node", check, timeout, 0.05)


def wait_etcd_ready(nodes: Iterable[LabNode], timeout: float = READY_TIMEOUT) -> None:
    """Every node's lock daemon (backend etcd) holds a confirmed etcd lease."""
    nodes = list(nodes)

    def check() -> bool | str:
        without = [n.key for n in nodes if not authority(n).has_quorum]
        return f"no confirmed lease on {without}" if without else True

    hs.wait_for("a confirmed etcd lease on every node", check, timeout, 0.05)


def start_cluster(lab: Lab, nodes: Sequence[LabNode] | None = None, *, expected: int | None = None,
                  reference_ips: str | None = None, heartbeat: bool = True,
                  backend: str = "builtin", **config: Any) -> int:
    """Heartbeat (optional) and lock daemons on `nodes`; returns the authority's domain. With
    `backend` "etcd" the locks are kept in the lab's etcd, one member per node of `nodes`
    (started unless the lab runs one), and it returns 0 (etcd is the authority)."""
    nodes = list(nodes if nodes is not None else lab.nodes)
    if heartbeat:
        hs.start_cluster(lab, nodes)
    if backend == "etcd" and not members_of(lab):
        start_etcd(lab, nodes)
    for node in nodes:
        write_lock_config(node, {
            "expected_nodes": expected if expected is not None else len(lab.nodes),
            "reference_ips": reference_ips, **config}, backend=backend,
            etcd_members=members_of(lab) if backend == "etcd" else None)
        start_lock(node)
    if backend == "etcd":
        wait_etcd_ready(nodes)
        return 0
    return wait_ready(nodes)


def cli(node: LabNode, *args: str, timeout: float = 30.0) -> Any:
    return node.run([sys.executable, "-m", "skyge.clients.cli.main", *args], timeout=timeout)


def _text(node: LabNode, name: str) -> str:
    path = node.root / "var" / "log" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def seed_lock_test(lab: Lab, slot: int = 600, lock: int = 100, name: str = "locktest") -> list[int]:
    """The seed's test_d_lock on a cluster whose lock daemons run: three consoles on three
    nodes run `skyge lock test -s SLOT -l LOCK` (a fifo slot); exactly one prints "<pid> process
    get lock", and Ctrl+C hands it to the next in arrival order. Returns the tokens, in grant
    order (asserted growing). `name` labels the consoles' processes and logs."""
    procs = []
    for node in lab.nodes:
        proc = node.spawn([sys.executable, "-m", "skyge.clients.cli.main", "lock", "test",
                           "-s", str(slot), "-l", str(lock)], name=name)
        procs.append((node, proc))
        hs.wait_for(f"{node.key} in the queue", lambda n=node: "process" in _text(n, name), 10)
    holders = [n for n, _ in procs if "process get lock" in _text(n, name)]
    assert [n.key for n in holders] == [lab.nodes[0].key], \
        {n.key: _text(n, name) for n, _ in procs}
    shown = cli(lab.nodes[1], "--output", "json", "lock", "inspect", "-s", str(slot), "-l",
                str(lock))
    assert shown.returncode == 0, shown.stderr
    assert '"order": "WAIT_FIFO"' in shown.stdout and shown.stdout.count("session_id") == 3
    tokens = []
    for index, (node, proc) in enumerate(procs):
        line = next(text for text in _text(node, name).splitlines()
                    if "process get lock" in text)
        assert line.startswith(f"{proc.pid} process get lock")  # pid as the seed prints it
        tokens.append(int(line.rsplit("token ", 1)[1].rstrip(")")))
        node.kill(proc.pid, signal.SIGINT, wait=10)  # Ctrl+C
        assert f"released lock {slot}/{lock}" in _text(node, name)
        if index + 1 < len(procs):
            after = procs[index + 1][0]
            hs.wait_for(f"{after.key} gets the lock",
                        lambda a=after: "process get lock" in _text(a, name), 5)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3, tokens
    return tokens


def inspect(node: LabNode, slot: int, lock: int) -> lp.LockState:
    with grpc.insecure_channel(target(node)) as channel:
        return lock_pb2_grpc.LockStub(channel).Inspect(lp.InspectRequest(slot=slot, lock=lock),
                                                       timeout=5)


#: a client process that opens a keep_holds session, takes one lock and keeps it until killed;
#: prints "opened SESSION" and "granted TOKEN"
KEEPER = """
import os, sys, time
import grpc
from skyge.v1 import lock_pb2 as lp, lock_pb2_grpc
target, label, slot, lock = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def requests():
    yield lp.SessionRequest(open=lp.Open(label=label, client_pid=os.getpid(), keep_holds=True))
    yield lp.SessionRequest(acquire=lp.Acquire(slot=slot, lock=lock))
    time.sleep(3600)

with grpc.insecure_channel(target) as channel:
    for event in lock_pb2_grpc.LockStub(channel).Session(requests()):
        if event.HasField("opened"):
            print("opened", event.opened.session_id, flush=True)
        elif event.HasField("granted"):
            print("granted", event.granted.fencing_token, flush=True)
"""


def spawn_keeper(node: LabNode, label: str, slot: int, lock: int) -> tuple[int, int, int]:
    """A client process on `node` holding (slot, lock) in a keep_holds session labelled
    `label`; returns (its pid, its session id, its token) once granted."""
    log = node.root / "var" / "log" / "keeper.log"
    proc = node.spawn([sys.executable, "-c", KEEPER, target(node), label, str(slot), str(lock)],
                      name="keeper", log_path=log)

    def granted() -> tuple[int, int] | str:
        lines = dict(line.split() for line in log.read_text().splitlines()
                     if line.startswith(("opened ", "granted "))) if log.exists() else {}
        if "granted" in lines:
            return int(lines["opened"]), int(lines["granted"])
        return f"log: {log.read_text() if log.exists() else '-'}"

    session, token = hs.wait_for(f"{node.key}: the keeper's grant", granted, 10, 0.02)
    return proc.pid, session, token


class Fence:
    """A fence command for lock.cfg: appends "DOMAIN WALL_NS" to a file under the lab root and
    exits 0, or, while `failing`, says so and exits 1."""

    def __init__(self, lab: Lab, *, failing: bool = False) -> None:
        self.log = lab.root / "fenced"
        self.allowed = lab.root / "fence-works"
        script = lab.root / "fence.sh"
        script.write_text(f"""#!/bin/sh
if [ ! -e {self.allowed} ]; then
    echo "no power switch answers for node $SKYGE_FENCE_DOMAIN"
    exit 1
fi
echo "$SKYGE_FENCE_DOMAIN $(date +%s%N)" >> {self.log}
""")
        self.command = f"sh {script}"
        if not failing:
            self.allowed.touch()

    def works(self) -> None:
        self.allowed.touch()

    def fenced(self) -> list[tuple[int, int]]:
        """(domain, wall-clock ns) of every successful fence, in order."""
        if not self.log.exists():
            return []
        return [(int(d), int(t)) for d, t in (line.split() for line in
                                              self.log.read_text().splitlines())]


@dataclass
class Event:
    time: int  # monotonic ns when received
    kind: str
    message: Any


@dataclass
class Client:
    """One lock session on a node, from the test process. Events are read by a thread."""

    node: LabNode
    label: str = ""
    events: list[Event] = field(default_factory=list)
    records: list[Record] | None = None  # a shared history to append to
    session: int = 0
    keep_holds: bool = False
    opened: Any = None  # the Opened message

    def __post_init__(self) -> None:
        # a private subchannel pool: a shared one would keep the backoff of a connection to a
        # killed daemon and fail this new session at once
        self._channel = grpc.insecure_channel(target(self.node),
                                              options=[("grpc.use_local_subchannel_pool", 1)])
        self._requests: queue.Queue[lp.SessionRequest | None] = queue.Queue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.ended = False
        self.error = ""
        label = self.label or f"test@{self.node.key}"
        self._requests.put(lp.SessionRequest(open=lp.Open(label=label, client_pid=0,
                                                          keep_holds=self.keep_holds)))
        self._call = lock_pb2_grpc.LockStub(self._channel).Session(self._iterate(),
                                                                   wait_for_ready=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.opened = self.wait("opened", timeout=10).message
        self.session = self.opened.session_id

    def _iterate(self) -> Any:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _read(self) -> None:
        try:
            for event in self._call:
                now = time.monotonic_ns()
                kind = event.WhichOneof("event")
                body = getattr(event, kind)
                with self._changed:
                    self.events.append(Event(now, kind, body))
                    if self.records is not None and kind in ("granted", "lost", "failed", "queued"):
                        self.records.append(Record(now, self.node.id, self.session, kind,
                                                   (body.slot, body.lock),
                                                   getattr(body, "fencing_token", 0),
                                                   getattr(body, "reason", 0)))
                    self._changed.notify_all()
        except grpc.RpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
        finally:
            now = time.monotonic_ns()
            with self._changed:
                self.ended = True
                if self.records is not None and self.session:
                    self.records.append(Record(now, self.node.id, self.session, "ended"))
                self._changed.notify_all()

    def acquire(self, slot: int, lock: int, **kwargs: Any) -> int:
        """Send an acquire; returns the send time."""
        now = time.monotonic_ns()
        self._requests.put(lp.SessionRequest(acquire=lp.Acquire(slot=slot, lock=lock, **kwargs)))
        return now

    def release(self, slot: int, lock: int) -> int:
        """Send a release (recorded as the end of the hold at send time); returns that time."""
        now = time.monotonic_ns()
        if self.records is not None:
            with self._lock:
                self.records.append(Record(now, self.node.id, self.session, "releasing",
                                           (slot, lock)))
        self._requests.put(lp.SessionRequest(release=lp.Release(slot=slot, lock=lock)))
        return now

    def of(self, kind: str, after: int = 0) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind and e.time >= after]

    def wait(self, kind: str, timeout: float = 10.0, after: int = 0) -> Event:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [e for e in self.events if e.kind == kind and e.time >= after]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    raise AssertionError(f"{self.node.key} session {self.session:x}: no {kind!r} "
                                         f"within {timeout:g} s (events: "
                                         f"{[e.kind for e in self.events]}, ended {self.ended} "
                                         f"{self.error})")
                self._changed.wait(min(left, 0.05))

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._thread.join(5)
        self._channel.close()
