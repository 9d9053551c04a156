"""How every `skyge` command reports: plain text for people, `--output json` for programs.

Exit status is the contract scripts rely on: 0 done, 1 failed, 2 bad usage or input. Commands raise
`UsageError` or `CommandFailed`; `main` turns them into one line on stderr and that status.
"""
from __future__ import annotations

import json
import sys
from typing import Any
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line error for the user; `exit_status` is what the command exits with."""

    exit_status = EXIT_FAILED


class CommandFailed(CliError):
    """The command was understood but could not be done (daemon down, operation refused...)."""

    exit_status = EXIT_FAILED


class UsageError(CliError):
    """The command line or an input file was wrong: say which argument and what is allowed."""

    exit_status = EXIT_USAGE


def render_text(data: Any, indent: int = 0) -> str:
    """A readable text form of JSON-like data: `key: value` lines, nested blocks indented."""
    pad = "  " * indent
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:")
                lines.append(render_text(value, indent + 1))
            else:
                lines.append(f"{pad}{key}: {value if value not in ({}, []) else '-'}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(f"{pad}-\n{render_text(item, indent + 1)}"
                         if isinstance(item, (dict, list)) else f"{pad}- {item}"
                         for item in data)
    return f"{pad}{data}"


class Output:
    """Writes a command's result either as JSON (one document) or as text lines."""

    def __init__(self, fmt: str = "text", stream=None) -> None:
        self.json = fmt == "json"
        self.stream = stream or sys.stdout

    def result(self, data: Any, text: str | Callable[[Any], str] | None = None) -> None:
        """Print a command's result: `data` as JSON, or `text` (a string or a renderer of data)."""
        if self.json:
            self.stream.write(json.dumps(data, sort_keys=True, default=str) + "\n")
        else:
            rendered = (text(data) if callable(text) else
                        render_text(data) if text is None else text)
            if rendered:
                self.stream.write(rendered.rstrip("\n") + "\n")
        self.stream.flush()

    def event(self, data: Any, text: str | None = None) -> None:
        """Print one item of a live stream (watch/spy): one JSON object per line in json mode."""
        if self.json:
            self.stream.write(json.dumps(data, sort_keys=True, default=str) + "\n")
        elif text is not None:
            self.stream.write(text.rstrip("\n") + "\n")
        self.stream.flush()
