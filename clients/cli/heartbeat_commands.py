"""`skyge heartbeat ...` and `skyge hw-code`: membership, links, the name table, and the config
(the seed's `jl_config` and `jl_get_hw_code`)."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from skyge.clients.cli.arguments import DOMAIN, NETID, ranged_int
from skyge.clients.cli.output import CliError, CommandFailed, Output, UsageError
from skyge.clients.cli.rpc import call, follow, to_dict

if TYPE_CHECKING:  # the commands import the daemon's modules: too slow to load for `--help`
    from skyge.services.common.paths import NodePaths

DAEMON = "heartbeat"
#: skyge.services.heartbeat.wire.MAX_PATHS (a test keeps them equal; wire is slow to import)
MAX_PATHS = 8
PATH = ranged_int(1, MAX_PATHS)
KEY_BYTES = 32
SEED_CONFIG = "/etc/jiluos/jiluos.cfg"
CONFIG_HINT = "skyge heartbeat config -n NETID -d DOMAIN -e NIC -p PATH"


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("heartbeat",
                              help="membership over UDP heartbeats (the seed's jiluos)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("show", help="identity, members and links of this node").set_defaults(
        handler=show_node)
    commands.add_parser("watch", help="follow membership changes live").set_defaults(
        handler=watch)
    commands.add_parser("names", help="the cluster name table").set_defaults(handler=show_names)
    commands.add_parser("stats", help="datagram counters, drops by reason").set_defaults(
        handler=show_stats)

    config = commands.add_parser(
        "config", help="configure, show or remove the heartbeat paths (the seed's jl_config)",
        description="Configure one heartbeat path (-n NETID -d DOMAIN -e NIC -p PATH), install a "
                    "config file (-c), show the config and name table (-s) or remove it (-r). "
                    "The file is ROOT/etc/skyge/heartbeat.cfg; restart skyge-heartbeat to apply.")
    config.add_argument("-n", "--netid", type=NETID, help="cluster id, 1-1024 (the seed's subnet)")
    config.add_argument("-d", "--domain", type=DOMAIN, help="this node's id, 1-64")
    config.add_argument("-e", "--nic", help="network interface of the path, e.g. eth0")
    config.add_argument("-p", "--path", type=PATH, help=f"path number, 1-{MAX_PATHS} "
                                                          "(the seed has 1 and 2)")
    mode = config.add_mutually_exclusive_group()
    mode.add_argument("-c", "--file", nargs="?", const="", metavar="FILE",
                      help=f"install a jiluos.cfg-style file (default: ROOT{SEED_CONFIG})")
    mode.add_argument("-s", "--show", action="store_true",
                      help="show the config and, if the daemon runs, the name table")
    mode.add_argument("-r", "--remove", action="store_true", help="remove the config")
    config.set_defaults(handler=configure)

    keygen = commands.add_parser("keygen", help="write a random cluster key file (mode 0600)",
                                 description="Write a random 32-byte cluster key. Copy the same "
                                             "file to every node; datagrams are then signed.")
    keygen.add_argument("-f", "--file", help="key file (default: ROOT/etc/skyge/heartbeat.key, "
                                             "which is then set as key_file in heartbeat.cfg)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key file")
    keygen.set_defaults(handler=make_key)

    hw_code = groups.add_parser("hw-code", help="hardware codes (MAC per NIC), like jl_get_hw_code")
    hw_code.set_defaults(handler=show_hw_code, daemon_target=DAEMON)


# ---- small helpers

def _int(value: Any) -> int:
    return int(value or 0)  # int64/uint64 come as strings in proto JSON


def _clock(unix_ns: Any, with_date: bool = False) -> str:
    ns = _int(unix_ns)
    if not ns:
        return "-"
    seconds = ns / 1e9
    stamp = time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S",
                          time.localtime(seconds))
    return f"{stamp}.{int(ns % 1_000_000_000) // 1_000_000:03d}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _node(node: dict[str, Any]) -> str:
    return f"{node.get('netid', 0)}.{node.get('domain', 0)}"


def _pb() -> ModuleType:
    """heartbeat_pb2, imported when a command runs: protobuf is too slow to load for `--help`."""
    from skyge.v1 import heartbeat_pb2
    return heartbeat_pb2


def _paths(args: argparse.Namespace) -> NodePaths:
    from skyge.services.common.paths import NodePaths
    return NodePaths.at(args.root)


# ---- show, watch, names, stats, hw-code

def show_node(args: argparse.Namespace, out: Output) -> int:
    data = {
        "identity": to_dict(call(args, DAEMON, "GetIdentity", _pb().GetIdentityRequest())),
        "members": to_dict(call(args, DAEMON, "ListMembers", _pb().ListMembersRequest())),
        "links": to_dict(call(args, DAEMON, "ListLinks", _pb().ListLinksRequest())),
    }
    out.result(data, render_node)
    return 0


def render_node(data: dict[str, Any]) -> str:
    identity, view = data["identity"], data["members"]
    me = _node(identity["node"])
    lines = [f"node {me}  incarnation {identity['incarnation']}  view {view['view_id']}  "
             f"pid {identity['daemon'].get('pid', '-')}"]
    for path in identity["paths"]:
        lines.append(f"  path {path['path']}  {path['nic']}  hw {path['hw_code'] or '-'}  "
                     f"{', '.join(path['addresses']) or 'no address'}")
    rows = []
    for member in view["members"]:
        up = [str(p["path"]) for p in member["paths"] if p["up"]]
        rows.append([_node(member["node"]), member["incarnation"], ",".join(up) or "none",
                     _clock(member["joined_unix_ns"]), "local" if member["local"] else ""])
    lines += ["", f"members ({len(rows)}):",
              _table(["NODE", "INCARNATION", "PATHS UP", "JOINED", ""], rows)]
    netid = identity["node"]["netid"]
    rows = []
    for link in data["links"]["links"]:
        peer = f"{netid}.{link['peer_domain']}"
        rows.append([f"<{me}:{link['local_nic']}-{peer}:{link['peer_nic']}>", link["path"],
                     "up" if link["state"] == "LINK_UP" else "DOWN",
                     f"{link['rtt_ms']:.3f}", f"{link['loss_percent']:.1f}", link["received"],
                     link["missed"], _clock(link["since_unix_ns"])])
    lines += ["", f"links ({len(rows)}):",
              _table(["LINK", "PATH", "STATE", "RTT MS", "LOSS %", "RECEIVED", "MISSED", "SINCE"],
                     rows) if rows else "  none (no peer heard)"]
    return "\n".join(lines)


def watch(args: argparse.Namespace, out: Output) -> int:
    identity = call(args, DAEMON, "GetIdentity", _pb().GetIdentityRequest())
    me = f"{identity.node.netid}.{identity.node.domain}"
    return follow(args, out, DAEMON, "WatchMembership", _pb().WatchMembershipRequest(),
                  lambda event: render_membership_event(event, me))


_REASONS = {"LEAVE_CLEAN": "clean leave", "LEAVE_FAILED": "failed",
            "LEAVE_RESTARTED": "restarted"}


def render_membership_event(event: dict[str, Any], me: str) -> str:
    stamp = f"{_clock(event.get('time_unix_ns'), with_date=True)} view {event.get('view_id')}"
    netid = me.split(".")[0]
    if "snapshot" in event:
        members = [_node(m["node"]) for m in event["snapshot"].get("members", [])]
        return f"{stamp} members {', '.join(members)}"
    if "joined" in event:
        member = event["joined"]
        up = ",".join(str(p["path"]) for p in member.get("paths", []) if p.get("up")) or "none"
        return (f"{stamp} joined {_node(member['node'])} (incarnation {member['incarnation']}, "
                f"paths up {up})")
    if "left" in event:
        left = event["left"]
        return (f"{stamp} left {_node(left['member']['node'])} "
                f"({_REASONS.get(left.get('reason'), left.get('reason'))})")
    link = event.get("link_changed", {})
    state = "up" if link.get("state") == "LINK_UP" else "down"
    verb = "Established link" if state == "up" else "Lost link"
    return (f"{stamp} {verb} <{me}:{link.get('local_nic')}-{netid}.{link.get('peer_domain')}:"
            f"{link.get('peer_nic')}> (path {link.get('path')})")


def _value_text(value: str) -> str:
    import base64
    raw = base64.b64decode(value or "")
    text = raw.decode("utf-8", "replace")
    return text if text.isprintable() else raw.hex()


def render_names(publications: list[dict[str, Any]]) -> str:
    rows = [[p["type"], p["lower"], p["upper"],
             f"<{_node(p['publisher'])}:{p['publication_id']}>", p["publication_id"],
             p["scope"].removeprefix("SCOPE_").lower(), _value_text(p.get("value", ""))]
            for p in publications]
    return _table(["Type", "Lower", "Upper", "Port-Identity", "Publication", "Scope", "Value"],
                  rows)


def show_names(args: argparse.Namespace, out: Output) -> int:
    data = to_dict(call(args, DAEMON, "LookupName", _pb().LookupNameRequest()))
    out.result(data, lambda d: render_names(d["publications"]))
    return 0


def show_stats(args: argparse.Namespace, out: Output) -> int:
    data = to_dict(call(args, DAEMON, "GetStats", _pb().GetStatsRequest()))

    def text(d: dict[str, Any]) -> str:
        rows = [[p["path"], p["nic"], p["datagrams_received"], p["datagrams_sent"],
                 p["received_bytes"], p["sent_bytes"], p["send_errors"]] for p in d["paths"]]
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(d["dropped"].items())) or "none"
        return "\n".join([_table(["PATH", "NIC", "RECEIVED", "SENT", "RX BYTES", "TX BYTES",
                                  "SEND ERRORS"], rows),
                          f"dropped: {dropped}",
                          f"membership changes: {d['membership_changes']}"])

    out.result(data, text)
    return 0


def show_hw_code(args: argparse.Namespace, out: Output) -> int:
    identity = call(args, DAEMON, "GetIdentity", _pb().GetIdentityRequest())
    codes = {path.nic: path.hw_code for path in identity.paths}
    out.result(codes, " ".join(f"{nic} : {code}" for nic, code in codes.items()))
    return 0


# ---- config (jl_config)

def _schema():
    from skyge.services.common.runner import config_schema
    from skyge.services.heartbeat.daemon import SPEC
    return config_schema(SPEC)


def _node_nics(args: argparse.Namespace) -> list[str] | None:
    """The NICs of the addressed node, when this process runs in it (its root is the one
    addressed: / on a real machine, $SKYGE_ROOT inside a lab node); None when it cannot tell."""
    here = os.path.realpath(os.environ.get("SKYGE_ROOT", "/"))
    if os.path.realpath(args.root) != here:
        return None
    import psutil
    return sorted(psutil.net_if_addrs())


def _check_nic(args: argparse.Namespace, nic: str, option: str) -> bool:
    """UsageError for an unknown NIC; False when it could not be checked from here."""
    nics = _node_nics(args)
    if nics is None:
        return False
    if nic not in nics:
        raise UsageError(f"{option}: no network interface {nic!r} on this node "
                         f"(it has {', '.join(nics)})")
    return True


def _daemon_note(paths: NodePaths) -> str:
    return ("; restart skyge-heartbeat to apply" if paths.socket(DAEMON).exists() else "")


def configure(args: argparse.Namespace, out: Output) -> int:
    manual = [name for name in ("netid", "domain", "nic", "path")
              if getattr(args, name) is not None]
    if args.show or args.remove or args.file is not None:
        if manual:
            raise UsageError(f"config: -n/-d/-e/-p cannot be combined with -c, -s or -r "
                             f"(got --{', --'.join(manual)})")
        if args.show:
            return show_config(args, out)
        if args.remove:
            return remove_config(args, out)
        return install_config(args, out)
    missing = [f"-{flag}" for name, flag in (("netid", "n"), ("domain", "d"), ("nic", "e"),
                                              ("path", "p")) if getattr(args, name) is None]
    if missing:
        raise UsageError(f"config: {' '.join(missing)} missing: give all of -n NETID -d DOMAIN "
                         f"-e NIC -p PATH (or -c FILE, -s, -r)")
    return configure_path(args, out)


def _existing(config_file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw settings in file order, validated values) of the current config; {} if none."""
    from skyge.services.common.config import ConfigError, parse_config
    if not config_file.exists():
        return {}, {}
    try:
        settings = parse_config(config_file.read_text(encoding="utf-8"), str(config_file))
        raw = {s.key: s.value for s in settings}
        values = _schema().validate(settings, str(config_file))
    except (ConfigError, OSError, UnicodeDecodeError) as error:
        raise CommandFailed(f"the current config is broken: {error}; fix it or remove it with "
                            f"`skyge heartbeat config -r`") from None
    return raw, values


def configure_path(args: argparse.Namespace, out: Output) -> int:
    from skyge.services.common.atomic import write_atomic
    from skyge.services.common.config import render_config
    from skyge.services.heartbeat import config as hbconfig
    paths = _paths(args)
    config_file = paths.config_file(DAEMON)
    nic = args.nic
    if not hbconfig.nic_name_ok(nic):
        raise UsageError(f"-e/--nic: must be a network interface name (1-15 characters: letters, "
                         f"digits, '_', '.', '@', '-'), got {nic!r}")
    checked = _check_nic(args, nic, "-e/--nic")
    raw, values = _existing(config_file)
    for key, option, wanted in (("subnet", "-n/--netid", args.netid),
                                ("domain", "-d/--domain", args.domain)):
        current = values.get(key)
        if current is not None and current != wanted:
            name = "netid" if key == "subnet" else "domain"
            raise UsageError(f"{option}: this node is configured with {name} {current} "
                             f"({config_file}), not {wanted}; remove the config first "
                             f"(skyge heartbeat config -r) to change it")
    for number in range(1, MAX_PATHS + 1):
        if number != args.path and values.get(hbconfig.path_key(number)) == nic:
            raise UsageError(f"-e/--nic: {nic} is already path {number}; each path needs its "
                             f"own NIC")
    if not any(k in raw for k in ("subnet", "netid")):
        raw = {"subnet": args.netid, **raw}
    if "domain" not in raw:
        raw = {"domain": args.domain, **raw}
    replaced = raw.get(hbconfig.path_key(args.path))
    raw[hbconfig.path_key(args.path)] = nic
    write_atomic(config_file, render_config(raw), mode=0o644)
    replacing = f", replacing {replaced}," if replaced and replaced != nic else ""
    message = (f"configured heartbeat path {args.path} on {nic} (netid {args.netid}, "
               f"domain {args.domain}){replacing} in {config_file}{_daemon_note(paths)}")
    if not checked:
        message += f"\nnote: {nic} was not checked here (node addressed by --root); " \
                   f"skyge-heartbeat checks it when it starts"
    out.result({"config_file": str(config_file), "path": args.path, "nic": nic,
                "netid": args.netid, "domain": args.domain, "nic_checked": checked}, message)
    return 0


def install_config(args: argparse.Namespace, out: Output) -> int:
    from skyge.services.common.atomic import write_atomic
    from skyge.services.common.config import ConfigError, parse_config
    from skyge.services.common.keys import read_key
    from skyge.services.heartbeat import config as hbconfig
    paths = _paths(args)
    source = Path(args.file) if args.file else paths.under(SEED_CONFIG)
    target = paths.config_file(DAEMON)
    try:
        text = source.read_text(encoding="utf-8")
        values = _schema().validate(parse_config(text, str(source)), str(source))
        settings = hbconfig.settings_from(values, source, paths)
        if settings.key_file is not None:
            read_key(settings.key_file, "key_file", source)
    except FileNotFoundError:
        raise UsageError(f"-c/--file: {source}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"-c/--file: {source}: cannot read: {error}") from None
    except ConfigError as error:
        raise UsageError(str(error)) from None
    checked = True
    for number, nic in sorted(settings.nics.items()):
        checked = _check_nic(args, nic, f"{source}: {hbconfig.path_key(number)}") and checked
    if source.resolve() != target.resolve():
        write_atomic(target, text, mode=0o644)
    described = ", ".join(f"path {n} {nic}" for n, nic in sorted(settings.nics.items()))
    message = (f"configured heartbeat from {source}: netid {settings.netid}, domain "
               f"{settings.domain}, {described}{_daemon_note(paths)}")
    out.result({"config_file": str(target), "source": str(source), "netid": settings.netid,
                "domain": settings.domain, "paths": {str(n): nic for n, nic in
                                                     settings.nics.items()},
                "nic_checked": checked}, message)
    return 0


def show_config(args: argparse.Namespace, out: Output) -> int:
    from skyge.services.common.config import render_config
    paths = _paths(args)
    config_file = paths.config_file(DAEMON)
    raw, _ = _existing(config_file)
    names: list[dict[str, Any]] | None = None
    daemon_error = None
    try:
        names = to_dict(call(args, DAEMON, "LookupName", _pb().LookupNameRequest()))["publications"]
    except CliError as error:
        daemon_error = str(error)
    if not raw and names is None:
        raise CommandFailed(f"no heartbeat config at {config_file} and skyge-heartbeat is not "
                            f"running; configure with `{CONFIG_HINT}`")
    data = {"config_file": str(config_file), "config": raw or None, "names": names,
            "daemon_error": daemon_error}

    def text(d: dict[str, Any]) -> str:
        lines = [f"{config_file}:" if raw else f"no config at {config_file}"]
        lines += [f"  {line}" for line in render_config(raw).splitlines()] if raw else []
        lines.append("")
        lines.append(render_names(names) if names is not None
                     else f"name table unavailable: {daemon_error}")
        return "\n".join(lines)

    out.result(data, text)
    return 0


def remove_config(args: argparse.Namespace, out: Output) -> int:
    paths = _paths(args)
    config_file = paths.config_file(DAEMON)
    try:
        config_file.unlink()
        removed = True
    except FileNotFoundError:
        removed = False
    message = (f"removed heartbeat config {config_file} cleanly{_daemon_note(paths)}" if removed
               else f"no heartbeat config at {config_file}: nothing to remove")
    out.result({"config_file": str(config_file), "removed": removed}, message)
    return 0


def make_key(args: argparse.Namespace, out: Output) -> int:
    import secrets

    from skyge.services.common.atomic import write_atomic
    from skyge.services.common.config import render_config
    paths = _paths(args)
    default = paths.etc / "heartbeat.key"
    key_file = Path(args.file) if args.file else default
    if key_file.exists() and not args.force:
        raise CommandFailed(f"{key_file} exists: every node must use the same key, so copy that "
                            f"one; pass --force to replace it")
    write_atomic(key_file, secrets.token_bytes(KEY_BYTES), mode=0o600)
    os.chmod(key_file, 0o600)
    config_file = paths.config_file(DAEMON)
    configured = False
    if key_file == default and config_file.exists():
        raw, _ = _existing(config_file)
        if raw.get("key_file") != default.name:
            raw["key_file"] = default.name
            write_atomic(config_file, render_config(raw), mode=0o644)
        configured = True
    message = f"wrote a {KEY_BYTES}-byte cluster key to {key_file} (mode 0600); copy it to " \
              f"every node"
    if configured:
        message += f"; key_file set in {config_file}{_daemon_note(paths)}"
    elif key_file != default:
        message += "; set key_file in heartbeat.cfg to use it"
    out.result({"key_file": str(key_file), "bytes": KEY_BYTES, "config_updated": configured},
               message)
    return 0
