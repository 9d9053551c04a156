"""The scenarios: each sets up its preconditions, injects one fault, waits (bounded) for the
cluster to recover, and returns what it expects (`Expect`); `tests.cts.runner` checks that.

Every scenario starts from the baseline (service running on `active`, every other node queued in
`waiting`, next first) and ends there again.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from collections.abc import Callable

import grpc

from skyge.clients.lab import LabNode
from skyge.clients.lab.demo import ha_call
from skyge.v1 import ha_pb2 as pb
from tests.cts import service
from tests.cts.cluster import CtsCluster, ScenarioFailed

__all__ = ["MAX_GAP_S", "SCENARIOS", "Expect", "Scenario"]

#: longest client outage allowed where the service must stay where it is
MAX_GAP_S = 1.0
#: answer from the next node this soon after a fault that moves the service
FAILOVER_S = 5.0
#: the harness restarts a killed daemon after this long (systemd Restart=on-failure, RestartSec=1)
RESTART_SEC = 1.0
#: a cut cable stays cut this long (long enough for any wrong failover to show)
HOLD_S = 3.0
#: the pidfile watch must see the server's death within this long (not at the next status check)
DEATH_SEEN_S = 0.5
#: the node isolated by its cables runs its isolation script within this long
ISOLATION_SEEN_S = 10.0
#: bound of each wait for the service, or a copy of it, to reach its next state
NEXT_TO_RUN_S = 10.0


@dataclass
class Expect:
    """What a scenario expects; the runner checks it."""

    #: nodes (ids) the service must run on at the end
    runs_on: set[int]
    #: when the fault that matters was injected (ns since the epoch)
    fault_ns: int
    #: the client gets an answer from one of `runs_on` within this long after the fault
    answer_within_s: float = FAILOVER_S
    #: the longest client outage allowed during the scenario (None: not checked)
    max_gap_s: float | None = None
    #: what the scenario itself found wrong
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[CtsCluster, random.Random], Expect]
    #: the scenario fails when it takes longer than this, s (every wait in it is bounded)
    limit_s: float
    min_nodes: int = 2

    @property
    def summary(self) -> str:
        """The first paragraph of its docstring, on one line."""
        return " ".join((self.run.__doc__ or "").strip().split("\n\n")[0].split())


SCENARIOS: dict[str, Scenario] = {}


def scenario(limit_s: float, *, min_nodes: int = 2,
             name: str | None = None) -> Callable:
    def register(run: Callable[[CtsCluster, random.Random], Expect]) -> Callable:
        key = name or run.__name__
        SCENARIOS[key] = Scenario(key, run, limit_s, min_nodes)
        return run
    return register


# --- whole nodes ---------------------------------------------------------------------------------
@scenario(90)
def stop_one_by_one(c: CtsCluster, rng: random.Random) -> Expect:
    """Stop every node's daemons (SIGTERM) one at a time in random order; then start them again.

    Each stop that leaves a quorum hands the service to a node still up; from the first stop that
    does not, no node is eligible (not expected available) until a quorum runs again."""
    order = rng.sample(c.ids(), c.lab.size)
    keeps_quorum = c.lab.size - c.quorum  # the first stops, each leaving a quorum up
    for index, node_id in enumerate(order[:keeps_quorum]):
        c.stop_daemons(c.node(node_id))
        c.wait_running_on(order[index + 1:], NEXT_TO_RUN_S)
    with c.expect_down("fewer nodes up than a quorum"):
        for node_id in order[keeps_quorum:]:
            c.stop_daemons(c.node(node_id))
        c.wait_copies(set(), NEXT_TO_RUN_S)
        restarted = c.start_daemons(c.node(order[0]))
        for node_id in order[1:c.quorum]:
            c.start_daemons(c.node(node_id))
    for node_id in order[c.quorum:]:
        c.start_daemons(c.node(node_id))
    c.wait_baseline()
    return Expect(set(c.ids()), restarted, answer_within_s=15)


@scenario(60)
def start_together(c: CtsCluster, rng: random.Random) -> Expect:
    """Stop every node at once, then start every daemon of every node at the same time."""
    with c.expect_down("every node stopped"):
        c.stop_nodes_together(c.lab.nodes)
        c.wait_copies(set(), NEXT_TO_RUN_S)
        started = c.start_nodes_together(c.lab.nodes)
    c.wait_baseline()
    return Expect(set(c.ids()), started, answer_within_s=15)


@scenario(45)
def restart_active(c: CtsCluster, rng: random.Random) -> Expect:
    """Stop the active node's daemons (SIGTERM) and start them again: the next waiter takes over."""
    active, waiting = c.wait_baseline()
    stopped = c.stop_daemons(c.node(active))
    c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
    c.start_daemons(c.node(active))
    c.wait_baseline()
    return Expect({waiting[0]}, stopped)


def _backup_away(c: CtsCluster, rng: random.Random, away: Callable[[LabNode], int],
                 back: Callable[[LabNode], object]) -> Expect:
    """A backup goes away (`away` returns the fault's time) and comes back: it leaves the queue
    and joins it again; the service stays where it is."""
    active, waiting = c.wait_baseline()
    backup = c.node(rng.choice(waiting))
    fault = away(backup)
    c.wait_placement(lambda p: p[0] == "running" and backup.id not in p[2],
                     f"{backup.key} out of the queue", NEXT_TO_RUN_S)
    back(backup)
    c.wait_baseline()
    return Expect({active}, fault, max_gap_s=MAX_GAP_S)


@scenario(45)
def flip_backup(c: CtsCluster, rng: random.Random) -> Expect:
    """Stop a backup's daemons and start them again: the service stays where it is."""
    return _backup_away(c, rng, c.stop_daemons, c.start_daemons)


@scenario(45)
def crash_active(c: CtsCluster, rng: random.Random) -> Expect:
    """Power off the active node; boot it and start its daemons once the next waiter runs it."""
    active, waiting = c.wait_baseline()
    crashed = c.crash(c.node(active))
    c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
    c.boot(c.node(active))
    c.wait_baseline()
    return Expect({waiting[0]}, crashed)


@scenario(45)
def crash_backup(c: CtsCluster, rng: random.Random) -> Expect:
    """Power off a backup, then boot it: the service stays where it is."""
    return _backup_away(c, rng, c.crash, c.boot)


# --- network --------------------------------------------------------------------------------------
@scenario(45)
def cut_one_nic_of_active(c: CtsCluster, rng: random.Random) -> Expect:
    """Cut the active node's private cable (eth1) for 3 s: one path is left, nothing moves."""
    active, _ = c.wait_baseline()
    node = c.node(active)
    cut = c.cut(node, ["eth1"])
    time.sleep(HOLD_S)
    c.restore(node, ["eth1"])
    c.wait_baseline()
    return Expect({active}, cut, max_gap_s=MAX_GAP_S)


@scenario(60)
def isolate_active(c: CtsCluster, rng: random.Random) -> Expect:
    """Cut both cables of the active node: the service moves, the isolated node stops its copy
    and runs its isolation script; then plug the cables back in."""
    active, waiting = c.wait_baseline()
    node = c.node(active)
    cut = c.cut(node, node.nics)
    c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
    c.wait_copy_stopped(node, NEXT_TO_RUN_S)
    failures = []
    try:
        c.wait_record(lambda e: e.source == node.key and e.kind == "isolated",
                      f"{node.key} isolated", ISOLATION_SEEN_S, cut)
    except ScenarioFailed as error:
        failures.append(str(error))
    c.restore(node, node.nics)
    c.wait_baseline()
    return Expect({waiting[0]}, cut, failures=failures)


@scenario(60, min_nodes=3)
def partition_active_alone(c: CtsCluster, rng: random.Random) -> Expect:
    """Partition the active node from the others (1 | 2): the majority takes the service over,
    the minority stops its copy; then heal."""
    active, waiting = c.wait_baseline()
    node = c.node(active)
    split = c.partition(node)
    c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
    c.wait_copy_stopped(node, NEXT_TO_RUN_S)
    c.heal()
    c.wait_baseline()
    return Expect({waiting[0]}, split)


@scenario(60, min_nodes=3)
def partition_backup_alone(c: CtsCluster, rng: random.Random) -> Expect:
    """Partition a backup from the others (1 | 2): the majority keeps the service; then heal."""
    def heal_later(backup: LabNode) -> None:
        time.sleep(HOLD_S)
        c.heal()
    return _backup_away(c, rng, c.partition, heal_later)


# --- freeze --------------------------------------------------------------------------------
def _freeze_active(seconds: float) -> Callable[[CtsCluster, random.Random], Expect]:
    def freeze(c: CtsCluster, rng: random.Random) -> Expect:
        active, waiting = c.wait_baseline()
        node = c.node(active)
        frozen = c.freeze(node)
        time.sleep(seconds)
        c.thaw(node)
        c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
        c.wait_copy_stopped(node, NEXT_TO_RUN_S)
        c.wait_baseline()
        # the next waiter holds the lock after the leases, but the frozen node's kernel still
        # answers for the floating IP: the address is added elsewhere (and the client served)
        # once the thawed node has dropped it, never beside it (no fence command in the CTS)
        return Expect({waiting[0]}, frozen, answer_within_s=seconds + FAILOVER_S)
    freeze.__doc__ = (f"Freeze the active node (SIGSTOP of all its processes) for {seconds:g} s: "
                      f"the next waiter takes the lock over but adds the floating IP only once "
                      f"the thawed node, which stops its copy at once, has dropped it.")
    return freeze


scenario(45, name="freeze_active_1s")(_freeze_active(1.0))
scenario(60, name="freeze_active_10s")(_freeze_active(10.0))


# --- daemons -------------------------------------------------------------------------------------
#: (daemon, role) whose kill moves the service: a dead heartbeat takes the node out of the
#: membership (its locks end); a dead lock daemon ends the HA daemon's lock sessions. The bus is not
#: on the path; a dead HA daemon leaves the service running and its successor adopts it.
MOVES_THE_SERVICE = {("heartbeat", "active"), ("lock", "active")}
#: with the etcd backend a node's locks live as long as its etcd lease, whatever the membership
#: says (without a fence command, which would power the node off): a dead heartbeat moves nothing
MOVES_THE_SERVICE_ON_ETCD = {("lock", "active")}


def _kill_daemon(daemon: str, role: str) -> Callable[[CtsCluster, random.Random], Expect]:
    def kill(c: CtsCluster, rng: random.Random) -> Expect:
        active, waiting = c.wait_baseline()
        node = c.node(active if role == "active" else rng.choice(waiting))
        killed = c.kill_daemon(node, daemon)
        time.sleep(RESTART_SEC)
        c.start_daemons(node, (daemon,))
        c.wait_baseline()
        if (daemon, role) in (MOVES_THE_SERVICE_ON_ETCD if c.backend == "etcd"
                              else MOVES_THE_SERVICE):
            return Expect({waiting[0]}, killed)
        return Expect({active}, killed, max_gap_s=MAX_GAP_S)
    where = "the active node" if role == "active" else "a backup"
    moves = ("the next waiter takes over" if (daemon, role) in MOVES_THE_SERVICE else
             "the service stays")
    kill.__doc__ = f"kill -9 skyge-{daemon} on {where}, restart it 1 s later (systemd): {moves}."
    return kill


for _daemon in ("heartbeat", "lock", "bus", "ha"):
    for _role in ("active", "backup"):
        scenario(45, name=f"kill_{_daemon}_on_{_role}")(_kill_daemon(_daemon, _role))


# --- the service itself --------------------------------------------------------------------
@scenario(45)
def kill_user_process(c: CtsCluster, rng: random.Random) -> Expect:
    """kill -9 the service's server right after a status check: the pidfile watch sees the death
    at once (not 3 s later at the next check) and the service switches to the next waiter."""
    active, waiting = c.wait_baseline()
    node = c.node(active)
    c.wait_record(lambda e: e.source == node.key and e.kind == "status", "a status check",
                  service.CHECK_INTERVAL_S + service.STATUS_TIMEOUT_S + 1, time.time_ns())
    killed = c.kill_server(node)
    stop = c.wait_record(lambda e: e.source == node.key and e.kind == "stop",
                         f"{node.key} stops the service", NEXT_TO_RUN_S, killed)
    c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
    c.wait_baseline()
    failures = []
    seen_s = (stop.time_ns - killed) / 1e9
    if seen_s > DEATH_SEEN_S:
        failures.append(f"{node.key} ran `stop` {seen_s:.2f} s after its server "
                        f"died: the pidfile watch should see it within {DEATH_SEEN_S} s")
    return Expect({waiting[0]}, killed, failures=failures)


@scenario(45)
def stop_pulses(c: CtsCluster, rng: random.Random) -> Expect:
    """SIGSTOP the service's pulser (the server runs on): the service is declared hung after
    pulse_timeout_ms and switches to the next waiter."""
    active, waiting = c.wait_baseline()
    node = c.node(active)
    try:
        ha_call(node, "Pulse", pb.PulseRequest(type=pb.TAKEOVER_FIFO, slot=service.SERVICE_SLOT),
                timeout=5)
    except grpc.RpcError as error:
        raise ScenarioFailed(f"Ha.Pulse on {node.key} answers "
                             f"{error.code().name}: {error.details()}") from None
    stopped = c.stop_pulser(node)
    timeout_s = service.PULSE_TIMEOUT_MS / 1000
    stop = c.wait_record(lambda e: e.source == node.key and e.kind == "stop",
                         f"{node.key} stops the service", timeout_s + NEXT_TO_RUN_S,
                         stopped)
    c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
    c.wait_baseline()
    failures = []
    seen_s = (stop.time_ns - stopped) / 1e9
    if seen_s > timeout_s + DEATH_SEEN_S:
        failures.append(f"{node.key} stopped the service {seen_s:.2f} s after the "
                        f"last pulse; pulse_timeout_ms is {service.PULSE_TIMEOUT_MS}")
    return Expect({waiting[0]}, stopped, answer_within_s=timeout_s + FAILOVER_S,
                  failures=failures)


@scenario(45)
def status_hangs(c: CtsCluster, rng: random.Random) -> Expect:
    """The active node's `status` hangs past status_timeout: a failed check, the next waiter
    takes over."""
    active, waiting = c.wait_baseline()
    node = c.node(active)
    hung = c.set_fault(node, service.STATUS_HANGS)
    bound = service.CHECK_INTERVAL_S + service.STATUS_TIMEOUT_S + FAILOVER_S
    c.wait_running_on([waiting[0]], bound)
    c.set_fault(node, service.STATUS_HANGS, on=False)
    c.wait_baseline()
    return Expect({waiting[0]}, hung, answer_within_s=bound)


@scenario(90, min_nodes=3)
def waiter_view_blip(c: CtsCluster, rng: random.Random) -> Expect:
    """The first waiter's heartbeat hears nothing for 0.1 s (its view shrinks to itself, as in a
    heartbeat stall under load): it keeps its place in the queue, so a switch goes to it.

    Switches first make the lock authority the first waiter when it is not: there a lost place
    showed every time (its node reported the dropped wait before HA could ask again)."""
    active, waiting = c.wait_baseline()
    for _ in range(c.lab.size - 1 if c.backend == "builtin" else 0):  # etcd: no authority node
        if waiting[0] == c.lock_authority(c.node(active)):
            break
        c.command(pb.ACTION_SWITCH, 0)
        c.wait_running_on([waiting[0]], NEXT_TO_RUN_S)
        c.requeue_idle_nodes()
        active, waiting = c.wait_baseline()
    c.mute_heartbeat(c.node(waiting[0]), 0.1)
    time.sleep(2.0)  # past the lease end, where the node's lock daemon reports its waits again
    queue = c.lock_queue(c.node(active))
    switched = c.command(pb.ACTION_SWITCH, 0)
    c.wait_running_on(waiting[:1] if queue == (active, waiting) else waiting, NEXT_TO_RUN_S)
    expect = Expect({waiting[0]}, switched, answer_within_s=NEXT_TO_RUN_S)
    if queue != (active, waiting):
        expect.failures.append(f"lock queue {queue} after the blip, {(active, waiting)} before")
    c.requeue_idle_nodes()
    c.wait_baseline()
    return expect


@scenario(45, min_nodes=3)
def start_fails(c: CtsCluster, rng: random.Random) -> Expect:
    """`start` exits 2 on the next waiter; a switch: that node fails to start it and releases it,
    the waiter after it takes over."""
    _active, waiting = c.wait_baseline()
    failing, second = c.node(waiting[0]), waiting[1]
    c.set_fault(failing, service.START_EXITS_2)
    switched = c.command(pb.ACTION_SWITCH, 0)
    c.wait_running_on([second], NEXT_TO_RUN_S)
    c.set_fault(failing, service.START_EXITS_2, on=False)
    c.requeue_idle_nodes()  # the operator starts it again on the node that failed
    c.wait_baseline()
    return Expect({second}, switched, answer_within_s=NEXT_TO_RUN_S)
