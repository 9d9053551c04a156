"""`skyge ha ...`: services (the seed's ha_query, ha_status, ha_svc_commander, sk_user_heartbeat).

Text output keeps the seed's layouts::

    $ skyge ha query -d 1
    Type : random : Slot : 1   Service : bind
    Type : fifo : Slot : 0   Service : mysql

    $ skyge ha status
    Service -- fifo: 0 is running on 1   (mysql, since 12:00:01.120, token 7)
              domain waiting for lock :[ 2 ] [ 3 ]

(the seed's "waitting" spelling is fixed). `--output json` prints the replies as JSON (status
--watch: one JSON object per event and line).
"""
from __future__ import annotations

import argparse
import contextlib
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from skyge.clients.cli.arguments import DOMAIN, ranged_int
from skyge.clients.cli.output import CommandFailed, Output, UsageError
from skyge.clients.cli.rpc import _raise_for, node_client, stream, to_dict

if TYPE_CHECKING:
    from skyge.clients.connect import NodeClient

DAEMON = "ha"
#: choice -> name of the ha.proto enum value (resolved when a command runs, see _pb)
TYPES = {"random": "TAKEOVER_RANDOM", "fifo": "TAKEOVER_FIFO", "stack": "TAKEOVER_STACK"}
ACTIONS = {"add": "ACTION_ADD", "start": "ACTION_START", "stop": "ACTION_STOP",
           "release": "ACTION_RELEASE", "remove": "ACTION_REMOVE", "switch": "ACTION_SWITCH"}
SLOT = ranged_int(0, 1023)
#: UNAVAILABLE answers that come from the HA daemon itself (not "cannot connect")
_SERVER_UNAVAILABLE = ("domain ", "this node's domain", "the lock daemon", "skyge-ha is stopping")


def _pb() -> ModuleType:
    """ha_pb2, imported when a command runs: protobuf is too slow to load for `--help`."""
    from skyge.v1 import ha_pb2
    return ha_pb2


def _type_name(value: Any) -> str:
    """"TAKEOVER_FIFO" (JSON) or 2 -> "fifo"."""
    if isinstance(value, int):
        value = _pb().TakeoverOrder.Name(value)
    return str(value).removeprefix("TAKEOVER_").lower()


def _state_name(value: Any) -> str:
    if isinstance(value, int):
        value = _pb().ServiceState.Name(value)
    return str(value).removeprefix("SERVICE_").lower()


def _clock(unix_ns: Any) -> str:
    ns = int(unix_ns or 0)
    if not ns:
        return "-"
    seconds = ns / 1e9
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(ns % 1e9 / 1e6):03d}"


def render_query(data: dict[str, Any]) -> str:
    return "\n".join(f"Type : {_type_name(s['type'])} : Slot : {s['slot']}   Service : {s['name']}"
                     for s in data.get("services", [])) or "(no services)"


def render_service(s: dict[str, Any]) -> str:
    """One service as the seed's ha_status block (+ state, since, token, failures, reason)."""
    state = _state_name(s.get("state"))
    active = int(s.get("active_domain") or 0)
    head = f"Service -- {_type_name(s['type'])}: {s['slot']} is {state}"
    if active:
        head += f" on {active}"
    extra = [s.get("name") or "?", f"since {_clock(s.get('since_unix_ns'))}"]
    if int(s.get("fencing_token") or 0):
        extra.append(f"token {s['fencing_token']}")
    if int(s.get("failed_checks") or 0):
        extra.append(f"failed checks {s['failed_checks']}")
    if int(s.get("fail_count") or 0):
        extra.append(f"failures {s['fail_count']}")
    unmanaged = [str(n["domain"]) for n in s.get("nodes", []) if n.get("unmanaged")]
    if unmanaged:
        extra.append(f"unmanaged on {','.join(unmanaged)}")
    lines = [f"{head}   ({', '.join(extra)})"]
    waiting = " ".join(f"[ {d} ]" for d in s.get("waiting_domains", []))
    lines.append(f"          domain waiting for lock :{waiting}")
    if s.get("reason"):
        lines.append(f"          why: {s['reason']}")
    return "\n".join(lines)


def render_status(data: dict[str, Any]) -> str:
    text = "\n".join(render_service(s) for s in data.get("services", [])) or "(no services)"
    maintenance = [render_maintenance(data)] if data.get("maintenance_domains") else []
    return "\n".join([f"WARNING: {w}" for w in data.get("warnings", [])] + maintenance + [text])


def render_maintenance(data: dict[str, Any]) -> str:
    domains = data.get("maintenance_domains", [])
    if not domains:
        return "maintenance: no node"
    return (f"MAINTENANCE: domain {', '.join(map(str, domains))} (nothing is started, stopped "
            f"or moved there)")


def render_event(data: dict[str, Any]) -> str:
    stamp = _clock(data.get("time_unix_ns"))
    if "snapshot" in data:
        return f"[{stamp}] status\n" + render_status(data["snapshot"])
    if "changed" in data:
        return f"[{stamp}] changed\n" + render_service(data["changed"])
    if "removed" in data:
        s = data["removed"]
        return (f"[{stamp}] removed: Service -- {_type_name(s['type'])}: {s['slot']} "
                f"({s.get('name')})")
    return f"[{stamp}] ?"


def render_command(data: dict[str, Any]) -> str:
    return f"{data.get('message', '')}\n{render_service(data['status'])}"


def _call(args: argparse.Namespace, rpc: str, request: Any, timeout: float | None = None) -> Any:
    import grpc
    with node_client(args) as client:
        try:
            return getattr(client.stub(DAEMON), rpc)(request, timeout=timeout or args.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE and \
                    (error.details() or "").startswith(_SERVER_UNAVAILABLE):
                raise CommandFailed(f"{rpc}: {error.details()}") from None
            _raise_for(error, client, DAEMON, rpc)


def _show(args: argparse.Namespace, out: Output, rpc: str, request: Any, text,
          timeout: float | None = None) -> int:
    out.result(to_dict(_call(args, rpc, request, timeout)), text)
    return 0


def _watch(args: argparse.Namespace, out: Output) -> int:
    import grpc

    def fail(error: grpc.RpcError, client: NodeClient) -> None:
        if error.code() == grpc.StatusCode.UNAVAILABLE and \
                (error.details() or "").startswith(_SERVER_UNAVAILABLE):
            raise CommandFailed(f"WatchStatus: {error.details()}") from None
        _raise_for(error, client, DAEMON, "WatchStatus")

    events = stream(args, DAEMON, "WatchStatus", _pb().WatchStatusRequest(), fail=fail)
    with contextlib.closing(events):
        for event in events:
            data = to_dict(event)
            out.event(data, render_event(data))
    return 0


#: Command and StopAll may run user scripts (start/stop timeouts default to 300 s)
LONG_TIMEOUT_S = 900.0


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("ha", help="high-availability services (Skyge HA)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    query = commands.add_parser("query", help="services configured on a domain (ha_query)")
    query.add_argument("-d", "--domain", type=DOMAIN, required=True, help="node id 1-64")
    query.set_defaults(handler=lambda args, out: _show(
        args, out, "Query", _pb().QueryRequest(domain=args.domain), render_query))

    status = commands.add_parser("status", help="where each service runs and who waits (ha_status)")
    status.add_argument("--watch", action="store_true", help="follow changes live (Ctrl+C ends)")
    status.set_defaults(handler=lambda args, out: (
        _watch(args, out) if args.watch
        else _show(args, out, "Status", _pb().StatusRequest(), render_status)))

    svc = commands.add_parser(
        "svc", help="add/start/stop/release/remove/switch a service (ha_svc_commander)",
        description="add: load slots/TYPE/SLOT/service.cfg on the domain (starts it if onstart = "
                    "yes); start: queue for its lock, run it when granted; stop: stop it there "
                    "but keep the lock (nobody takes over); release: stop it if it runs there and "
                    "give up the lock (the next waiter takes over); remove: forget it there (not "
                    "while it runs or waits there); switch: hand it to the next waiter.")
    svc.add_argument("-d", "--domain", type=ranged_int(0, 64), required=True,
                     help="node id 1-64 (0 with switch: wherever it runs)")
    svc.add_argument("-s", "--slot", type=SLOT, required=True, help="slot folder number 0-1023")
    svc.add_argument("-t", "--type", choices=TYPES, required=True, help="takeover order")
    svc.add_argument("-a", "--action", choices=ACTIONS, required=True, help="what to do")
    svc.add_argument("--wait", type=float, default=LONG_TIMEOUT_S, metavar="SECONDS",
                     help="longest wait for the action (scripts may take their timeouts; "
                          f"default {LONG_TIMEOUT_S:g})")
    svc.set_defaults(handler=_command)

    stopall = commands.add_parser("stopall", help="stop every service on every node")
    stopall.add_argument("--wait", type=float, default=LONG_TIMEOUT_S, metavar="SECONDS",
                         help=f"longest wait (default {LONG_TIMEOUT_S:g})")
    stopall.set_defaults(handler=lambda args, out: _show(
        args, out, "StopAll", _pb().StopAllRequest(), render_status, timeout=args.wait))

    maintenance = commands.add_parser(
        "maintenance", help="leave the services of a node, or of every node, as they are",
        description="Pacemaker's maintenance mode. on: the HA daemon starts, stops, checks and "
                    "moves nothing there (commands are refused, waiting nodes leave the queues, "
                    "and a stopped skyge-ha leaves its services running for the next one to "
                    "adopt: restart or upgrade it then); a lost lock still stops a service. "
                    "off: running services are checked at once and waiting ones queue again. "
                    "Kept across restarts of the daemon.")
    maintenance.add_argument("mode", choices=("on", "off"))
    where = maintenance.add_mutually_exclusive_group()
    where.add_argument("-d", "--domain", type=DOMAIN,
                       help="node id 1-64 (default: the node serving the call)")
    where.add_argument("--all", action="store_true", help="every member of the cluster")
    maintenance.set_defaults(handler=_maintenance)

    pulse = commands.add_parser("pulse", help="user heartbeat: tell skyge the service is alive")
    pulse.add_argument("-s", "--slot", type=SLOT, help="slot folder number 0-1023")
    pulse.add_argument("-t", "--type", choices=TYPES, help="takeover order (with --slot)")
    pulse.add_argument("-n", "--name", help="service name (instead of --slot/--type)")
    pulse.set_defaults(handler=_pulse)


def _command(args: argparse.Namespace, out: Output) -> int:
    pb = _pb()
    request = pb.CommandRequest(domain=args.domain, type=pb.TakeoverOrder.Value(TYPES[args.type]),
                                slot=args.slot, action=pb.Action.Value(ACTIONS[args.action]))
    return _show(args, out, "Command", request, render_command, timeout=args.wait)


def _maintenance(args: argparse.Namespace, out: Output) -> int:
    request = _pb().SetMaintenanceRequest(on=args.mode == "on", domain=args.domain or 0,
                                          all_members=args.all)
    return _show(args, out, "SetMaintenance", request, render_maintenance)


def _pulse(args: argparse.Namespace, out: Output) -> int:
    pb = _pb()
    if args.name is not None:
        if args.type is not None or args.slot is not None:
            raise UsageError("pulse: name the service either by -n NAME or by -t TYPE -s SLOT")
        request = pb.PulseRequest(name=args.name)
    elif args.type is None or args.slot is None:
        raise UsageError("pulse: name the service by -n NAME or by -t TYPE -s SLOT")
    else:
        request = pb.PulseRequest(type=pb.TakeoverOrder.Value(TYPES[args.type]), slot=args.slot)
    return _show(args, out, "Pulse", request, lambda data: (
        f"pulse taken: next one due by {_clock(data.get('deadline_unix_ns'))} "
        f"(pulse_timeout_ms {data.get('pulse_timeout_ms')})"))
