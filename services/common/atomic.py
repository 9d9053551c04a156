"""Durable small files: write a temporary file, fsync it, rename it over the old one."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text`: a crash leaves the old content or the new, never a mix.
    `durable=False` skips the fsync: for files under /run, which need not survive a reboot
    and are read by other processes as soon as they are renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
