"""Argument types that reject bad input with the argument's name and allowed range (exit 2)."""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable


def ranged_int(low: int, high: int) -> Callable[[str], int]:
    """An integer from low to high; argparse adds the option name to the message."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"[-+]?\d+", text.strip()):
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, "
                                             f"got {text!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = f"integer {low}-{high}"
    return parse


DOMAIN = ranged_int(1, 64)
NETID = ranged_int(1, 1024)
