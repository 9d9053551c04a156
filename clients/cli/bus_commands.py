"""`skyge bus ...`: message buses (the seed's mb_cli_create_service, mb_cli_get_service,
mb_general_provider, yc_msg_spy, mb_cli_delete_service)."""
from __future__ import annotations

import argparse

from skyge.clients.cli.arguments import DOMAIN, ranged_int
from skyge.clients.cli.rpc import follow, show
from skyge.v1 import bus_pb2 as pb

DAEMON = "bus"


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("bus", help="named message buses (messagebus, youchai)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def bus_command(name: str, help_text: str, named: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("-d", "--domain", type=DOMAIN, required=True,
                            help="domain (node id 1-64) that owns the bus")
        if named:
            parser.add_argument("-n", "--name", required=True, help="bus name")
        return parser

    create = bus_command("create", "create a bus owned by a domain")
    create.add_argument("--slot", type=ranged_int(0, 65535), default=0, help="slot (0 = assign)")
    create.add_argument("--retain", type=ranged_int(0, 1_000_000), default=0,
                        help="messages kept for resuming subscribers (0 = default)")
    create.add_argument("--max-payload", type=ranged_int(0, 16 << 20), default=0,
                        help="largest message in bytes (0 = default)")
    create.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "CreateBus",
                        pb.CreateBusRequest(domain=args.domain, name=args.name, slot=args.slot,
                                            retain_messages=args.retain,
                                            max_payload_bytes=args.max_payload)))
    bus_command("list", "list the buses of a domain", named=False).set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "ListBuses",
                                       pb.ListBusesRequest(domain=args.domain)))
    bus_command("delete", "delete a bus").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "DeleteBus",
                                       pb.DeleteBusRequest(domain=args.domain, name=args.name)))
    bus_command("init", "create the standard log/cmd/state buses", named=False).set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "InitBuses",
                                       pb.InitBusesRequest(domain=args.domain)))
    send = bus_command("send", "publish a message (mb_general_provider)")
    send.add_argument("-m", "--message", required=True, help="message text")
    send.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "Publish", pb.PublishRequest(
        domain=args.domain, name=args.name,
        messages=[pb.Payload(data=args.message.encode(), content_type="text/plain")])))
    spy = bus_command("spy", "print a bus's messages as they come (yc_msg_spy)")
    spy.add_argument("--from", dest="from_sequence", type=ranged_int(0, 2**63 - 1), default=0,
                     help="resume from this sequence number (0 = new messages only)")
    spy.set_defaults(handler=lambda args, out: follow(args, out, DAEMON, "Subscribe",
                     pb.SubscribeRequest(domain=args.domain, name=args.name,
                                         from_sequence=args.from_sequence)))
