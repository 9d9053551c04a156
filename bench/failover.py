"""Failover of an HA service on a 3-node lab: crash the active node, many times; then switch.

    python -m bench.failover --trials 10

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

then the victim boots, its daemons start again and it queues at the back. Switch-over trials
(`Ha.Command` SWITCH, domain 0): from the call to the first answer from the next node.

double_active counts the times two nodes held 192.168.1.100 at once (from the monitors; a crashed
node holds nothing from its crash on, since its cables are dead) plus the times the client got an
answer from the old node after it had got one from the new node (per failover).

keepalived keys are null when keepalived is not installed (it is not driven yet).
"""
from __future__ import annotations

import argparse
import datetime
import re
import shutil
import signal
import time

from skyge.clients.lab import Lab, LabNode
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, DEMO_VIP, Prober, configure_heartbeat,
                                    ha_call, install_demo_service, start_node, wait_members,
                                    wait_placement)
from skyge.v1 import ha_pb2 as pb

from bench._common import lab_name, note, percentile, result, rounded

SETTLE_S = 0.5
ANSWER_TIMEOUT_S = 10.0
_LINE = re.compile(r"^\[(?P<ts>[0-9T:.-]+)\] (?P<deleted>Deleted )?\d+: (?P<nic>\S+)\s+inet "
                   r"(?P<ip>[0-9.]+)/")


class AddressMonitor:
    """`ip -ts monitor address` in a node, logged to a file."""

    def __init__(self, node: LabNode, tag: str) -> None:
        self.node = node
        self.name = f"addrmon{tag}"
        self.log = node.lab.root / f"addrmon-{node.key}-{tag}.log"
        node.spawn(["ip", "-ts", "monitor", "address"], name=self.name, log_path=self.log)

    def events(self, ip: str = DEMO_VIP) -> list[tuple[int, bool]]:
        """(time ns, added?) for `ip`, in order."""
        found = []
        if not self.log.exists():
            return found
        for line in self.log.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if match and match["ip"] == ip:
                stamp = datetime.datetime.fromisoformat(match["ts"]).timestamp()
                found.append((int(stamp * 1e9), not match["deleted"]))
        return found

    def first_add_after(self, t0_ns: int, ip: str = DEMO_VIP) -> int | None:
        return next((t for t, added in self.events(ip) if added and t >= t0_ns), None)

    def stop(self) -> None:
        if self.node.find(self.name):
            self.node.kill(self.name, signal.SIGTERM, wait=5)


def holder_intervals(monitors: list[AddressMonitor], ends: dict[str, list[int]],
                     ip: str = DEMO_VIP) -> dict[str, list[tuple[int, int]]]:
    """Per node: the intervals during which it held `ip` (a crash ends an interval)."""
    result_: dict[str, list[tuple[int, int]]] = {}
    for monitor in monitors:
        key = monitor.node.key
        events = sorted(monitor.events(ip) + [(t, False) for t in ends.get(key, [])])
        start = None
        for t, added in events:
            if added and start is None:
                start = t
            elif not added and start is not None:
                result_.setdefault(key, []).append((start, t))
                start = None
        if start is not None:
            result_.setdefault(key, []).append((start, time.time_ns()))
    return result_


def overlaps(intervals: dict[str, list[tuple[int, int]]]) -> int:
    """How many times two nodes' holding intervals overlap."""
    flat = [(s, e, k) for k, spans in intervals.items() for s, e in spans]
    count = 0
    for i, (s1, e1, k1) in enumerate(flat):
        for s2, e2, k2 in flat[i + 1:]:
            if k1 != k2 and s1 < e2 and s2 < e1:
                count += 1
    return count


def live_node(lab: Lab, exclude: int = 0) -> LabNode:
    return next(n for n in lab.nodes if n.id != exclude and not n.crashed)


def run(trials: int, switchovers: int) -> dict:
    vip_ms: list[float] = []
    crash_ms: list[float] = []
    switch_ms: list[float] = []
    failed: list[str] = []
    failovers: list[tuple[int, str, str]] = []  # (t0, old "nX", new "nY")
    crash_ends: dict[str, list[int]] = {}
    with Lab.up(nodes=3, name=lab_name("fo")) as lab:
        configure_heartbeat(lab)
        install_demo_service(lab, check_interval=1)
        monitors = [AddressMonitor(node, "0") for node in lab.nodes]
        for node in lab.nodes:  # membership and locks first
            start_node(node, CLUSTER_DAEMONS[:-1], extra_args=("-l", "LOG_NOTICE"))
        wait_members(lab.node(1), 3)
        for node in lab.nodes:
            start_node(node, ("ha",), extra_args=("-l", "LOG_NOTICE"))
            if node.id == 1:
                wait_placement(node, lambda p: p[0] == "running", what="running", timeout=30)
        prober = Prober(lab)
        try:
            for trial in range(trials):
                observer = live_node(lab)
                _, active, waiting = wait_placement(
                    observer, lambda p: p[0] == "running" and len(p[2]) == 2,
                    what="running with 2 waiters", timeout=30)
                victim, successor = lab.node(active), lab.node(waiting[0])
                time.sleep(SETTLE_S)
                t0 = time.time_ns()
                victim.crash()
                crash_ends.setdefault(victim.key, []).append(t0)
                found = prober.wait_answer_after(t0, exclude=victim.key,
                                                 timeout=ANSWER_TIMEOUT_S)
                if found is None:
                    failed.append(f"trial {trial + 1}: no answer from another node in "
                                  f"{ANSWER_TIMEOUT_S:g} s")
                    note(failed[-1])
                else:
                    end_ns, answer = found
                    crash_ms.append((end_ns - t0) / 1e6)
                    failovers.append((t0, victim.key, answer.split()[0]))
                    adds = [m.first_add_after(t0) for m in monitors
                            if m.node.key == answer.split()[0]]
                    added = min((a for a in adds if a is not None), default=None)
                    if added is not None:
                        vip_ms.append((added - t0) / 1e6)
                    note(f"trial {trial + 1}/{trials}: {victim.key} crashed; floating IP on "
                         f"{answer.split()[0]} after "
                         f"{(added - t0) / 1e6 if added else float('nan'):.1f} ms, client "
                         f"answered after {crash_ms[-1]:.1f} ms (expected next: {successor.key})")
                victim.boot()
                monitors.append(AddressMonitor(victim, str(trial + 1)))
                start_node(victim, extra_args=("-l", "LOG_NOTICE"))
            for turn in range(switchovers):
                observer = live_node(lab)
                _, active, waiting = wait_placement(
                    observer, lambda p: p[0] == "running" and len(p[2]) == 2,
                    what="running with 2 waiters", timeout=30)
                time.sleep(SETTLE_S)
                t0 = time.time_ns()
                ha_call(observer, "Command", pb.CommandRequest(
                    domain=0, type=pb.TAKEOVER_FIFO, slot=0, action=pb.ACTION_SWITCH),
                    timeout=30)
                found = prober.wait_answer_after(t0, exclude=f"n{active}",
                                                 timeout=ANSWER_TIMEOUT_S)
                if found is None:
                    failed.append(f"switch {turn + 1}: no answer from another node")
                    note(failed[-1])
                    continue
                switch_ms.append((found[0] - t0) / 1e6)
                failovers.append((t0, f"n{active}", found[1].split()[0]))
                note(f"switch {turn + 1}/{switchovers}: n{active} -> {found[1].split()[0]} in "
                     f"{switch_ms[-1]:.1f} ms")
            time.sleep(SETTLE_S)
        finally:
            prober.stop()
            attempts = prober.attempts()
            for monitor in monitors:
                if not monitor.node.crashed:
                    try:
                        monitor.stop()
                    except Exception:  # noqa: BLE001
                        pass
        double = overlaps(holder_intervals(monitors, crash_ends))
        # the old node answering after the new one did, before the next failover
        for index, (t0, old, new) in enumerate(failovers):
            t_next = failovers[index + 1][0] if index + 1 < len(failovers) else 1 << 62
            first_new = next((end for start, end, ok, data in attempts
                              if ok and start >= t0 and data.startswith(new + " ")), None)
            if first_new is not None and any(
                    ok and first_new <= start < t_next and data.startswith(old + " ")
                    for start, end, ok, data in attempts):
                double += 1
    return {
        "vip_p50_ms": rounded(percentile(vip_ms, 50)),
        "vip_p99_ms": rounded(percentile(vip_ms, 99)),
        "node_crash_p50_ms": rounded(percentile(crash_ms, 50)),
        "node_crash_p99_ms": rounded(percentile(crash_ms, 99)),
        "node_crash_max_ms": rounded(max(crash_ms) if crash_ms else None),
        "switchover_p50_ms": rounded(percentile(switch_ms, 50)),
        "double_active": double,
        "trials": trials,
        "switchovers": switchovers,
        "failed_trials": len(failed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="node crashes (default 10)")
    parser.add_argument("--switchovers", type=int, default=None,
                        help="commanded switch-overs (default: half the trials, at least 3)")
    args = parser.parse_args()
    if not 1 <= args.trials <= 200:
        parser.error("--trials: must be from 1 to 200")
    switchovers = args.switchovers if args.switchovers is not None else max(3, args.trials // 2)
    figures = run(args.trials, switchovers)
    keepalived = shutil.which("keepalived")
    if keepalived:
        note(f"keepalived is installed ({keepalived}) but this benchmark does not drive it yet; "
             "its keys stay null")
    figures.update(keepalived_default_ms_p50=None, keepalived_tuned_ms_p50=None)
    result(figures)


if __name__ == "__main__":
    main()
