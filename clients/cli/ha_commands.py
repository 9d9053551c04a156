"""`skyge ha ...`: services (the seed's ha_query, ha_status, ha_svc_commander, sk_user_heartbeat)."""
from __future__ import annotations

import argparse

from skyge.clients.cli.arguments import DOMAIN, ranged_int
from skyge.clients.cli.rpc import follow, show
from skyge.v1 import ha_pb2 as pb

DAEMON = "ha"
TYPES = {"random": pb.TAKEOVER_RANDOM, "fifo": pb.TAKEOVER_FIFO, "stack": pb.TAKEOVER_STACK}
ACTIONS = {"add": pb.ACTION_ADD, "start": pb.ACTION_START, "stop": pb.ACTION_STOP,
           "release": pb.ACTION_RELEASE, "remove": pb.ACTION_REMOVE, "switch": pb.ACTION_SWITCH}
SLOT = ranged_int(0, 1023)


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("ha", help="high-availability services (Skyge HA)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    query = commands.add_parser("query", help="services configured on a domain (ha_query)")
    query.add_argument("-d", "--domain", type=DOMAIN, required=True, help="node id 1-64")
    query.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "Query",
                                                      pb.QueryRequest(domain=args.domain)))

    status = commands.add_parser("status", help="where each service runs and who waits (ha_status)")
    status.add_argument("--watch", action="store_true", help="follow changes live")
    status.set_defaults(handler=lambda args, out: (
        follow(args, out, DAEMON, "WatchStatus", pb.WatchStatusRequest()) if args.watch
        else show(args, out, DAEMON, "Status", pb.StatusRequest())))

    svc = commands.add_parser("svc", help="add/start/stop/release/remove/switch a service "
                                          "(ha_svc_commander)")
    svc.add_argument("-d", "--domain", type=DOMAIN, required=True, help="node id 1-64")
    svc.add_argument("-s", "--slot", type=SLOT, required=True, help="slot folder number 0-1023")
    svc.add_argument("-t", "--type", choices=TYPES, required=True, help="takeover order")
    svc.add_argument("-a", "--action", choices=ACTIONS, required=True, help="what to do")
    svc.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "Command", pb.CommandRequest(
        domain=args.domain, type=TYPES[args.type], slot=args.slot, action=ACTIONS[args.action])))

    commands.add_parser("stopall", help="stop every service on every node").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "StopAll", pb.StopAllRequest()))

    pulse = commands.add_parser("pulse", help="user heartbeat: tell skyge the service is alive")
    pulse.add_argument("-s", "--slot", type=SLOT, help="slot folder number 0-1023")
    pulse.add_argument("-t", "--type", choices=TYPES, help="takeover order (with --slot)")
    pulse.add_argument("-n", "--name", help="service name (instead of --slot/--type)")
    pulse.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "Pulse", pb.PulseRequest(
        type=TYPES.get(args.type, pb.TAKEOVER_ORDER_UNSPECIFIED), slot=args.slot or 0,
        name=args.name or "")))
