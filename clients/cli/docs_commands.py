"""`skyge completion bash|zsh` and `skyge man`: shell completion and manual pages, both generated
from the parser itself so they never fall behind the commands.

    source <(skyge completion bash)                     # this shell; or, for every login:
    skyge completion bash > /etc/bash_completion.d/skyge
    skyge completion zsh > "${fpath[1]}/_skyge"
    skyge man --out /usr/local/share/man/man1           # then: man skyge, man skyge-ha
"""
from __future__ import annotations

import argparse
from pathlib import Path

from skyge.clients.cli.output import CommandFailed, Output

SHELLS = ("bash", "zsh")
#: options (by dest) whose value is a path: the shell completes file or folder names for them
_FILE_OPTIONS = ("socket", "cert", "file")
_FOLDER_OPTIONS = ("root", "dir", "out", "ca")


def register(groups: argparse._SubParsersAction) -> None:
    completion = groups.add_parser(
        "completion", help="print the shell completion script (bash or zsh)",
        description="Print a completion script for SHELL, made from skyge's own parser: load it "
                    "with `source <(skyge completion bash)`, or install it as "
                    "/etc/bash_completion.d/skyge (bash) or as _skyge in a folder of $fpath (zsh).")
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help=" or ".join(SHELLS))
    completion.set_defaults(handler=print_completion, daemon_target=None)

    man = groups.add_parser(
        "man", help="write the manual pages (skyge.1, skyge-GROUP.1 per command group)",
        description="Write skyge.1 and one page per command group (skyge-ha.1, ...) in roff, "
                    "made from skyge's own parser.")
    man.add_argument("--out", default=".", metavar="DIR",
                     help="folder to write them into, made if missing (default: the current one; "
                          "e.g. /usr/local/share/man/man1)")
    man.set_defaults(handler=write_man, daemon_target=None)


def _complete_paths(parser: argparse.ArgumentParser) -> None:
    """Mark the options that take a path (--root, --cert, ...) for file name completion."""
    import shtab
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _complete_paths(sub)
        elif action.option_strings and action.dest in _FILE_OPTIONS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.option_strings and action.dest in _FOLDER_OPTIONS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


def print_completion(args: argparse.Namespace, out: Output) -> int:
    import shtab

    from skyge.clients.cli.main import build_parser
    parser = build_parser()
    _complete_paths(parser)
    script = shtab.complete(parser, shell=args.shell)
    out.result({"shell": args.shell, "script": script}, script)
    return 0


def write_man(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.cli.main import build_parser
    from skyge.clients.cli.manpage import pages
    folder = Path(args.out)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in pages(build_parser()).items():
            (folder / name).write_text(text, encoding="utf-8")
            written.append(name)
    except OSError as error:
        raise CommandFailed(f"--out: cannot write into {folder}: {error.strerror}") from None
    out.result({"dir": str(folder), "pages": written},
               f"wrote {len(written)} manual pages into {folder}: {', '.join(written)}")
    return 0
