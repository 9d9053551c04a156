"""`skyge demo`: the README's main job, a virtual 3-node cluster on this machine."""
from __future__ import annotations

import argparse
import sys

from skyge.clients.cli.arguments import ranged_int
from skyge.clients.cli.output import CommandFailed, Output, UsageError


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("demo", help="run the virtual-cluster demo (needs root)")
    parser.add_argument("--nodes", type=ranged_int(2, 8), default=3, help="nodes (2-8, default 3)")
    parser.add_argument("--fence", action="store_true",
                        help="give the lock daemons the lab's fence command (power a lost node "
                             "off): the crashed node's service is taken over once it is off, "
                             "not when its leases ran out")
    parser.add_argument("--backend", choices=("builtin", "etcd"), default="builtin",
                        help="what grants the locks: the lock daemons' built-in authority "
                             "(default) or an etcd of one member per node (3 nodes or more)")
    parser.set_defaults(handler=run, daemon_target=None)


def run(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.lab import LabError
    from skyge.clients.lab.demo import run_demo

    def narrate(line: str) -> None:  # on stderr when stdout carries the JSON report
        print(line, file=sys.stderr if out.json else sys.stdout)

    if args.backend == "etcd" and args.nodes < 3:
        raise UsageError(f"--backend etcd needs --nodes 3 or more, got {args.nodes}: etcd grants "
                         f"only with a majority, and of two nodes cut apart neither has one; "
                         f"two-node clusters use the built-in authority (the default)")
    try:
        report = run_demo(narrate, nodes=args.nodes, fence=args.fence, backend=args.backend)
    except LabError as error:
        raise CommandFailed(f"demo: {error}") from None
    out.result(report, "")
    return 0
