"""python -m tests.cts: run CTS scenarios on a fresh lab and print one RESULT line.

    python -m tests.cts --minutes 10          # random scenarios for 10 minutes (the default)
    python -m tests.cts --scenario crash_active --scenario freeze_active_1s
    python -m tests.cts --all                 # every scenario once, in registry order
    python -m tests.cts --list

Progress goes to stderr, one line per scenario; the last line on stdout is ``RESULT {json}``.
Exit status 0 when every scenario passed and nothing was double active, 1 otherwise, 2 on bad
usage. The lab is taken down at the end, also on errors and Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from skyge.clients.lab import LabError
from tests.cts.cluster import CtsCluster, ScenarioFailed
from tests.cts.runner import Verdict, deck, in_order, run_many, summary
from tests.cts.scenarios import SCENARIOS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.cts", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="run random scenarios for this long (default 10; not with "
                             "--scenario or --all)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME",
                        help="run this scenario once (repeat for more); see --list")
    parser.add_argument("--all", action="store_true", help="run every scenario once, in order")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--nodes", type=int, default=3, help="lab nodes, 2 to 8 (default 3)")
    parser.add_argument("--backend", choices=("builtin", "etcd"), default="builtin",
                        help="what grants the locks: the built-in authority (default) or an "
                             "etcd of one member per node (3 nodes or more)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="copy the record, the prober's log and every node's logs here "
                             "before the lab goes down")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 8:
        parser.error("--nodes must be 2 to 8")
    if args.backend == "etcd" and args.nodes < 3:
        parser.error("--backend etcd needs --nodes 3 or more (etcd grants only with a majority; "
                     "two-node clusters use the built-in authority)")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    for name in args.scenario or ():
        if SCENARIOS[name].min_nodes > args.nodes:
            parser.error(f"{name} needs at least {SCENARIOS[name].min_nodes} nodes")
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def report(verdict: Verdict) -> None:
    details = [f"{verdict.seconds} s"]
    if verdict.recovery_s is not None:
        details.append(f"recovery {verdict.recovery_s} s")
    if verdict.availability is not None and verdict.availability.percent is not None:
        details.append(f"availability {verdict.availability.percent:.1f}%")
    say(f"{'PASS' if verdict.passed else 'FAIL'} {verdict.name} ({', '.join(details)})")
    if not verdict.passed:
        say("    " + verdict.explain().replace("\n", "\n  "))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:26} {scenario.limit_s:4.0f} s  {scenario.summary}")
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    eligible = [n for n, s in SCENARIOS.items() if s.min_nodes <= args.nodes]
    if args.scenario:
        choose = in_order(args.scenario)
    elif args.all:
        choose = in_order(eligible)
    else:
        choose = deck(eligible, rng, args.minutes * 60)
    started = time.monotonic()
    say(f"seed {seed}; setting up a {args.nodes}-node lab ...")
    try:
        cluster = CtsCluster.up(nodes=args.nodes, backend=args.backend)
    except (LabError, ScenarioFailed) as error:
        print("RESULT " + json.dumps({"scenarios": 0, "seed": seed, "nodes": args.nodes,
                                      "backend": args.backend,
                                      "aborted": f"setup: {error}"}), flush=True)
        return 1
    verdicts: list[Verdict] = []
    aborted = None
    try:
        say(f"lab {cluster.lab.name} up, service running; record {cluster.record.path}")
        try:
            for verdict in run_many(cluster, choose, rng):
                verdicts.append(verdict)
                report(verdict)
        except (LabError, ScenarioFailed) as error:  # the harness could not reset the cluster
            aborted = f"{type(error).__name__}: {error}"
            say(f"ABORTED: {aborted}")
        result = summary(cluster, verdicts, seed=seed, nodes=args.nodes, aborted=aborted,
                         backend=args.backend,
                         seconds=round(time.monotonic() - started, 1))
    finally:
        if args.save:
            cluster.save(args.save)
        cluster.down()
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0 if not (result["failed"] or result["double_active"] or aborted) else 1


if __name__ == "__main__":
    sys.exit(main())
