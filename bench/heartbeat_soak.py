"""Steadiness of skyge-heartbeat: a 3-node lab left alone, optionally loaded and lossy.

    python -m bench.heartbeat_soak --minutes 10 [--hog] [--loss 20] [--detector fixed|adaptive]

Every node's WatchMembership stream is read for the whole run. `false_down_events`: LEFT events
(no node is stopped, so every one is false); `link_flaps`: link-down events (each node reports its
own links, so one flapping pair can count twice). `--hog` runs one busy-looping process per CPU
at normal priority for the whole run (both cores saturated); `--loss P` drops P % of the frames
each node sends on eth1 (path 2), at random, in the lab's switch. `cpu_percent_per_daemon`: the
mean over the daemons of their CPU time (user + system, psutil) over the run, in percent of one
core. `--minutes` may be fractional (0.5 for a smoke test).
"""
from __future__ import annotations

import argparse
import contextlib
import time

from skyge.clients.lab import Lab
from skyge.services.heartbeat.config import DEFAULT_DETECTOR
from skyge.services.heartbeat.detector import DETECTORS
from tests.cluster import heartbeat_support as hs

from bench._common import CpuMeter, Hog, lab_name, note, result, rounded

LOSSY_NIC = "eth1"


def run(minutes: float, hog: bool, loss: float, detector: str, nodes: int = 3) -> dict:
    with Lab.up(nodes=nodes, name=lab_name("hs")) as lab:
        hs.start_cluster(lab, detector=detector)
        if loss:
            for node in lab.nodes:
                node.set_loss(LOSSY_NIC, loss, "out")
        watches = hs.watches(lab.nodes)
        meter = CpuMeter(hs.pid(n) for n in lab.nodes)
        try:
            with Hog() if hog else contextlib.nullcontext():
                meter.start()
                end = time.monotonic() + minutes * 60
                while (left := end - time.monotonic()) > 0:
                    time.sleep(min(left, 30))
                    seen = [e for w in watches.values() for e in w.snapshot()]
                    note(f"{(minutes * 60 - max(left - 30, 0)) / 60:.1f} min: "
                         f"{sum(e.kind == 'left' for e in seen)} down, "
                         f"{sum(e.kind == 'link' and not e.up for e in seen)} link flaps")
                cpu = meter.stop()
            views = {n.key: sorted(hs.members(n)) for n in lab.nodes}
        finally:
            events = [e for w in watches.values() for e in w.snapshot()]
            errors = [w.error for w in watches.values() if w.error]
            hs.close_all(watches)
    if errors:
        raise SystemExit(f"a watch stream failed: {errors}")
    return {
        "false_down_events": sum(e.kind == "left" for e in events),
        "link_flaps": sum(e.kind == "link" and not e.up for e in events),
        "cpu_percent_per_daemon": rounded(sum(cpu) / len(cpu)),
        "cpu_percent_max": rounded(max(cpu)),
        "minutes": minutes, "hog": hog, "loss_percent": loss, "detector": detector,
        "final_views_complete": all(v == [n + 1 for n in range(nodes)] for v in views.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--hog", action="store_true", help="saturate every CPU meanwhile")
    parser.add_argument("--loss", type=float, default=0.0,
                        help=f"percent loss on path 2 ({LOSSY_NIC}) of every node (default 0)")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR)
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes: must be more than 0 and at most 1440")
    if not 0 <= args.loss <= 100:
        parser.error("--loss: must be from 0 to 100")
    result(run(args.minutes, args.hog, args.loss, args.detector))


if __name__ == "__main__":
    main()
