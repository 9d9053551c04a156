"""Quoting what a caller sent in an error message: never the whole of a hostile value."""
from __future__ import annotations

from collections.abc import Iterable

EXCERPT_CHARS = 60


def excerpt(value: str, limit: int = EXCERPT_CHARS) -> str:
    """`value` quoted, cut to `limit` characters with its length said when longer (a status
    message must stay far below gRPC's 16 KiB metadata limit, whatever a request carried)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def excerpts(values: Iterable[str], most: int = 3) -> str:
    """The first `most` values as `excerpt`s, and how many more there are."""
    values = list(values)
    shown = ", ".join(excerpt(v) for v in values[:most])
    return shown + (f" and {len(values) - most} more" if len(values) > most else "")
