"""Failure detection time of skyge-heartbeat: crash one node of a 3-node lab, many times.

    python -m bench.heartbeat_detect --trials 20 [--detector fixed|adaptive]

How it is measured, per trial: the surviving nodes' WatchMembership streams are open; the crash
instant t0 is the wall clock read right before the victim's heartbeat daemon gets SIGKILL (os.kill,
microseconds), after which the lab crashes the node (cables down, every process killed). Each
survivor's detection time is the `time_unix_ns` of the LEFT event of the victim in its stream (the
daemon's own stamp, the same machine clock) minus t0. p50/p99 are over all survivors' samples
(2 per trial). Then the victim boots, its daemon restarts and the full view is awaited before the
next trial (victims rotate n1, n2, n3). `false_down_events` counts LEFT events of nodes that were
not crashed, seen by any stream during the run.

Corosync comparison keys are null when corosync is not installed (measuring it is not built yet:
see PEERS.md for the figures measured by hand).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import time

from skyge.clients.lab import Lab
from skyge.services.heartbeat.config import DEFAULT_DETECTOR
from skyge.services.heartbeat.detector import DETECTORS
from tests.cluster import heartbeat_support as hs

from bench._common import lab_name, note, percentile, result, rounded

SETTLE_S = 0.5  # quiet time before each crash, so detectors have steady estimates


def run(trials: int, detector: str, nodes: int = 3) -> dict:
    samples: list[float] = []
    per_trial_max: list[float] = []
    false_down = 0
    with Lab.up(nodes=nodes, name=lab_name("hd")) as lab:
        hs.start_cluster(lab, detector=detector)
        everyone = [n.id for n in lab.nodes]
        for trial in range(trials):
            victim = lab.nodes[trial % nodes]
            survivors = [n for n in lab.nodes if n is not victim]
            watches = hs.watches(survivors)
            try:
                time.sleep(SETTLE_S)
                pid = hs.pid(victim)
                t0 = time.time_ns()
                os.kill(pid, signal.SIGKILL)
                victim.crash()
                times = []
                for node in survivors:
                    seen = watches[node.id].wait("left", victim.id, after_ns=t0 - 10**9, timeout=10)
                    times.append((seen.time_unix_ns - t0) / 1e6)
                samples += times
                per_trial_max.append(max(times))
                note(f"trial {trial + 1}/{trials}: {victim.key} crashed, detected in "
                     + ", ".join(f"{t:.1f} ms" for t in times))
                victim.boot()
                hs.start(victim)
                hs.wait_members(lab.nodes, everyone, timeout=10)
            finally:
                for node_id, watch in watches.items():
                    wrong = [e for e in watch.snapshot()
                             if e.kind == "left" and e.domain != victim.id]
                    for e in wrong:
                        note(f"trial {trial + 1}: FALSE DOWN: n{node_id} saw n{e.domain} leave "
                             f"(reason {e.reason}) {(e.time_unix_ns - t0) / 1e6:.1f} ms after "
                             f"the crash of {victim.key}")
                    false_down += len(wrong)
                hs.close_all(watches)
    return {
        "detect_ms_p50": rounded(percentile(samples, 50)),
        "detect_ms_p99": rounded(percentile(samples, 99)),
        "detect_ms_max": rounded(max(samples) if samples else None),
        "detect_ms_p50_slowest_peer": rounded(percentile(per_trial_max, 50)),
        "false_down_events": false_down,
        "trials": trials,
        "samples": len(samples),
        "detector": detector,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="crashes to measure (default 20)")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR,
                        help=f"failure detector (default: {DEFAULT_DETECTOR}, the daemon's)")
    args = parser.parse_args()
    if not 1 <= args.trials <= 1000:
        parser.error("--trials: must be from 1 to 1000")
    figures = run(args.trials, args.detector)
    corosync = shutil.which("corosync")
    if corosync:
        note(f"corosync is installed ({corosync}) but this benchmark does not drive it yet; "
             "its keys stay null")
    figures.update(corosync_default_ms_p50=None, corosync_tuned_ms_p50=None)
    result(figures)


if __name__ == "__main__":
    main()
