"""Failover of an HA service on a 3-node lab: crash the active node, kill its user process,
isolate it (both NICs cut), many times each; then switch.

    python -m bench.failover --trials 10              # fenced path (the lab's fence command)
    python -m bench.failover --trials 10 --no-fence   # lease path
    python -m bench.failover --backend etcd           # locks in etcd (one member per node)
    python -m bench.failover --backend both           # both, one after the other, side by side

With a fence command (default), a lost node is powered off once it has been out of the
membership for `fence_after_ms` (250 ms) and its service is taken over as soon as it is off;
with `--no-fence`, once its leases ran out (hold lease 600 ms; the authority's own node: vote
lease 400 ms + grace). With `--backend etcd` the locks are in an etcd of one member per node
(`skyge.clients.lab.etcd`; a crashed node's member dies with it and starts again at its boot): a
lost node's service is taken over once its etcd lease (2 s) expired, or, fenced, once the fencing
node revoked it. `--backend both` runs the built-in backend then etcd and prints both sets of
keys, under "builtin" and "etcd".

Setup: a 3-node lab running skyge-heartbeat, -bus, -lock and -ha; the demo service of
`skyge.clients.lab.demo` (fifo/0: a small TCP server started by a user script, floating IP
192.168.1.100 on eth0, onstart) configured on every node; a prober in the client namespace
connecting to 192.168.1.100:8080 in a loop (20 ms connect timeout, 5 ms apart; every attempt
logged with its wall-clock start and end and the answering node); an `ip -ts monitor address` in
every node logging, with timestamps, every address added or removed there.

Per crash trial: t0 is the wall clock read right before `LabNode.crash()` of the active node (its
cables go down, then every process is killed); then

- vip: the monitor timestamp of 192.168.1.100 being added on another node, minus t0;
- node_crash: the end of the first prober connection answered by another node, minus t0 (the
  floating IP moved, the client's ARP entry followed the gratuitous ARP, the server listens);

then the victim boots, its daemons start again and it queues at the back.

Process-kill trials (the service has `pidfile`, so its death is seen at once): t0 right before
SIGKILL of the service's server process on the active node; process_kill = the first answer from
another node, minus t0. The victim queues again after its back-off.

Isolation trials (ha.cfg `reference_ips` = the gateway's): t0 right before both cables of the
active node are pulled; isolation = the first answer from another node, minus t0;
isolated_stop = when the isolated node had both removed the floating IP (its monitor) and lost
the server process (a pidfd), minus t0. Then the cables go back and it queues again.

Switch-over trials (`Ha.Command` SWITCH, domain 0): from the call to the first answer from the
next node.

double_active counts the times two nodes held 192.168.1.100 at once (from the monitors; a crashed
node holds nothing from its crash on, since its cables are dead) plus the times the client got an
answer from the old node after it had got one from the new node (per failover).

keepalived keys are null when keepalived is not installed (it is not driven yet).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

from skyge.clients.lab import GATEWAY_IPS, Lab, LabNode
from skyge.clients.lab.configs import configure_heartbeat, write_daemon_config, write_lock_config
from skyge.clients.lab.etcd import members_of, start_etcd, start_member
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, DEMO_PORT, Prober, ha_call,
                                    install_demo_service, start_node, wait_members, wait_placement)
from skyge.clients.lab.observe import (AddressMonitor, holder_intervals, interleaved_answers,
                                       overlaps)
from skyge.services.ha.resources.script import read_pidfile
from skyge.v1 import ha_pb2 as pb

from bench._common import lab_name, note, percentile, result, rounded

SETTLE_S = 0.5
ANSWER_TIMEOUT_S = 10.0
def live_node(lab: Lab, exclude: int = 0) -> LabNode:
    return next(n for n in lab.nodes if n.id != exclude and not n.crashed)


def pidfile(lab: Lab, node: LabNode) -> Path:
    """The demo server's pid file on `node` (the demo script names it after the domain)."""
    return lab.root / "demo" / f"demo-{DEMO_PORT}" / f"server-{node.id}.pid"


class DeathWatch:
    """Notes the wall clock the moment a process exits (a thread blocked on its pidfd), while
    the benchmark waits for other things."""

    def __init__(self, pid: int, timeout_s: float) -> None:
        self.died_ns: int | None = None
        self._fd = os.pidfd_open(pid)
        self._thread = threading.Thread(target=self._wait, args=(timeout_s,), daemon=True)
        self._thread.start()

    def _wait(self, timeout_s: float) -> None:
        readable, _, _ = select.select([self._fd], [], [], timeout_s)
        if readable:
            self.died_ns = time.time_ns()

    def result(self) -> int | None:
        """When it died (None if not within the timeout); closes the pidfd."""
        self._thread.join()
        os.close(self._fd)
        return self.died_ns


def configure(lab: Lab) -> None:
    """The demo service with a pid file per node; ha.cfg with the gateway as reference IPs."""
    for node in lab.nodes:
        install_demo_service(lab, [node], check_interval=1,
                             extra={"pidfile": str(pidfile(lab, node))})
        write_daemon_config(node, "ha", {"reference_ips": ":".join(GATEWAY_IPS)})


def start_cluster(lab: Lab, daemons: Sequence[str] = CLUSTER_DAEMONS,
                  lock_config: Mapping[str, Any] | None = None, backend: str = "builtin") -> None:
    """Heartbeat config and `configure`, then `daemons` on every node: HA last (membership and
    locks first), n1's first, so that n1 runs the service and the others queue in order. With
    the etcd backend, the lab's etcd first."""
    configure_heartbeat(lab)
    configure(lab)
    if backend == "etcd":
        start_etcd(lab)
    if lock_config is not None or backend != "builtin":
        for node in lab.nodes:
            write_lock_config(node, lock_config, backend=backend)
    for node in lab.nodes:
        start_node(node, [d for d in daemons if d != "ha"], extra_args=("-l", "LOG_NOTICE"))
    wait_members(lab.node(1), lab.size)
    for node in lab.nodes:
        start_node(node, ("ha",), extra_args=("-l", "LOG_NOTICE"))
        if node.id == 1:
            wait_placement(node, lambda p: p[0] == "running", what="running", timeout=30)


def ready(lab: Lab) -> tuple[LabNode, LabNode]:
    """Wait until the service runs with every other node waiting: (active node, next waiter)."""
    waiters = lab.size - 1
    _, active, waiting = wait_placement(
        live_node(lab), lambda p: p[0] == "running" and len(p[2]) == waiters,
        what=f"running with {waiters} waiters", timeout=30)
    time.sleep(SETTLE_S)
    return lab.node(active), lab.node(waiting[0])


class Run:
    """One lab, one prober, the figures of every kind of trial."""

    def __init__(self, lab: Lab, backend: str) -> None:
        self.lab = lab
        self.backend = backend
        self.monitors = [AddressMonitor(node, "0") for node in lab.nodes]
        self.prober = Prober(lab)
        self.failed: list[str] = []
        self.failovers: list[tuple[int, str, str]] = []  # (t0, old "nX", new "nY")
        self.holder_ends: dict[str, list[int]] = {}  # crashes end a node's holding
        self.ms: dict[str, list[float]] = {key: [] for key in (
            "vip", "node_crash", "process_kill", "isolation", "isolated_stop", "switchover")}

    def answered(self, what: str, t0: int, old: LabNode) -> str | None:
        """The node answering first after t0 other than `old` (recorded), or None (failed)."""
        found = self.prober.wait_answer_after(t0, exclude=old.key, timeout=ANSWER_TIMEOUT_S)
        if found is None:
            self.failed.append(f"{what}: no answer from another node in {ANSWER_TIMEOUT_S:g} s")
            note(self.failed[-1])
            return None
        end_ns, answer = found
        new = answer.split()[0]
        self.ms[what.split()[0]].append((end_ns - t0) / 1e6)
        self.failovers.append((t0, old.key, new))
        return new

    def crash(self, trial: int, trials: int) -> None:
        victim, successor = ready(self.lab)
        t0 = time.time_ns()
        victim.crash()
        self.holder_ends.setdefault(victim.key, []).append(t0)
        new = self.answered(f"node_crash {trial}", t0, victim)
        if new is not None:
            adds = [m.first_add_after(t0) for m in self.monitors if m.node.key == new]
            added = min((a for a in adds if a is not None), default=None)
            if added is not None:
                self.ms["vip"].append((added - t0) / 1e6)
            note(f"crash {trial}/{trials}: {victim.key} crashed; floating IP on {new} after "
                 f"{(added - t0) / 1e6 if added else float('nan'):.1f} ms, client answered "
                 f"after {self.ms['node_crash'][-1]:.1f} ms (expected next: {successor.key})")
        self.reboot(victim, f"c{trial}")

    def reboot(self, victim: LabNode, tag: str) -> None:
        """Power a crashed (or fenced) node on again; its daemons start and it queues again."""
        victim.boot()
        if self.backend == "etcd":
            start_member(victim, members_of(self.lab))
        self.monitors.append(AddressMonitor(victim, tag))
        start_node(victim, extra_args=("-l", "LOG_NOTICE"))

    def kill_process(self, trial: int, trials: int) -> None:
        victim, _ = ready(self.lab)
        pid = read_pidfile(pidfile(self.lab, victim))
        t0 = time.time_ns()
        victim.kill(pid)
        new = self.answered(f"process_kill {trial}", t0, victim)
        if new is not None:
            note(f"process kill {trial}/{trials}: {victim.key}'s server killed; {new} answered "
                 f"after {self.ms['process_kill'][-1]:.1f} ms")

    def isolate(self, trial: int, trials: int) -> None:
        victim, _ = ready(self.lab)
        death = DeathWatch(read_pidfile(pidfile(self.lab, victim)), ANSWER_TIMEOUT_S)
        t0 = time.time_ns()
        for nic in ("eth0", "eth1"):
            victim.cut(nic)
        new = self.answered(f"isolation {trial}", t0, victim)
        died = death.result()
        removed = next((m.first_delete_after(t0) for m in reversed(self.monitors)
                        if m.node.key == victim.key), None)
        fenced = min((at for node, at in self.lab.fence_log() if node == victim.id and at > t0),
                     default=None)
        if fenced is not None and (died is None or removed is None):
            # powered off by the fence before it stopped its copy (the etcd backend learns of
            # the cut only as its lease runs out): off, it runs and holds nothing
            died = died or fenced
            removed = removed or fenced
        if died is None or removed is None:
            self.failed.append(f"isolation {trial}: {victim.key} did not stop its copy "
                               f"(process {'gone' if died else 'alive'}, floating IP "
                               f"{'removed' if removed else 'still up'})")
            note(self.failed[-1])
        else:
            self.ms["isolated_stop"].append((max(died, removed) - t0) / 1e6)
        if new is not None:
            note(f"isolation {trial}/{trials}: {victim.key} cut off; {new} answered after "
                 f"{self.ms['isolation'][-1]:.1f} ms; the isolated copy stopped after "
                 f"{self.ms['isolated_stop'][-1] if died and removed else float('nan'):.1f} ms")
        for nic in ("eth0", "eth1"):
            victim.restore(nic)
        if any(node == victim.id and at > t0 for node, at in self.lab.fence_log()):
            # fenced (powered off) by the others while it was cut off: once the lab recorded
            # the crash, power it on again
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            while not victim.crashed and time.monotonic() < deadline:
                time.sleep(0.05)
            self.reboot(victim, f"i{trial}")
        wait_members(victim, 3)

    def switch(self, turn: int, turns: int) -> None:
        victim, _ = ready(self.lab)
        observer = live_node(self.lab)
        t0 = time.time_ns()
        ha_call(observer, "Command", pb.CommandRequest(
            domain=0, type=pb.TAKEOVER_FIFO, slot=0, action=pb.ACTION_SWITCH), timeout=30)
        new = self.answered(f"switchover {turn}", t0, victim)
        if new is not None:
            note(f"switch {turn}/{turns}: {victim.key} -> {new} in "
                 f"{self.ms['switchover'][-1]:.1f} ms")

    def double_active(self) -> int:
        """Two nodes holding the floating IP at once, plus the client answered by the old node
        after the new one (before the next failover)."""
        attempts = self.prober.attempts()
        ends = {key: list(times) for key, times in self.holder_ends.items()}
        for node, off_ns in self.lab.fence_log():  # powered off by a fence: holds nothing
            ends.setdefault(f"n{node}", []).append(off_ns)
        found = overlaps(holder_intervals(self.monitors, ends))
        starts = [t0 for t0, _, _ in self.failovers]
        for t0, t_next in zip(starts, [*starts[1:], 1 << 62], strict=True):
            found += [f"{late} (failover at {t0})"
                      for late in interleaved_answers(attempts, t0, t_next)]
        for text in found:
            note(f"double active: {text}")
        return len(found)

    def stop(self) -> None:
        self.prober.stop()
        for monitor in self.monitors:
            if not monitor.node.crashed:
                with contextlib.suppress(Exception):
                    monitor.stop()


def run(trials: int, kills: int, isolations: int, switchovers: int, fence: bool,
        backend: str) -> dict:
    with Lab.up(nodes=3, name=lab_name("fo")) as lab:
        start_cluster(lab, lock_config={"fence_command": lab.fence_command()} if fence else None,
                      backend=backend)
        bench = Run(lab, backend)
        try:
            for kind, count in ((bench.crash, trials), (bench.kill_process, kills),
                                (bench.isolate, isolations), (bench.switch, switchovers)):
                for trial in range(1, count + 1):
                    kind(trial, count)
            time.sleep(SETTLE_S)
        finally:
            bench.stop()
        double = bench.double_active()
    ms = bench.ms
    return {
        "vip_p50_ms": rounded(percentile(ms["vip"], 50)),
        "vip_p99_ms": rounded(percentile(ms["vip"], 99)),
        "node_crash_p50_ms": rounded(percentile(ms["node_crash"], 50)),
        "node_crash_p99_ms": rounded(percentile(ms["node_crash"], 99)),
        "node_crash_max_ms": rounded(max(ms["node_crash"], default=None)),
        "process_kill_p50_ms": rounded(percentile(ms["process_kill"], 50)),
        "process_kill_p99_ms": rounded(percentile(ms["process_kill"], 99)),
        "isolation_p50_ms": rounded(percentile(ms["isolation"], 50)),
        "isolation_p99_ms": rounded(percentile(ms["isolation"], 99)),
        "isolated_stop_ms_max": rounded(max(ms["isolated_stop"], default=None)),
        "switchover_p50_ms": rounded(percentile(ms["switchover"], 50)),
        "double_active": double,
        "fenced": fence,
        "backend": backend,
        "trials": trials,
        "kills": kills,
        "isolations": isolations,
        "switchovers": switchovers,
        "failed_trials": len(bench.failed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="node crashes (default 10)")
    parser.add_argument("--kills", type=int, default=None,
                        help="kills of the service's process (default: as many as --trials)")
    parser.add_argument("--isolations", type=int, default=None,
                        help="isolations of the active node (default: as many as --trials)")
    parser.add_argument("--switchovers", type=int, default=None,
                        help="commanded switch-overs (default: half the trials, at least 3)")
    parser.add_argument("--no-fence", dest="fence", action="store_false",
                        help="no fence command: a lost node's service is taken over when its "
                             "leases ran out (default: the lab's fence command powers the lost "
                             "node off, and it is taken over once off)")
    parser.add_argument("--backend", choices=("builtin", "etcd", "both"), default="builtin",
                        help="what grants the locks (default: builtin); both: one run each")
    args = parser.parse_args()
    counts = {"trials": args.trials,
              "kills": args.kills if args.kills is not None else args.trials,
              "isolations": args.isolations if args.isolations is not None else args.trials,
              "switchovers": (args.switchovers if args.switchovers is not None
                              else max(3, args.trials // 2))}
    for name, count in counts.items():
        if not (1 if name == "trials" else 0) <= count <= 200:
            parser.error(f"--{name}: must be from {1 if name == 'trials' else 0} to 200")
    if args.backend == "both":
        figures: dict[str, Any] = {backend: run(**counts, fence=args.fence, backend=backend)
                                   for backend in ("builtin", "etcd")}
    else:
        figures = run(**counts, fence=args.fence, backend=args.backend)
    keepalived = shutil.which("keepalived")
    if keepalived:
        note(f"keepalived is installed ({keepalived}) but this benchmark does not drive it yet; "
             "its keys stay null")
    figures.update(keepalived_default_ms_p50=None, keepalived_tuned_ms_p50=None)
    result(figures)


if __name__ == "__main__":
    main()
