"""Scale of skyge-heartbeat: 64 heartbeat-only nodes find each other, then idle.

    python -m bench.heartbeat_scale --nodes 64 [--idle-seconds 20] [--detector ...]
    python -m bench.heartbeat_scale --nodes 16 --daemons all   # bus and lock daemons too

How it is measured: the lab comes up, the lab's switch drops every heartbeat datagram
(`block_heartbeats`), every daemon is started and serving (each sees only itself), and every
node's WatchMembership stream is open. t0 is the wall clock right before the switch stops dropping
them (one nftables transaction: every node "plugged in" at the same instant). `converge_ms`: the
latest, over all nodes, of the `time_unix_ns` of the joined event that completed that node's view
to all N nodes, minus t0 (so it includes the switch reconfiguration). Then, after a settling pause
(the send interval grows to its steady value), `cpu_percent_per_daemon` is the mean CPU time
(user + system, psutil) of the daemons over `--idle-seconds`, in percent of one core.

`--daemons all`: after convergence, a bus and a lock daemon start on every node too (lock.cfg
expected_nodes = N); once every lock daemon follows one authority, `lock_grant_p50_ms` /
`lock_grant_p99_ms` are acquire+release pairs (`--pairs`) of a session on the highest-numbered
node that is not the authority (a far node: its requests cross the lab's switch), then the idle
window measures every daemon: `cpu_percent_per_daemon` (heartbeat), `bus_cpu_percent_per_daemon`,
`lock_cpu_percent_per_daemon` (means) and the `*_max` of each. The bench prints its RESULT line
even when convergence or the lock's readiness fails (the keys then say null).

`--start rolling` (with `--daemons all`): the bus and lock daemons start node after node, each
node's serving before the next starts, as nodes booting one by one would; `together` (default)
starts them all at once, which on this machine's two cores means every node's Python start-up at
the same moment (at 24 nodes that alone starves the heartbeat daemons).
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import time

import grpc

from skyge.clients.lab import Lab, LabError, LabNode
from skyge.clients.lab.configs import configure_heartbeat, write_daemon_config
from skyge.clients.lab.daemons import start_daemons
from skyge.services.common.paths import NodePaths
from skyge.services.ha.resources.script import PidfileError, read_pidfile
from skyge.services.heartbeat.config import DEFAULT_DETECTOR
from skyge.services.heartbeat.detector import DETECTORS
from tests.cluster import heartbeat_support as hs
from tests.cluster import lock_support as ls

from bench._common import CpuMeter, lab_name, note, percentile, result, rounded
from bench.lock_latency import pair_latency

SETTLE_S = 5.0
#: acquire+release pairs timed from a far node (--daemons all)
PAIRS = 300
BLOCK_TABLE = "skyge_bench_block"
BLOCK_PORT = 7400  # the heartbeat port (config default)


def completed_at(watch: hs.Watch, size: int) -> int | None:
    """When this node's view first held `size` members (a joined event's stamp)."""
    members: set[int] = set()
    for event in watch.snapshot():
        if event.kind == "snapshot":
            members = {m.node.domain for m in event.message.members}
        elif event.kind == "joined":
            members.add(event.domain)
        elif event.kind == "left":
            members.discard(event.domain)
        if len(members) == size:
            return event.time_unix_ns
    return None


def block_heartbeats(lab: Lab, blocked: bool) -> None:
    """Drop (or stop dropping) every heartbeat datagram in the lab's switch, atomically.

    One nftables table of our own in the switch namespace (bridge family, forward hook): adding
    or deleting it is a single transaction, so every node "plugs in" at the same instant. Cutting
    the cables instead (`LabNode.cut`/`restore`, or one `ip -batch` of link ups) brings 128 ports
    up one by one, over seconds when the CPU is busy, which would be measured as convergence."""
    script = (f"table bridge {BLOCK_TABLE} {{\n chain forward {{\n  type filter hook forward "
              f"priority -10; policy accept;\n  udp dport {BLOCK_PORT} drop\n }}\n}}\n"
              if blocked else f"delete table bridge {BLOCK_TABLE}\n")
    subprocess.run(["ip", "netns", "exec", f"{lab.name}-sw", "nft", "-f", "-"], input=script,
                   text=True, check=True, capture_output=True, timeout=60)


def start_bus_and_lock(lab: Lab, rolling: bool) -> dict:
    """Bus and lock daemons on every node (all at once, or node after node once each serves);
    the lock's far-node grant latency once ready."""
    started = time.monotonic()
    for node in lab.nodes:
        write_daemon_config(node, "lock", {"expected_nodes": lab.size})
        try:
            start_daemons(node, ["bus", "lock"], extra_args=("-l", "LOG_NOTICE"), wait=rolling)
        except LabError as error:
            note(f"the rolling start failed: {error}")
            return {"lock_ready_s": None, "lock_grant_p50_ms": None, "lock_grant_p99_ms": None}
    if rolling:
        note(f"bus and lock daemons started node after node in "
             f"{time.monotonic() - started:.1f} s")
    t = time.monotonic()
    try:
        authority = ls.wait_ready(lab.nodes, timeout=120)
    except AssertionError as error:
        note(f"the lock daemons did not settle: {error}")
        return {"lock_ready_s": None, "lock_grant_p50_ms": None, "lock_grant_p99_ms": None}
    far = max(n.id for n in lab.nodes if n.id != authority)
    note(f"lock authority n{authority} after {time.monotonic() - t:.1f} s; pairs from n{far}")
    pairs = asyncio.run(pair_latency(ls.target(lab.node(far)), PAIRS))
    return {"lock_ready_s": rounded(time.monotonic() - t, 1),
            "lock_grant_p50_ms": rounded(percentile(pairs, 50), 3),
            "lock_grant_p99_ms": rounded(percentile(pairs, 99), 3)}


def view_size(node: LabNode) -> int | None:
    """The size of the node's membership view (None: its heartbeat daemon did not answer in
    time, an overloaded machine)."""
    try:
        return len(hs.members(node))
    except grpc.RpcError:
        return None


def daemon_pid(node: LabNode, daemon: str) -> int | None:
    """The daemon's PID, None when it does not run (a rolling start that stopped short)."""
    try:
        return read_pidfile(NodePaths.at(node.root).pid_file(daemon))
    except PidfileError:
        return None


def run(nodes: int, idle_seconds: float, detector: str, timeout: float = 120.0,
        all_daemons: bool = False, rolling: bool = False) -> dict:
    with Lab.up(nodes=nodes, name=lab_name("sc")) as lab:
        t = time.monotonic()
        block_heartbeats(lab, True)
        configure_heartbeat(lab, detector=detector)
        procs = [(n, hs.start(n, wait=False)) for n in lab.nodes]
        for node, proc in procs:
            hs.wait_serving(node, proc, timeout=120)
        note(f"{nodes} daemons serving after {time.monotonic() - t:.1f} s (each alone)")
        watches = hs.watches(lab.nodes)
        try:
            t0 = time.time_ns()
            block_heartbeats(lab, False)
            healed_ms = (time.time_ns() - t0) / 1e6
            end = time.monotonic() + timeout
            done: dict[int, int | None] = {}
            while time.monotonic() < end:
                done = {i: completed_at(w, nodes) for i, w in watches.items()}
                if all(done.values()) or any(w.error for w in watches.values()):
                    break
                time.sleep(0.1)  # events may arrive late (a starved loop): their stamps count
            errors = {i: w.error for i, w in watches.items() if w.error}
            if errors:
                note(f"watch streams failed: {errors}")
            missing = [i for i, at in done.items() if not at]
            converge_ms = None if missing else (max(done.values()) - t0) / 1e6  # type: ignore[type-var]
            note(f"unblocking took {healed_ms:.0f} ms; converged in "
                 f"{'-' if converge_ms is None else f'{converge_ms:.0f}'} ms"
                 + (f"; nodes without a full view: {missing}" if missing else ""))
            views = {n.key: view_size(n) for n in lab.nodes}
            for i in missing:
                events = watches[i].snapshot()
                replayed: set[int] = set()
                for e in events:
                    if e.kind == "snapshot":
                        replayed = {m.node.domain for m in e.message.members}
                    elif e.kind == "joined":
                        replayed.add(e.domain)
                    elif e.kind == "left":
                        replayed.discard(e.domain)
                kinds = {k: sum(e.kind == k for e in events) for k in ("joined", "left", "link")}
                note(f"n{i}: stream says {len(replayed)} members ({kinds}), ListMembers "
                     f"{views[f'n{i}']}, missing {sorted(set(range(1, nodes + 1)) - replayed)}")
        finally:
            hs.close_all(watches)
        extra: dict = {}
        if all_daemons:
            extra = start_bus_and_lock(lab, rolling)
        time.sleep(SETTLE_S)
        kinds = ("heartbeat", "bus", "lock") if all_daemons else ("heartbeat",)
        pids = {kind: [pid for n in lab.nodes if (pid := hs.pid(n) if kind == "heartbeat"
                                                   else daemon_pid(n, kind)) is not None]
                for kind in kinds}
        meter = CpuMeter([pid for kind in kinds for pid in pids[kind]])
        meter.start()
        time.sleep(idle_seconds)
        measured = iter(meter.stop())
        cpu_of = {kind: [next(measured) for _ in pids[kind]] for kind in kinds}
        cpu = cpu_of["heartbeat"]
        for kind in kinds[1:]:
            found = cpu_of[kind]
            extra[f"{kind}_cpu_percent_per_daemon"] = rounded(sum(found) / len(found)) \
                if found else None
            extra[f"{kind}_cpu_percent_max"] = rounded(max(found)) if found else None
            extra[f"{kind}_daemons_measured"] = len(found)
        final = {n.key: view_size(n) for n in lab.nodes}
        false_down = sum(1 for size in final.values() if size != nodes)
        unanswered = sum(1 for size in final.values() if size is None)
        if unanswered:
            note(f"{unanswered} heartbeat daemons did not answer ListMembers within 5 s")
    return {
        "converge_ms": rounded(converge_ms, 1),
        "unblock_command_ms": rounded(healed_ms, 1),
        "cpu_percent_per_daemon": rounded(sum(cpu) / len(cpu)),
        "cpu_percent_max": rounded(max(cpu)),
        "nodes": nodes,
        "full_views_after_converge": sum(size == nodes for size in views.values()),
        "incomplete_views_after_idle": false_down,
        "idle_seconds": idle_seconds,
        "detector": detector,
        "daemons": "all" if all_daemons else "heartbeat",
        "start": "rolling" if rolling else "together",
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=64, help="lab size, 2-64 (default 64)")
    parser.add_argument("--idle-seconds", type=float, default=20.0,
                        help="CPU measuring window after convergence (default 20)")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR)
    parser.add_argument("--daemons", choices=("heartbeat", "all"), default="heartbeat",
                        help="heartbeat only (default), or bus and lock daemons too")
    parser.add_argument("--start", choices=("together", "rolling"), default="together",
                        help="with --daemons all: start the bus and lock daemons on every node "
                             "at once (default), or node after node")
    args = parser.parse_args()
    if not 2 <= args.nodes <= 64:
        parser.error("--nodes: must be from 2 to 64")
    if not 1 <= args.idle_seconds <= 3600:
        parser.error("--idle-seconds: must be from 1 to 3600")
    result(run(args.nodes, args.idle_seconds, args.detector,
               all_daemons=args.daemons == "all", rolling=args.start == "rolling"))


if __name__ == "__main__":
    main()
