"""The `skyge` command: one entry point, a group per subsystem.

Every command takes `--output json`; exit status is 0 done, 1 failed, 2 bad usage or input, with a
one-line error on stderr naming what was wrong. `--root` (or $SKYGE_ROOT) picks the node, since the
daemons' sockets live under the node root; `--socket` points one command at a socket directly.

Building the parser imports no gRPC, protobuf, cryptography or daemon code: the command modules
import those inside the functions that run a command, so `--help`, completion and bad usage answer
at once (tests/unit/test_cli_startup.py guards this).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from skyge import __version__
from skyge.clients.cli import (bus_commands, ca_commands, demo_commands, docs_commands,
                               emon_commands, ha_commands, heartbeat_commands, lab_commands,
                               lock_commands, node_commands, seed_commands)
from skyge.clients.cli.output import EXIT_USAGE, CliError, Output

GROUPS = (node_commands, heartbeat_commands, bus_commands, lock_commands, ha_commands,
          emon_commands, ca_commands, seed_commands, lab_commands, demo_commands, docs_commands)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2 (its default is 2 too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0 to 3600, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skyge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"skyge {__version__}")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="text for people (default) or json for programs")
    # $SKYGE_ROOT as skyge.clients.connect.default_root reads it (that module loads grpc)
    parser.add_argument("--root", default=os.environ.get("SKYGE_ROOT", "/"),
                        help="root folder of the node to address (default: / or $SKYGE_ROOT)")
    parser.add_argument("--socket", help="Unix socket path or HOST:PORT of the daemon to call, "
                                         "instead of the one under --root")
    parser.add_argument("--cert", metavar="PREFIX",
                        help="TLS certificate for a HOST:PORT --socket: PREFIX.crt, PREFIX.key and "
                             "ca.crt beside them (default: the node's, ROOT/etc/skyge/tls/node)")
    parser.add_argument("--timeout", type=positive_seconds, default=10.0,
                        help="seconds to wait for a daemon's answer (default: 10)")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    groups.required = True
    for module in GROUPS:
        module.register(groups)
    _output_anywhere(parser)
    return parser


def _output_anywhere(parser: argparse.ArgumentParser) -> None:
    """`-o/--output` after the group or command too (`skyge ha status -o json`), as users of
    kubectl or etcdctl expect; given there, it overrides the one before the group."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("-o", "--output", choices=("text", "json"),
                                 default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _output_anywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.output)
    try:
        return args.handler(args, out)
    except CliError as error:
        if out.json:  # a program reading JSON gets its errors as JSON too (on stderr)
            sys.stderr.write(json.dumps({"error": str(error), "exit_status": error.exit_status})
                             + "\n")
        else:
            sys.stderr.write(f"skyge: {error}\n")
        return error.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
