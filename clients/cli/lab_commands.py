"""`skyge lab ...`: a virtual cluster on this machine (network namespaces), for tests and demos.

    skyge lab up --nodes 3              # namespaces n1..n3, gateway gw, client cl
    skyge lab up --nodes 3 --etcd       # ... and an etcd member per node (lock.cfg backend etcd)
    skyge lab status
    skyge lab exec n1 -- ping -c1 10.0.0.12
    skyge lab spawn n1 --as hb -- skyge-heartbeat -r /run/skyge-lab/skyge/n1
    skyge lab cut n2 eth0 / restore n2 eth0
    skyge lab partition 1 2,3 [--gateway-group 1|none] / heal
    skyge lab loss n1 eth1 20 [--direction in|out|both] [--peer n2]
    skyge lab freeze n2 / thaw n2 / kill n2 hb [--signal TERM] / crash n2 / boot n2
    skyge lab down

Every action takes `--name` (default "skyge"); the lab lives until `down` (it outlives the `up`
command). Needs root. See `skyge.clients.lab` for the design and the address plan.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from skyge.clients.cli.output import CommandFailed, Output, UsageError

if TYPE_CHECKING:
    from skyge.clients.lab import Lab

# As in skyge.clients.lab (a test keeps them equal): the commands import the lab package, which
# is too slow to load for `--help`.
DEFAULT_NAME = "skyge"
MAX_NODES = 64
NICS = ("eth0", "eth1")

Handler = Callable[[argparse.Namespace, Output], int]


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = groups.add_parser("lab", help="virtual cluster on this machine (network namespaces)",
                            description=__doc__.split("\n\n")[0])
    actions = lab.add_subparsers(dest="lab_action", metavar="ACTION")
    actions.required = True

    def action(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text,
                                                             description=help_text)
        parser.add_argument("--name", default=DEFAULT_NAME,
                            help=f"lab name (default: {DEFAULT_NAME})")
        parser.set_defaults(handler=_guard(handler))
        return parser

    up = action("up", lab_up, "create a lab: N nodes, a gateway and a client")
    up.add_argument("--nodes", required=True, metavar="N",
                    help=f"number of nodes, 1 to {MAX_NODES}")
    up.add_argument("--etcd", action="store_true",
                    help="also run an etcd member in every node (3 nodes or more), on its "
                         "private address, port 2379, for lock.cfg's backend = \"etcd\"")
    action("status", lab_status, "nodes, namespaces, addresses, links and processes of a lab")
    action("down", lab_down, "remove a lab: processes, namespaces, cables, folders (idempotent)")

    run = action("exec", lab_exec, "run a command in a host (n1..nN, gw, cl) and wait for it")
    run.add_argument("host", help="n1..nN, gw or cl")
    run.add_argument("--max-time", type=float, metavar="SECONDS",
                     help="kill the command after this many seconds (default: no limit)")
    _takes_command(run)
    spawn = action("spawn", lab_spawn, "start a background process (daemon) in a host")
    spawn.add_argument("host", help="n1..nN, gw or cl")
    spawn.add_argument("--as", dest="label", metavar="LABEL",
                       help="name to refer to it by (kill, status); default: the program name")
    _takes_command(spawn)

    for name, handler, text in (("cut", lab_cut, "pull the cable of a host's NIC"),
                                ("restore", lab_restore, "plug a cut cable back in")):
        parser = action(name, handler, text)
        parser.add_argument("host", help="n1..nN, gw or cl")
        parser.add_argument("nic", choices=NICS)
    loss = action("loss", lab_loss, "random loss on a host's cable (0 removes it)")
    loss.add_argument("host", help="n1..nN, gw or cl")
    loss.add_argument("nic", choices=NICS)
    loss.add_argument("percent", help="0 to 100")
    loss.add_argument("--direction", choices=("both", "in", "out"), default="both",
                      help="in: frames to the host, out: frames from it (default: both)")
    loss.add_argument("--peer", help="only frames between the host and this peer")
    part = action("partition", lab_partition,
                  "split the nodes into groups that cannot reach each other (both networks)")
    part.add_argument("groups", nargs="+", metavar="GROUP",
                      help="comma-separated node ids, e.g. 1 2,3 "
                           "(unlisted nodes form one more group)")
    part.add_argument("--gateway-group", default="1", metavar="G|none",
                      help="group (1-based) the gateway and client stay with, or none (default: 1)")
    action("heal", lab_heal, "undo the partition")
    for name, handler, text in (("freeze", lab_freeze, "SIGSTOP every process of a host"),
                                ("thaw", lab_thaw, "SIGCONT every process of a host"),
                                ("crash", lab_crash,
                                 "power a node off: kill everything, cables dead"),
                                ("boot", lab_boot, "power a crashed node on again (and its "
                                 "etcd member, in a lab up with --etcd)")):
        hosts = "n1..nN, gw or cl" if name in ("freeze", "thaw") else "n1..nN"
        action(name, handler, text).add_argument("host", help=hosts)
    kill = action("kill", lab_kill, "send a signal (default KILL) to one process of a host")
    kill.add_argument("host", help="n1..nN, gw or cl")
    kill.add_argument("target", help="PID, or the label given to spawn")
    kill.add_argument("--signal", default="KILL", help="signal name or number (default: KILL)")


def _takes_command(parser: argparse.ArgumentParser) -> None:
    """Everything after the first `--` is the command (args.cmd), whatever options come before.

    argparse alone cannot mix `HOST [--opt X] -- CMD...` (its positionals are matched before the
    options), so the sub-parser splits its arguments at `--` itself.
    """
    parser.usage = "%(prog)s [options] HOST -- COMMAND [ARGS...]"
    parser.set_defaults(cmd=[])
    parse = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        args = list(args or [])
        cmd: list[str] = []
        if "--" in args:
            cut = args.index("--")
            args, cmd = args[:cut], args[cut + 1:]
        namespace, extras = parse(args, namespace)
        namespace.cmd = cmd
        return namespace, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _guard(handler: Handler) -> Handler:
    """Turn lab errors into the CLI's one-line failures (exit 1)."""
    def run(args: argparse.Namespace, out: Output) -> int:
        from skyge.clients.lab import LabError, validate_name
        try:
            validate_name(args.name)
        except LabError as error:
            raise UsageError(f"--name: {error}") from None
        try:
            return handler(args, out)
        except LabError as error:
            raise CommandFailed(str(error)) from None
    return run


def _attach(name: str) -> Lab:
    from skyge.clients.lab import Lab, LabError, known_labs
    try:
        return Lab.attach(name)
    except LabError:
        others = [lab for lab in known_labs() if lab != name]
        hint = f" (labs on this machine: {', '.join(others)})" if others else ""
        raise CommandFailed(f"lab {name!r} is not up{hint}; start it with "
                            f"`skyge lab up --nodes N --name {name}`") from None


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    if not cmd:
        raise UsageError(f"lab {args.lab_action}: give the command after --, e.g. "
                         f"skyge lab {args.lab_action} n1 -- ip addr")
    return cmd


# -- life cycle ---------------------------------------------------------------------------------
def lab_up(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.lab import Lab
    try:
        nodes = int(args.nodes)
    except ValueError:
        nodes = 0
    if not 1 <= nodes <= MAX_NODES:
        raise UsageError(f"--nodes must be a whole number from 1 to {MAX_NODES}, "
                         f"got {args.nodes!r}")
    if args.etcd and nodes < 3:
        raise UsageError(f"--etcd needs 3 nodes or more, got {nodes}: etcd grants only with a "
                         f"majority, and of two nodes cut apart neither has one; two-node "
                         f"clusters use the lock daemon's built-in authority (backend = "
                         f"\"builtin\", the default) with its two-node rule")
    lab = Lab.up(nodes=nodes, name=args.name, detached=True)
    if args.etcd:
        from skyge.clients.lab.etcd import start_etcd
        try:
            start_etcd(lab)
        except BaseException:
            lab.down()
            raise
    status = _with_etcd(lab, lab.status())
    out.result(status, lambda s: f"lab {s['name']} is up\n" + render_status(s))
    return 0


def _with_etcd(lab: Lab, status: dict[str, Any]) -> dict[str, Any]:
    """The lab's status, with `etcd`: the endpoints of its etcd members (lock.cfg's
    etcd_endpoints) and the nodes whose member runs, or None when it runs none."""
    from skyge.clients.lab.etcd import endpoints_for, members_of, running
    members = members_of(lab)
    status["etcd"] = ({"endpoints": endpoints_for(None, members),
                       "running": [n.key for n in members if running(n)]}
                      if members else None)
    return status


def lab_down(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.lab import destroy
    removed = destroy(args.name)
    out.result({"name": args.name, "removed": removed},
               f"lab {args.name} is down" if removed else f"lab {args.name} was not up")
    return 0


def lab_status(args: argparse.Namespace, out: Output) -> int:
    lab = _attach(args.name)
    out.result(_with_etcd(lab, lab.status()), render_status)
    return 0


def render_status(s: dict[str, Any]) -> str:
    lines = [f"lab {s['name']}: {s['nodes']} node(s), switch namespace {s['switch']}, "
             f"root {s['root']}"]
    part = s.get("partition")
    if part:
        groups = " | ".join(",".join(f"n{i}" for i in g) for g in part["groups"])
        where = "alone" if part["gateway"] is None else f"with group {part['gateway'] + 1}"
        lines.append(f"partition: {groups} (gateway and client {where})")
    for rule in s.get("loss", []):
        peer = f" with {rule['peer']}" if rule["peer"] else ""
        lines.append(f"loss: {rule['host']} {rule['nic']} {rule['dir']} {rule['percent']:g}%{peer}")
    etcd = s.get("etcd")
    if etcd:
        lines.append(f"etcd: members running on {', '.join(etcd['running']) or 'no node'}; "
                     f"lock.cfg: backend = \"etcd\"; etcd_endpoints = \"{etcd['endpoints']}\";")
    lines.append(f"{'HOST':5} {'STATE':8} {'PROCS':>5}  {'NETNS':14} {'eth0':32} eth1")
    for host in s["hosts"]:
        cells = []
        for nic in NICS:
            info = host["nics"].get(nic)
            if info is None:
                cells.append("-")
                continue
            bridge = info["bridge"]
            on = "" if bridge in ("pub", "priv") else f" @{bridge or 'none'}"
            cells.append(f"{','.join(info['addresses'])} {info['link']}{on}")
        lines.append(f"{host['host']:5} {host['state']:8} {host['processes']:>5}  "
                     f"{host['netns']:14} {cells[0]:32} {cells[1]}")
    return "\n".join(lines)


# -- processes ----------------------------------------------------------------------------------
def lab_exec(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    cmd = _command(args)
    if args.max_time is not None and args.max_time <= 0:
        raise UsageError(f"--max-time must be more than 0 seconds, got {args.max_time:g}")
    if out.json:
        done = host.run(cmd, timeout=args.max_time or 24 * 3600.0)
        out.result({"host": host.key, "argv": cmd, "returncode": done.returncode,
                    "stdout": done.stdout, "stderr": done.stderr})
        return done.returncode
    try:
        return subprocess.run(host.command(cmd), env=host.environment(),
                              timeout=args.max_time).returncode
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{host.key}: {' '.join(cmd)} killed after "
                            f"{args.max_time:g} s") from None
    except FileNotFoundError as error:
        raise CommandFailed(f"{host.key}: {error}") from None


def lab_spawn(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    cmd = _command(args)
    proc = host.spawn(cmd, name=args.label)
    label = args.label or cmd[0].rsplit("/", 1)[-1]
    log = host.root / "var" / "log" / f"{label}.log"
    out.result({"host": host.key, "pid": proc.pid, "name": label, "argv": cmd, "log": str(log)},
               f"{host.key}: started {label} (pid {proc.pid}), output in {log}")
    return 0


def lab_kill(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    sig = _signal(args.signal)
    target: int | str = int(args.target) if args.target.isdigit() else args.target
    pids = host.kill(target, sig)
    out.result({"host": host.key, "signal": sig.name, "pids": pids},
               f"{host.key}: sent {sig.name} to {', '.join(map(str, pids))}")
    return 0


def _signal(text: str) -> signal.Signals:
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        name = text.upper()
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise UsageError(f"--signal: unknown signal {text!r} (e.g. KILL, TERM, 9)") from None


def lab_freeze(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    pids = host.freeze()
    out.result({"host": host.key, "frozen": pids}, f"{host.key}: froze {len(pids)} process(es)")
    return 0


def lab_thaw(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    pids = host.thaw()
    out.result({"host": host.key, "thawed": pids}, f"{host.key}: thawed {len(pids)} process(es)")
    return 0


def lab_crash(args: argparse.Namespace, out: Output) -> int:
    node = _attach(args.name).node(args.host)
    node.crash()
    out.result({"host": node.key, "state": "crashed"}, f"{node.key}: crashed")
    return 0


def lab_boot(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.lab.etcd import members_of, start_member
    lab = _attach(args.name)
    node = lab.node(args.host)
    node.boot()
    members = members_of(lab)
    etcd = node in members  # its member starts with it, as its systemd would start etcd
    if etcd:
        start_member(node, members)
    out.result({"host": node.key, "state": "up", "etcd": etcd},
               f"{node.key}: booted" + (" (its etcd member started again)" if etcd else ""))
    return 0


# -- network faults -----------------------------------------------------------------------------
def lab_cut(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    host.cut(args.nic)
    out.result({"host": host.key, "nic": args.nic, "link": "cut"}, f"{host.key} {args.nic}: cut")
    return 0


def lab_restore(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    host.restore(args.nic)
    out.result({"host": host.key, "nic": args.nic, "link": "restored"},
               f"{host.key} {args.nic}: restored")
    return 0


def lab_loss(args: argparse.Namespace, out: Output) -> int:
    host = _attach(args.name).host(args.host)
    try:
        percent = float(args.percent)
    except ValueError:
        percent = -1.0
    if not 0 <= percent <= 100:
        raise UsageError(f"PERCENT must be a number from 0 to 100, got {args.percent!r}")
    host.set_loss(args.nic, percent, args.direction, peer=args.peer)
    peer = f" with {args.peer}" if args.peer else ""
    out.result({"host": host.key, "nic": args.nic, "percent": percent,
                "direction": args.direction, "peer": args.peer},
               f"{host.key} {args.nic}: {percent:g}% loss ({args.direction}){peer}")
    return 0


def lab_partition(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.lab import LabError
    lab = _attach(args.name)
    groups = []
    for text in args.groups:
        parts = [p for p in text.split(",") if p]
        if not parts:
            raise UsageError(f"GROUP: empty group {text!r}; use comma-separated node ids like 2,3")
        groups.append(parts)
    if args.gateway_group.lower() == "none":
        gateway = None
    elif args.gateway_group.isdigit() and int(args.gateway_group) >= 1:
        gateway = int(args.gateway_group) - 1
    else:
        raise UsageError(f"--gateway-group must be a group number from 1 or none, "
                         f"got {args.gateway_group!r}")
    try:
        effective = lab.partition(groups, gateway=gateway)
    except LabError as error:
        raise UsageError(str(error)) from None
    out.result({"groups": effective, "gateway_group": None if gateway is None else gateway + 1},
               "partitioned: " + " | ".join(",".join(f"n{i}" for i in g) for g in effective))
    return 0


def lab_heal(args: argparse.Namespace, out: Output) -> int:
    _attach(args.name).heal()
    out.result({"partition": None}, "healed: every node on the main bridges")
    return 0
