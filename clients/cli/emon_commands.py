"""`skyge emon ...`: CPU, memory and disk probes and their watermarks (the seed's emon).

Text output:

    $ skyge emon show
    cpu_load          12.5 %     at 10:00:01.002
    disk_usage    22983784 kB    at 10:00:01.002
    mem_load           2.1 %     at 10:00:01.002
    $ skyge emon watch                       # the seed's foreground `emon`: values as sampled
    10:00:01.002 cpu_load 12.5 %
    10:00:01.002 mem_load 2.1 %
    ...
    $ skyge emon watermarks
    cpu_load/wm_90  above 90 %  script /opt/emon/cpu90.sh  armed  fired 0

`--output json` prints the replies as in emon.proto (`watch`: one Sample object per line).
"""
from __future__ import annotations

import argparse
from datetime import datetime
from types import ModuleType
from typing import Any

from skyge.clients.cli.arguments import ranged_int
from skyge.clients.cli.rpc import follow, show

DAEMON = "emon"
_UNITS = {"percent": "%"}


def _pb() -> ModuleType:
    """emon_pb2, imported when a command runs: protobuf is too slow to load for `--help`."""
    from skyge.v1 import emon_pb2
    return emon_pb2


def _unit(unit: str) -> str:
    return _UNITS.get(unit, unit)


def _clock(time_unix_ns: Any) -> str:
    ns = int(time_unix_ns or 0)
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def _value(value: Any) -> str:
    """12.53 -> "12.5", 2.0 -> "2", 22983784.0 -> "22983784"."""
    return f"{float(value):.1f}".removesuffix(".0")


def sample_line(sample: dict[str, Any]) -> str:
    """One sample as `watch` prints it: `10:00:01.002 cpu_load 12.5 %`."""
    unit = _unit(sample.get("unit", ""))
    return (f"{_clock(sample.get('time_unix_ns'))} {sample.get('probe', '')} "
            f"{_value(sample.get('value', 0))}{' ' + unit if unit else ''}")


def samples_text(data: dict[str, Any]) -> str:
    samples = data.get("samples", [])
    if not samples:
        return "no samples yet"
    width = max(len(s["probe"]) for s in samples)
    values = [_value(s.get("value", 0)) for s in samples]
    vwidth = max(len(v) for v in values)
    return "\n".join(f"{s['probe']:<{width}}  {v:>{vwidth}} {_unit(s.get('unit', '')):<4}  at "
                     f"{_clock(s.get('time_unix_ns'))}"
                     for s, v in zip(samples, values, strict=True))


def probes_text(data: dict[str, Any]) -> str:
    lines = []
    for p in data.get("probes", []):
        kind = "built-in" if p.get("builtin") else "plug-in"
        errors = f"  {p['errors']} errors, last: {p['last_error']}" if int(p.get("errors", 0)) \
            else ""
        lines.append(f"{p['name']:<12} {_unit(p.get('unit', '')) or '-':<4} every "
                     f"{p.get('interval_ms')} ms  {kind} {p.get('source', '')}"
                     f"{'  ' + p['desc'] if p.get('desc') else ''}{errors}")
    return "\n".join(lines) or "no probes"


_DIRECTION = {"DIRECTION_ABOVE": "above", "DIRECTION_BELOW": "below", "DIRECTION_EQUAL": "equal"}
_ACTION = {"WATERMARK_SCRIPT": "script", "WATERMARK_SWITCH": "switch",
           "WATERMARK_REFUSE_NEW": "refuse_new"}


def watermarks_text(data: dict[str, Any]) -> str:
    lines = []
    for w in data.get("watermarks", []):
        action = _ACTION.get(w.get("action"), w.get("action"))
        if action == "script":
            action = f"script {w.get('script')}"
        fired = int(w.get("fired_count", 0))
        last = f", last {_clock(w.get('last_fired_unix_ns'))}: {w.get('last_result')}" \
            if fired else ""
        lines.append(f"{w['probe']}/{w['name']}  {_DIRECTION.get(w.get('direction'), '?')} "
                     f"{_value(w.get('threshold', 0))} (re-arm {_value(w.get('hysteresis', 0))})"
                     f"  {action}  {'armed' if w.get('armed') else 'FIRED'}  fired {fired}{last}")
    if not lines:
        lines.append("no watermarks")
    if data.get("refusing_new"):
        lines.append("this node refuses new HA services (a refuse_new watermark is fired)")
    return "\n".join(lines)


def stats_text(data: dict[str, Any]) -> str:
    return (f"samples {data.get('samples')}, probe errors {data.get('probe_errors')}\n"
            f"bus: {'publishing' if data.get('publishing') else 'off'}, "
            f"{'reachable' if data.get('bus_reachable') else 'not reachable'}, published "
            f"{data.get('published')}, failures {data.get('publish_failures')}, dropped "
            f"{data.get('publish_dropped')}\n"
            f"watermarks fired {data.get('watermarks_fired')}, scripts run "
            f"{data.get('scripts_run')}\n"
            f"daemon CPU time {float(data.get('cpu_seconds', 0)):.2f} s")


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("emon", help="environment monitor: probes and watermarks")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cmd = commands.add_parser("show", help="current value of every probe (or of those named)")
    cmd.add_argument("probes", nargs="*", metavar="PROBE")
    cmd.set_defaults(handler=lambda args, out: show(
        args, out, DAEMON, "GetCurrent", _pb().GetCurrentRequest(probes=args.probes), samples_text))

    cmd = commands.add_parser("watch", help="follow the probes live (the seed's foreground emon)")
    cmd.add_argument("probes", nargs="*", metavar="PROBE")
    cmd.set_defaults(handler=lambda args, out: follow(
        args, out, DAEMON, "Watch", _pb().WatchRequest(probes=args.probes), sample_line))

    cmd = commands.add_parser("history", help="retained samples of one probe, oldest first")
    cmd.add_argument("probe", metavar="PROBE")
    cmd.add_argument("-n", "--limit", type=ranged_int(0, 100_000), default=0,
                     help="only the newest N samples (default: all retained)")
    cmd.set_defaults(handler=lambda args, out: show(
        args, out, DAEMON, "GetHistory",
        _pb().GetHistoryRequest(probe=args.probe, limit=args.limit),
        lambda data: "\n".join(sample_line(s) for s in data.get("samples", [])) or "no samples"))

    commands.add_parser("probes", help="list the probes").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "ListProbes", _pb().ListProbesRequest(),
                                       probes_text))

    cmd = commands.add_parser("watermarks", help="list the watermarks and their state")
    cmd.add_argument("probe", nargs="?", default="", metavar="PROBE")
    cmd.set_defaults(handler=lambda args, out: show(
        args, out, DAEMON, "ListWatermarks", _pb().ListWatermarksRequest(probe=args.probe),
        watermarks_text))

    reload = commands.add_parser("reload",
                                 help="read the plug-in probes and watermark files again")
    reload.set_defaults(
        handler=lambda args, out: show(
            args, out, DAEMON, "Reload", _pb().ReloadRequest(),
            lambda data: f"reloaded: {len(data.get('probes', []))} probes, "
                         f"{len(data.get('watermarks', []))} watermarks"))

    commands.add_parser("stats", help="daemon counters (samples, bus, actions, CPU)").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "GetStats", _pb().GetEmonStatsRequest(),
                                       stats_text))
