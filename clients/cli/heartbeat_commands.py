"""`skyge heartbeat ...` and `skyge hw-code`: membership, links and the name table (jiluos)."""
from __future__ import annotations

import argparse

from skyge.clients.cli.output import Output
from skyge.clients.cli.rpc import call, follow, show, to_dict
from skyge.v1 import heartbeat_pb2 as pb

DAEMON = "heartbeat"


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("heartbeat", help="membership over UDP heartbeats (the seed's jiluos)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("show", help="identity, members and links of this node").set_defaults(
        handler=show_node)
    commands.add_parser("watch", help="follow membership changes live").set_defaults(
        handler=lambda args, out: follow(args, out, DAEMON, "WatchMembership",
                                         pb.WatchMembershipRequest()))
    commands.add_parser("names", help="the cluster name table").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "LookupName", pb.LookupNameRequest()))
    commands.add_parser("stats", help="datagram counters, drops by reason").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "GetStats", pb.GetStatsRequest()))
    hw_code = groups.add_parser("hw-code", help="hardware codes (MAC per NIC), like jl_get_hw_code")
    hw_code.set_defaults(handler=show_hw_code, daemon_target=DAEMON)


def show_node(args: argparse.Namespace, out: Output) -> int:
    data = {
        "identity": to_dict(call(args, DAEMON, "GetIdentity", pb.GetIdentityRequest())),
        "members": to_dict(call(args, DAEMON, "ListMembers", pb.ListMembersRequest())),
        "links": to_dict(call(args, DAEMON, "ListLinks", pb.ListLinksRequest())),
    }
    out.result(data)
    return 0


def show_hw_code(args: argparse.Namespace, out: Output) -> int:
    identity = call(args, DAEMON, "GetIdentity", pb.GetIdentityRequest())
    codes = {path.nic: path.hw_code for path in identity.paths}
    out.result(codes, "\n".join(f"{nic} : {code}" for nic, code in codes.items()))
    return 0
