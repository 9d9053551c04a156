"""`skyge emon ...`: CPU, memory and disk probes and their watermarks (the seed's emon)."""
from __future__ import annotations

import argparse

from skyge.clients.cli.rpc import follow, show
from skyge.v1 import emon_pb2 as pb

DAEMON = "emon"


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("emon", help="environment monitor: probes and watermarks")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("show", help="current value of every probe").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "GetCurrent", pb.GetCurrentRequest()))
    commands.add_parser("watch", help="follow the probes live").set_defaults(
        handler=lambda args, out: follow(args, out, DAEMON, "Watch", pb.WatchRequest()))
    commands.add_parser("probes", help="list the probes").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "ListProbes", pb.ListProbesRequest()))
    commands.add_parser("watermarks", help="list the watermarks and their state").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "ListWatermarks",
                                       pb.ListWatermarksRequest()))
