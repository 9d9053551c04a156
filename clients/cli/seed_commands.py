"""`skyge seed-commands ...`: the seed's command names as thin front ends to `skyge`.

Sites moving from the seed keep their scripts and habits: `ha_svc_commander -d 1 -s 4 -t stack
-a add` runs `skyge ha svc -d 1 -s 4 -t stack -a add`, with the seed's arguments and output
formats (the skyge commands already take and print them). `install` writes one small script per
name (`deploy/install.sh --seed-commands` puts them in /usr/local/sbin); each runs
`skyge seed-commands run NAME ARGS...`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from skyge.clients.cli.output import CommandFailed, Output

#: seed command -> the skyge command it runs
SEED_COMMANDS = {
    "jl_config": ("heartbeat", "config"),
    "jl_get_hw_code": ("hw-code",),
    "mb_cli_create_service": ("bus", "create"),
    "mb_cli_get_service": ("bus", "list"),
    "mb_general_provider": ("bus", "send"),
    "mb_cli_delete_service": ("bus", "delete"),
    "yc_msg_spy": ("bus", "spy"),
    "test_d_lock": ("lock", "test"),
    "ha_status": ("ha", "status"),
    "ha_query": ("ha", "query"),
    "ha_svc_commander": ("ha", "svc"),
    "sk_user_heartbeat": ("ha", "pulse"),
}
DEFAULT_DIR = "/usr/local/sbin"


def seed_argv(name: str, args: list[str]) -> list[str]:
    """The `skyge` command line for a seed command and its arguments. The seed's manual writes
    `-1` for the lock's `-l` (test_d_lock) and gives mb_cli_get_service a list flag (`-1`/`-l`)
    that skyge does not need: every bus is listed."""
    if name == "test_d_lock":
        args = ["-l" if a == "-1" else a for a in args]
    elif name == "mb_cli_get_service":
        args = [a for a in args if a not in ("-1", "-l")]
    return [*SEED_COMMANDS[name], *args]


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("seed-commands", help="the seed's command names (jl_config, "
                              "ha_status, ...) as front ends to skyge",
                              description=__doc__.split("\n\n")[0])
    group.set_defaults(daemon_target=None)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    install = commands.add_parser("install", help="write one script per seed command")
    install.add_argument("--dir", default=DEFAULT_DIR,
                         help=f"where to write them (default: {DEFAULT_DIR})")
    install.set_defaults(handler=install_scripts)
    run = commands.add_parser("run", help="run a seed command (what the scripts do)")
    run.add_argument("name", choices=sorted(SEED_COMMANDS), metavar="NAME",
                     help=", ".join(sorted(SEED_COMMANDS)))
    run.add_argument("args", nargs=argparse.REMAINDER, help="the seed command's arguments")
    run.set_defaults(handler=run_seed)


def install_scripts(args: argparse.Namespace, out: Output) -> int:
    folder = Path(args.dir)
    skyge = shlex.quote(os.path.join(os.path.dirname(sys.executable), "skyge"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in SEED_COMMANDS:
            script = folder / name
            target = " ".join(SEED_COMMANDS[name])
            script.write_text(f"#!/bin/sh\n# the seed's {name}: skyge {target}\n"
                              f'exec {skyge} seed-commands run {name} "$@"\n')
            script.chmod(0o755)
    except OSError as error:
        raise CommandFailed(f"--dir: cannot write into {folder}: {error.strerror}") from None
    out.result({"dir": str(folder), "commands": sorted(SEED_COMMANDS)},
               f"wrote {len(SEED_COMMANDS)} seed commands into {folder}: "
               f"{', '.join(sorted(SEED_COMMANDS))}")
    return 0


def run_seed(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.cli.main import main
    global_options = ["--root", args.root, "--timeout", str(args.timeout), "--output", args.output]
    return main([*global_options, *seed_argv(args.name, list(args.args))])
