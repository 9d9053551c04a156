"""Manual pages in roff (man(7)) generated from the argparse parser, so `man skyge` says what
`skyge --help` says: skyge.1 for the global options and the list of commands, skyge-GROUP.1 for
each command group with all its commands.

Written here rather than with argparse-manpage: that library copies argparse's pre-wrapped help
lines into the page, and a wrapped line that starts with "." (as "./ for an administrator" in
`skyge ca issue --help`) is read by roff as an unknown request and dropped. Here each paragraph is
one escaped line and roff fills it to the reader's terminal.
"""
from __future__ import annotations

import argparse
import os
import time

from skyge import __version__
from skyge.clients.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE

NAME = "skyge"
SUMMARY = "command line of the skyge high-availability cluster suite"


def escape(text: str) -> str:
    """One paragraph as roff text: whitespace collapsed (roff fills lines), backslashes and
    hyphens escaped (options stay searchable and copyable), a leading . or ' kept as text."""
    text = " ".join(text.split()).replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """The parser's commands in order: name -> (their parser, their one-line help)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()
                    if helps.get(name) != argparse.SUPPRESS}
    return {}


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    """A .TP entry per documented argument: positionals, then options, as argparse lists them."""
    formatter = parser._get_formatter()
    lines = []
    not_arguments = (argparse._HelpAction, argparse._SubParsersAction)
    for action in sorted(parser._actions, key=lambda action: bool(action.option_strings)):
        if action.help == argparse.SUPPRESS or isinstance(action, not_arguments):
            continue
        if action.option_strings:
            value = "" if action.nargs == 0 else \
                " " + _italic(formatter._format_args(action, action.dest.upper()))
            invocation = ", ".join(_bold(option) + value for option in action.option_strings)
        else:
            invocation = _italic(formatter._format_action_invocation(action))
        lines += [".TP", invocation]
        if action.help:
            lines.append(escape(formatter._expand_help(action)))
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line without "usage:", the command in bold."""
    words = parser.format_usage().split()[1:]
    command = len(parser.prog.split())
    return f"{_bold(' '.join(words[:command]))} {escape(' '.join(words[command:]))}".rstrip()


def _header(title: str, summary: str) -> list[str]:
    # SOURCE_DATE_EPOCH: packagers' reproducible builds get the same page from the same source
    day = time.strftime("%Y-%m-%d", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH",
                                                                    time.time()))))
    return [f'.TH "{title.upper()}" 1 "{day}" "{NAME} {__version__}" "{NAME} manual"',
            ".SH NAME", f"{escape(title)} \\- {escape(summary)}"]


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    """Each command of the parser (and theirs, depth first) as a subsection."""
    lines = []
    for sub, help_text in _subcommands(parser).values():
        lines += [f'.SS "{escape(sub.prog)}"', escape(help_text), ".PP", _usage(sub)]
        if sub.description and sub.description != help_text:
            lines += [".PP", escape(sub.description)]
        lines += _arguments(sub) + _commands(sub)
    return lines


def root_page(parser: argparse.ArgumentParser) -> str:
    """skyge.1: the global options, each command group in a line, the exit statuses."""
    groups = _subcommands(parser)
    lines = [*_header(NAME, SUMMARY), ".SH SYNOPSIS", _usage(parser)]
    if parser.description:
        lines += [".SH DESCRIPTION", escape(parser.description)]
    lines += [".SH OPTIONS", *_arguments(parser), ".SH COMMANDS"]
    for name, (_, help_text) in groups.items():
        lines += [".TP", _bold(name), f"{escape(help_text)} (see {_bold(f'{NAME}-{name}')}(1))"]
    lines += [".SH EXIT STATUS",
              ".TP", str(EXIT_OK), "done",
              ".TP", str(EXIT_FAILED), "failed: the one line on standard error says why",
              ".TP", str(EXIT_USAGE), "bad usage or input: the error names the argument",
              ".SH SEE ALSO", ", ".join(f"{_bold(f'{NAME}-{name}')}(1)" for name in groups)]
    return "\n".join(lines) + "\n"


def group_page(name: str, parser: argparse.ArgumentParser, summary: str) -> str:
    """skyge-NAME.1: one command group, every command of it with its options."""
    lines = [*_header(f"{NAME}-{name}", summary), ".SH SYNOPSIS", _usage(parser)]
    if parser.description:
        lines += [".SH DESCRIPTION", escape(parser.description)]
    arguments = _arguments(parser)
    if arguments:
        lines += [".SH OPTIONS", *arguments]
    commands = _commands(parser)
    if commands:
        lines += [".SH COMMANDS", *commands]
    lines += [".SH SEE ALSO",
              f"{_bold(NAME)}(1) {escape('for the global options (--root, --output, ...)')}"]
    return "\n".join(lines) + "\n"


def pages(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every page of the `skyge` parser: file name -> roff text."""
    found = {f"{NAME}.1": root_page(parser)}
    for name, (sub, help_text) in _subcommands(parser).items():
        found[f"{NAME}-{name}.1"] = group_page(name, sub, help_text)
    return found
