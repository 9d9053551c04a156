"""`skyge bus ...`: message buses (the seed's mb_cli_create_service, mb_cli_get_service,
mb_general_provider, yc_msg_spy, mb_cli_delete_service, and the *_init.sh scripts).

Text output is the seed's:

    $ skyge bus create -d 1 -n Mytestmb
    create service Mytestmb 0 1 successfully.
    $ skyge bus list -d 1
    There are 1 services
    Service0: Mytestmb 0 64
    $ skyge bus send -d 1 -n Mytestmb -m Hello
    send successfully
    $ skyge bus spy -d 1 -n Mytestmb
    Hello
    $ skyge bus delete -d 1 -n Mytestmb
    Delete service Mytestmb successfully.

(In "create service NAME 0 D" and "ServiceI: NAME 0 SLOT", 0 is the bus type, collector.)
`--output json` prints the replies as in bus.proto; `spy` prints one object per message with its
metadata (sequence, sender_domain, time_unix_ns, time, content_type, data, data_base64) and one
`{"missed": N}` object when the subscriber fell behind by N messages.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import sys
from datetime import datetime, UTC
from types import ModuleType
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from skyge.clients.cli.arguments import DOMAIN, ranged_int
from skyge.clients.cli.output import CommandFailed, Output, UsageError
from skyge.clients.cli.rpc import input_codes, node_client, stream, to_dict

if TYPE_CHECKING:  # imported by the commands themselves: gRPC is slow to load for `--help`
    import grpc
    from google.protobuf.message import Message

    from skyge.clients.connect import NodeClient
    from skyge.v1 import bus_pb2 as pb

DAEMON = "bus"
BUS_TYPE_NUMBER = 0  # the seed's number for a "collector" bus


def _pb() -> ModuleType:
    """bus_pb2, imported when a command runs: protobuf is too slow to load for `--help`."""
    from skyge.v1 import bus_pb2
    return bus_pb2


def _fail(error: grpc.RpcError, client: NodeClient, rpc: str) -> None:
    from skyge.clients.connect import describe_rpc_error
    from skyge.services.bus.server import is_bus_error
    if is_bus_error(error):  # a bus daemon refused the call (not the local socket failing)
        message = f"{rpc}: {error.details()} ({error.code().name})"
    else:
        message = describe_rpc_error(error, DAEMON, client.target(DAEMON), rpc)
    if error.code() in input_codes():
        raise UsageError(message) from None
    raise CommandFailed(message) from None


def _call(args: argparse.Namespace, rpc: str, request: Message) -> Any:
    import grpc
    with node_client(args) as client:
        try:
            return getattr(client.stub(DAEMON), rpc)(request, timeout=args.timeout)
        except grpc.RpcError as error:
            _fail(error, client, rpc)


Handler = Callable[[argparse.Namespace, Output], int]


def _show(rpc: str, request: Callable[[ModuleType, argparse.Namespace], Message],
          text: Callable[[Any, argparse.Namespace], str]) -> Handler:
    """A command calling `rpc` with `request(bus_pb2, args)` and printing `text(reply, args)`."""
    def handler(args: argparse.Namespace, out: Output) -> int:
        reply = _call(args, rpc, request(_pb(), args))
        out.result(to_dict(reply), text(reply, args))
        return 0
    return handler


def _created(name: str, domain: int) -> str:
    return f"create service {name} {BUS_TYPE_NUMBER} {domain} successfully."


def _list_text(reply: pb.ListBusesResponse, args: argparse.Namespace) -> str:
    lines = [f"There are {len(reply.buses)} services"]
    lines += [f"Service{i}: {b.name} {BUS_TYPE_NUMBER} {b.slot}" for i, b in enumerate(reply.buses)]
    return "\n".join(lines)


def _init_text(reply: pb.InitBusesResponse, args: argparse.Namespace) -> str:
    created = set(reply.created)
    lines = []
    for bus in reply.buses:
        if bus.name in created:
            lines += [_created(bus.name, bus.domain), f"{bus.name} has been created"]
        else:
            lines.append(f"{bus.name} has been existed")
    return "\n".join(lines)


def message_dict(message: pb.BusMessage) -> dict[str, Any]:
    """A delivered message as `spy --output json` prints it."""
    try:
        text: str | None = message.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    moment = datetime.fromtimestamp(message.time_unix_ns / 1e9, tz=UTC)
    return {"sequence": message.sequence, "sender_domain": message.sender_domain,
            "time_unix_ns": message.time_unix_ns,
            "time": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "content_type": message.content_type, "data": text,
            "data_base64": base64.b64encode(message.data).decode()}


def spy(args: argparse.Namespace, out: Output) -> int:
    request = _pb().SubscribeRequest(domain=args.domain, name=args.name,
                                     from_sequence=args.from_sequence, max_batch=args.max_batch,
                                     flow_control=args.flow_control)
    received = 0
    deliveries = stream(args, DAEMON, "Subscribe", request,
                        fail=lambda error, client: _fail(error, client, "Subscribe"))
    with contextlib.closing(deliveries):
        for delivery in deliveries:
            if not delivery.messages and not delivery.missed:
                sys.stderr.write(f"listening to bus {args.name} of domain {args.domain} "
                                 f"(Ctrl+C to stop)\n")
                sys.stderr.flush()
                continue
            if delivery.missed:
                first = delivery.messages[0].sequence if delivery.messages else 0
                out.event({"missed": delivery.missed, "next_sequence": first})
                if not out.json:
                    sys.stderr.write(f"skyge: missed {delivery.missed} messages (this spy "
                                     f"fell behind what the bus retains)\n")
            for message in delivery.messages:
                if out.json:
                    out.event(message_dict(message))
                else:
                    out.event(None, message.data.decode("utf-8", errors="replace"))
                received += 1
                if args.count and received >= args.count:
                    return 0
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("bus", help="named message buses (messagebus, youchai)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def bus_command(name: str, help_text: str, named: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("-d", "--domain", type=DOMAIN, required=True,
                            help="domain (node id 1-64) that owns the bus")
        if named:
            parser.add_argument("-n", "--name", required=True,
                                help="bus name: 1-64 characters of A-Z a-z 0-9 . _ -")
        return parser

    create = bus_command("create", "create a bus owned by a domain (mb_cli_create_service)")
    create.add_argument("--slot", type=ranged_int(0, 1023), default=0,
                        help="slot 1-1023 (default 0: the lowest free one from 64)")
    create.add_argument("--retain", type=ranged_int(0, 65536), default=0,
                        help="messages kept for resuming and slow subscribers, 1-65536 "
                             "(default 0: 1024)")
    create.add_argument("--max-payload", type=ranged_int(0, 1 << 20), default=0,
                        help="largest message in bytes, 1-1048576 (default 0: 65536)")
    create.set_defaults(handler=_show(
        "CreateBus", lambda pb, a: pb.CreateBusRequest(domain=a.domain, name=a.name, slot=a.slot,
                                                       retain_messages=a.retain,
                                                       max_payload_bytes=a.max_payload),
        lambda reply, a: _created(reply.name, reply.domain)))

    bus_command("list", "list the buses of a domain (mb_cli_get_service)", named=False
                ).set_defaults(handler=_show(
                    "ListBuses", lambda pb, a: pb.ListBusesRequest(domain=a.domain), _list_text))

    bus_command("delete", "delete a bus (mb_cli_delete_service)").set_defaults(handler=_show(
        "DeleteBus", lambda pb, a: pb.DeleteBusRequest(domain=a.domain, name=a.name),
        lambda reply, a: f"Delete service {reply.deleted.name} successfully."))

    init = bus_command("init", "create the standard log/cmd/state buses (bl_init.sh, "
                               "ha_init.sh, em_init.sh; done by the daemon at start too)",
                       named=False)
    init.add_argument("-s", "--subsystem", action="append", default=[],
                      choices=("heartbeat", "bus", "lock", "ha", "emon"),
                      help="only this subsystem's buses (repeatable; default: all)")
    init.set_defaults(handler=_show(
        "InitBuses", lambda pb, a: pb.InitBusesRequest(domain=a.domain, subsystems=a.subsystem),
        _init_text))

    send = bus_command("send", "publish a message (mb_general_provider)")
    send.add_argument("-m", "--message", required=True, help="message text")
    send.add_argument("--content-type", default="text/plain; charset=utf-8",
                      help="MIME type passed to subscribers (default: text/plain; charset=utf-8)")
    send.set_defaults(handler=_show(
        "Publish", lambda pb, a: pb.PublishRequest(domain=a.domain, name=a.name, messages=[
            pb.Payload(data=a.message.encode(), content_type=a.content_type)]),
        lambda reply, a: "send successfully"))

    spy_parser = bus_command("spy", "print a bus's messages as they come (yc_msg_spy)")
    spy_parser.add_argument("--from", dest="from_sequence", type=ranged_int(0, 2**63 - 1),
                            default=0, help="resume from this sequence number (default 0: new "
                                            "messages only)")
    spy_parser.add_argument("--count", type=ranged_int(0, 2**31 - 1), default=0,
                            help="exit after this many messages (default 0: never)")
    spy_parser.add_argument("--max-batch", type=ranged_int(0, 1024), default=0,
                            help="most messages per delivery, 1-1024 (default 0: 64)")
    spy_parser.add_argument("--flow-control", action="store_true",
                            help="miss nothing: the bus slows its publishers to this spy's pace "
                                 "(a spy that stops reading for 3 s is dropped)")
    spy_parser.set_defaults(handler=spy)
