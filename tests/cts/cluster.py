"""The CTS cluster: a lab with the real daemons and the CTS service, driven by the harness.

`CtsCluster.up` builds an N-node lab, configures heartbeat (two paths, a cluster key), lock
(``expected_nodes`` = N; with ``backend="etcd"`` the locks are in an etcd of one member per node,
`skyge.clients.lab.etcd`, whose member a booted node starts again before its daemons, as a
node's systemd would) and HA (`tests.cts.service`), starts heartbeat, bus, lock and HA on
every node (n1 first, so fifo order starts as n1, n2, n3), waits until the service runs with
every other node queued (the *baseline*), then starts the prober in the client namespace.

Every fault and operation goes through a method here that also writes it to the record, so the
checker sees what the harness did, in one time line with the service script's lines. The harness
plays systemd: a stopped or killed daemon stays down until a scenario starts it again.

`restore_baseline` is the safety net between scenarios (thaw, heal, restore cables, boot, start
missing daemons, requeue failed nodes, and check that exactly one copy runs, on the node the HA
daemons name); when that is not enough, `hard_reset` stops everything, stops leftover copies with
the service's own script and starts the cluster again.
"""
from __future__ import annotations

import contextlib
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import TypeVar
from collections.abc import Callable, Iterable, Iterator, Sequence

import grpc

from skyge.clients.lab import GATEWAY_IPS, Lab, LabError, LabNode
from skyge.clients.lab.daemons import is_serving, start_daemons, stop_daemons, wait_serving
from skyge.clients.lab.configs import configure_heartbeat, write_lock_config
from skyge.clients.lab.etcd import SPAWN_NAME as ETCD_NAME
from skyge.clients.lab.etcd import members_of, start_etcd, start_member
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, Prober, ha_call, placement, service_status,
                                    wait_members)
from skyge.services.ha.supervisor import LOCK_SLOTS, parse_label
from skyge.services.heartbeat.config import DEFAULT_PORT as HEARTBEAT_PORT
from skyge.v1 import ha_pb2 as pb, lock_pb2, lock_pb2_grpc
from tests.cluster import lock_support
from tests.cts import checker, service
from tests.cts.record import Event, Record

__all__ = [
    "CONSISTENT_WITHIN_S",
    "LOG_ARGS",
    "CtsCluster",
    "Placement",
    "ScenarioFailed",
    "poll_until",
]

LOG_ARGS = ("-l", "LOG_INFO")
POLL_S = 0.1
BASELINE_TIMEOUT_S = 30.0
#: the record and the HA daemons agree on where the service runs within this long
CONSISTENT_WITHIN_S = 5.0
#: the HA daemons shut down first, so each stops its services while the lock still works
STOP_ORDER = ("ha", "lock", "bus", "heartbeat")
#: etcd backend, default lease TTL (2 s) + a leader election and the lease extension after it
#: (the lab's election timeout, 0.5 s, twice) + etcd's expiry scan (0.5 s)
ETCD_PASS_ON_S = 3.5
PROBE_CONNECT_TIMEOUT_S = 0.2
PROBE_PAUSE_S = 0.05
#: a connection a frozen node's kernel accepted gets no answer: give up after this long
PROBE_ANSWER_TIMEOUT_S = 0.1
QUEUED_STATES = ("SERVICE_WAITING", "SERVICE_STARTING", "SERVICE_RUNNING")
Placement = tuple[str, int, list[int]]  # (state, active domain, waiting domains): demo.placement


class ScenarioFailed(Exception):
    """A scenario could not reach a state it waits for within its bound."""


T = TypeVar("T")


def poll_until(probe: Callable[[], T], timeout: float, failure: Callable[[], str]) -> T:
    """`probe()` every POLL_S until it returns something true; ScenarioFailed(failure()) after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        if time.monotonic() >= deadline:
            raise ScenarioFailed(failure())
        time.sleep(POLL_S)
    return found


class CtsCluster:
    def __init__(self, lab: Lab, files: service.ServiceFiles, backend: str = "builtin") -> None:
        self.lab = lab
        self.files = files
        self.backend = backend
        #: what the backend adds to a failover without fencing (docs/ARCHITECTURE.md, etcd
        #: backend): a lost node's locks pass on when its etcd lease expires, and a lost etcd
        #: leader costs an election, after which the new leader extends every lease
        self.lease_pass_on_s = ETCD_PASS_ON_S if backend == "etcd" else 0.0
        self.record = Record(files.record)
        self.prober: Prober | None = None
        #: when the prober started: availability is measured from here
        self.measured_from_ns = 0
        #: nodes with both cables cut; the node alone in a partition
        self._unplugged: set[int] = set()
        self._partitioned: set[int] = set()

    # -- life ---------------------------------------------------------------------------------
    @classmethod
    def up(cls, nodes: int = 3, name: str | None = None, backend: str = "builtin") -> CtsCluster:
        lab = Lab.up(nodes=nodes, name=name or f"cts{uuid.uuid4().hex[:6]}")
        try:
            configure_heartbeat(lab)
            if backend == "etcd":
                start_etcd(lab)
            for node in lab.nodes:  # the reference IPs give a lone node of two its quorum
                write_lock_config(node, {"expected_nodes": nodes} if backend == "etcd" else
                                  {"expected_nodes": nodes,
                                   "reference_ips": ":".join(GATEWAY_IPS)}, backend=backend)
            cluster = cls(lab, service.install(lab), backend)
            cluster.record.note("setup", f"{nodes} nodes, {backend} lock backend")
            cluster.start_cluster()
            cluster.prober = Prober(lab, timeout_s=PROBE_CONNECT_TIMEOUT_S,
                                    pause_s=PROBE_PAUSE_S, name="cts-prober",
                                    answer_timeout_s=PROBE_ANSWER_TIMEOUT_S)
            cluster.measured_from_ns = cluster.record.note("measure", "begin")
            return cluster
        except BaseException:
            lab.down()
            raise

    def down(self) -> None:
        if self.prober is not None:
            self.prober.stop()
        self.lab.down()

    def save(self, folder: Path) -> None:
        """Copy the evidence out of the lab (it goes with the lab): the record, the prober's log,
        every host's logs (daemons, and the service script's under skyge/ha/)."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.record.path, folder / self.record.path.name)
        if self.prober is not None and self.prober.log.exists():
            shutil.copy2(self.prober.log, folder / self.prober.log.name)
        self.lab.save_logs(folder)

    def start_cluster(self) -> None:
        """Membership and locks on every node, then HA in node order; wait for the baseline."""
        for node in self.lab.nodes:
            self.start_daemons(node, CLUSTER_DAEMONS[:-1])
        wait_members(self.lab.node(1), self.lab.size)
        for node in self.lab.nodes:
            self.start_daemons(node, ("ha",))
        self.wait_baseline()

    # -- observing ----------------------------------------------------------------------------
    def node(self, ident: int | str) -> LabNode:
        return self.lab.node(ident)

    def ids(self) -> list[int]:
        return [n.id for n in self.lab.nodes]

    @property
    def quorum(self) -> int:
        """Nodes needed to run the service: a majority; one of two (it reaches the gateway)."""
        return 1 if self.lab.size == 2 else self.lab.size // 2 + 1

    @property
    def cut_off(self) -> set[int]:
        """Nodes that cannot reach the others (both cables cut, or alone in a partition)."""
        return self._unplugged | self._partitioned

    def observer(self) -> LabNode | None:
        """A node that can tell where the service runs: up, thawed, connected, HA serving."""
        for node in self.lab.nodes:
            if node.id not in self.cut_off and not node.crashed and not node.frozen and \
                    is_serving(node, "ha", 0.5):
                return node
        return None

    def placement(self, via: LabNode | None = None) -> Placement | None:
        node = via or self.observer()
        return placement(node, service.SERVICE_TYPE, service.SERVICE_SLOT) if node else None

    def lock_queue(self, via: LabNode) -> tuple[int, list[int]] | None:
        """(holder, waiters) of the service's lock in the lock table, asked through `via`."""
        key = (service.SERVICE_TYPE, service.SERVICE_SLOT)
        try:
            with grpc.insecure_channel(lock_support.target(via)) as channel:
                reply = lock_pb2_grpc.LockStub(channel).ListLocks(
                    lock_pb2.ListLocksRequest(slot=LOCK_SLOTS[key[0]]), timeout=2)
        except grpc.RpcError:
            return None
        lock = next((lock for lock in reply.locks if lock.lock == key[1]), None)
        if lock is None:
            return 0, []
        holder = (lock.holder.node.domain if lock.HasField("holder") and
                  parse_label(lock.holder.label) == key else 0)
        return holder, [w.node.domain for w in lock.waiters if parse_label(w.label) == key]

    def wait_placement(self, expected: Callable[[Placement], bool], what: str,
                       timeout: float) -> Placement:
        seen: list[Placement | None] = [None]

        def reached() -> Placement | None:
            seen[0] = self.placement() or seen[0]
            return seen[0] if seen[0] is not None and expected(seen[0]) else None
        return poll_until(reached, timeout, lambda: f"{what} not reached in {timeout:g} s; last "
                                                    f"seen (state, active, waiting) = {seen[0]}")

    def wait_running_on(self, nodes: Iterable[int], timeout: float) -> Placement:
        allowed = set(nodes)
        return self.wait_placement(lambda p: p[0] == "running" and p[1] in allowed,
                                   f"running on {sorted(allowed)}", timeout)

    def wait_baseline(self, timeout: float = BASELINE_TIMEOUT_S) -> tuple[int, list[int]]:
        """Until the service runs with every other node queued, as both the HA daemons and the
        lock table say (an HA daemon whose lock daemon does not answer lists its waiters in
        domain order, not in takeover order); returns (active, waiting)."""
        others = self.lab.size - 1
        seen: list[object] = [None]

        def settled() -> tuple[int, list[int]] | None:
            via = self.observer()
            found = self.placement(via) if via else None
            queue = self.lock_queue(via) if found else None
            seen[0] = (found, queue)
            if found and found[0] == "running" and len(found[2]) == others and \
                    queue == (found[1], found[2]):
                return found[1], found[2]
            return None
        return poll_until(settled, timeout, lambda: f"running with {others} node(s) waiting not "
                          f"reached in {timeout:g} s; last seen (placement, lock queue) = "
                          f"{seen[0]}")

    def intervals(self) -> list[checker.Interval]:
        return checker.copies(self.record.events(), time.time_ns())

    def copies_running(self) -> set[str]:
        """Nodes whose copy of the service runs now, according to the record."""
        return checker.running_nodes(self.intervals())

    def wait_record(self, match: Callable[[Event], bool], what: str, timeout: float,
                    since_ns: int) -> Event:
        """The first record line since `since_ns` that matches, waiting up to `timeout`."""
        return poll_until(lambda: next((e for e in self.record.events(since_ns) if match(e)), None),
                          timeout, lambda: f"{what}: not in the record {timeout:g} s later")

    def wait_copies(self, expected: set[str], timeout: float) -> None:
        """Until the nodes whose copy runs (record) are exactly `expected`."""
        poll_until(lambda: self.copies_running() == expected, timeout,
                   lambda: f"copies running on {sorted(self.copies_running()) or 'no node'}, "
                           f"expected {sorted(expected) or 'none'}, {timeout:g} s later")

    def wait_copy_stopped(self, node: LabNode, timeout: float) -> None:
        poll_until(lambda: node.key not in self.copies_running(), timeout,
                   lambda: f"{node.key} still runs its copy {timeout:g} s later")

    def probes(self) -> list[checker.Probe]:
        return self.prober.attempts() if self.prober else []

    # -- operations (each written to the record) -----------------------------------------------
    def start_daemons(self, node: LabNode, daemons: Sequence[str] = CLUSTER_DAEMONS) -> int:
        stamp = self.record.note("start-daemons", node.key, ",".join(daemons))
        start_daemons(node, daemons, extra_args=LOG_ARGS)
        return stamp

    def stop_daemons(self, node: LabNode) -> int:
        """SIGTERM every daemon of the node (HA first), as `systemctl stop`."""
        stamp = self.record.note("stop-daemons", node.key)
        stop_daemons(node, STOP_ORDER)
        return stamp

    def start_nodes_together(self, nodes: Sequence[LabNode]) -> int:
        """Start every daemon of every node at once, then wait until they all serve."""
        stamp = self.record.note("start-together", *(n.key for n in nodes))
        for node in nodes:
            start_daemons(node, CLUSTER_DAEMONS, extra_args=LOG_ARGS, wait=False)
        for node in nodes:
            wait_serving(node, CLUSTER_DAEMONS)
        return stamp

    def stop_nodes_together(self, nodes: Sequence[LabNode], timeout: float = 15.0, *,
                            force: bool = False) -> int:
        """SIGTERM every HA daemon at once, then every other daemon at once; with `force`,
        SIGKILL what is still running after `timeout` instead of failing."""
        stamp = self.record.note("stop-together", *(n.key for n in nodes))
        for group in (STOP_ORDER[:1], STOP_ORDER[1:]):
            names = [f"skyge-{d}" for d in group]
            for node in nodes:
                for name in names:
                    if node.find(name):
                        node.kill(name, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while left := [(node, name) for node in nodes for name in names if node.find(name)]:
                if time.monotonic() >= deadline:
                    if not force:
                        raise ScenarioFailed(f"{', '.join(names)} still running {timeout:g} s "
                                             f"after SIGTERM")
                    for node, name in left:
                        node.kill(name)
                time.sleep(POLL_S)
        return stamp

    def kill_daemon(self, node: LabNode, daemon: str) -> int:
        node.kill(f"skyge-{daemon}")  # SIGKILL, returns once it is gone
        return self.record.note("kill", node.key, daemon)

    def crash(self, node: LabNode) -> int:
        stamp = self.record.note("crash", node.key)
        node.crash()
        return stamp

    def boot(self, node: LabNode) -> int:
        """Power on and start every daemon (systemd at boot)."""
        stamp = self._power_on(node)
        self.start_daemons(node)
        return stamp

    def _power_on(self, node: LabNode) -> int:
        """Boot a crashed node, and start its etcd member (with the etcd backend)."""
        node.boot()
        stamp = self.record.note("boot", node.key)
        self._start_etcd_member(node)
        return stamp

    def _start_etcd_member(self, node: LabNode) -> None:
        if self.backend == "etcd" and not node.find(ETCD_NAME):
            start_member(node, members_of(self.lab))

    def freeze(self, node: LabNode) -> int:
        node.freeze()
        return self.record.note("freeze", node.key)  # every process is stopped by now

    def thaw(self, node: LabNode) -> int:
        stamp = self.record.note("thaw", node.key)  # they may run from here on
        node.thaw()
        return stamp

    def cut(self, node: LabNode, nics: Sequence[str]) -> int:
        for nic in nics:
            node.cut(nic)
        if set(nics) == set(node.nics):
            self._unplugged.add(node.id)
        return self.record.note("cut", node.key, *nics)

    def restore(self, node: LabNode, nics: Sequence[str]) -> int:
        stamp = self.record.note("restore", node.key, *nics)
        for nic in nics:
            node.restore(nic)
        self._unplugged.discard(node.id)
        return stamp

    def mute_heartbeat(self, node: LabNode, seconds: float) -> int:
        """The node's heartbeat daemon hears nothing for `seconds` (its inbound heartbeat
        datagrams are dropped; everything else flows): its view shrinks to itself for a moment,
        as a stall of that daemon under load does. Returns when the fault began."""
        table = "inet cts_mute"
        script = (f"nft -f - <<'EOF'\ntable {table} {{\n chain input {{\n  type filter hook "
                  f"input priority -10; policy accept;\n  udp dport {HEARTBEAT_PORT} drop\n }}\n"
                  f"}}\nEOF\nsleep {seconds:g}; nft delete table {table}")
        stamp = self.record.note("mute-heartbeat", node.key, f"{seconds:g} s")
        try:
            node.run(["sh", "-c", script], check=True, timeout=seconds + 10)
        except BaseException:
            node.run(["nft", "delete", "table", *table.split()])
            raise
        self.record.note("unmute-heartbeat", node.key)
        return stamp

    def lock_authority(self, via: LabNode) -> int:
        """The domain of the lock authority as `via` sees it (0: none)."""
        return lock_support.authority(via).authority.domain

    def partition(self, alone: LabNode) -> int:
        """`alone` on one side, every other node (with the gateway and the client) on the other."""
        self.lab.partition([[alone.id]], gateway=1)
        self._partitioned = {alone.id}
        return self.record.note("partition", alone.key,
                                ",".join(n.key for n in self.lab.nodes if n is not alone))

    def heal(self) -> int:
        stamp = self.record.note("heal")
        self.lab.heal()
        self._partitioned.clear()
        return stamp

    def kill_server(self, node: LabNode) -> int:
        """kill -9 the service's server process on the node."""
        pid = self.files.server_pid(node)
        if pid is None:
            raise ScenarioFailed(f"{node.key} has no server pid file")
        node.kill(pid)  # SIGKILL, returns once it is gone
        return self.record.note("kill-server", node.key, pid)

    def stop_pulser(self, node: LabNode) -> int:
        """SIGSTOP the service's pulser on the node: the service runs on, its pulses stop."""
        pid = self.files.pulser_pid(node)
        if pid is None:
            raise ScenarioFailed(f"{node.key} has no pulser pid file")
        node.kill(pid, signal.SIGSTOP)
        return self.record.note("stop-pulser", node.key, pid)

    def set_fault(self, node: LabNode, fault: str, on: bool = True) -> int:
        """Make the service script misbehave on the node (see `service`), or stop it doing so."""
        marker = self.files.fault_marker(node, fault)
        if on:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)
        return self.record.note("fault", node.key, fault, "on" if on else "off")

    def command(self, action: int, domain: int) -> int:
        """An Ha.Command for the service (`domain` 0 = wherever it runs, for a switch)."""
        via = self.observer()
        if via is None:
            raise ScenarioFailed("no HA daemon to send the command to")
        stamp = self.record.note("command", pb.Action.Name(action), domain)
        ha_call(via, "Command", pb.CommandRequest(
            domain=domain, type=pb.TAKEOVER_FIFO, slot=service.SERVICE_SLOT, action=action))
        return stamp

    @contextlib.contextmanager
    def expect_down(self, reason: str) -> Iterator[None]:
        """A window in which the scenario leaves no eligible node (not counted as expected)."""
        self.record.note("expect-down", "begin", reason)
        try:
            yield
        finally:
            self.record.note("expect-down", "end")

    # -- between scenarios ----------------------------------------------------------------------
    def restore_baseline(self) -> str | None:
        """Back to every node up and queued, one copy running; when repairs are not enough, a
        hard reset, and the reason it was needed is returned."""
        try:
            self._repair()
            active, _ = self.wait_baseline()
            self.wait_copies({f"n{active}"}, CONSISTENT_WITHIN_S)
            return None
        except (ScenarioFailed, LabError, grpc.RpcError) as error:
            self.record.note("restore-failed")
            self.hard_reset()
            return f"{type(error).__name__}: {error}"

    def _clear_faults(self) -> None:
        """Thaw every node, stop every script fault, heal the network (crashed nodes stay)."""
        for node in self.lab.nodes:
            if node.frozen:
                self.thaw(node)
            for marker in (self.files.folder / "faults" / node.key).iterdir():
                self.set_fault(node, marker.name, on=False)
        self.record.note("clear-network-faults")
        self.lab.clear_faults()
        self._unplugged.clear()
        self._partitioned.clear()

    def _repair(self) -> None:
        self._clear_faults()
        for node in self.lab.nodes:
            if node.crashed:
                self.boot(node)
            self._start_etcd_member(node)
            missing = [d for d in CLUSTER_DAEMONS if not is_serving(node, d)]
            for daemon in missing:
                if node.find(f"skyge-{daemon}"):
                    self.kill_daemon(node, daemon)  # alive but not serving: systemd's watchdog
            if missing:
                self.start_daemons(node, missing)
        try:
            self.wait_baseline(timeout=service.FAILURE_BACKOFF_MAX_S + 2)
        except ScenarioFailed:
            self.requeue_idle_nodes()

    def requeue_idle_nodes(self) -> None:
        """START the service on nodes that neither run nor wait for it (failed, stopped)."""
        via = self.observer()
        status = service_status(via, service.SERVICE_TYPE, service.SERVICE_SLOT) if via else None
        if status is None:
            raise ScenarioFailed("no HA daemon reports the service")
        for node_status in status.nodes:
            if pb.ServiceState.Name(node_status.state) not in QUEUED_STATES:
                self.command(pb.ACTION_START, node_status.domain)

    def hard_reset(self) -> None:
        """Stop every daemon, stop leftover copies with the service script, start again."""
        with self.expect_down("hard reset by the harness"):
            self.record.note("hard-reset")
            self._clear_faults()
            for node in self.lab.nodes:
                if node.crashed:
                    self._power_on(node)
                else:
                    self._start_etcd_member(node)
            self.stop_nodes_together(self.lab.nodes, force=True)
            for node in self.lab.nodes:
                node.run([str(self.files.script), "stop"], timeout=30,
                         env={"SKYGE_DOMAIN": str(node.id), "SKYGE_FENCING_TOKEN": "0"})
                node.run(["ip", "addr", "del", f"{service.VIP}/24", "dev", "eth0"], timeout=10)
            self.start_cluster()
