"""Durable small files: write a temporary file, fsync it, rename it over the old one."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, text: str | bytes, *, durable: bool = True,
                 mode: int | None = None) -> None:
    """Replace `path` with `text`: a crash leaves the old content or the new, never a mix.
    `durable=False` skips the fsync: for files under /run, which need not survive a reboot
    and are read by other processes as soon as they are renamed. `mode` sets the permissions
    from the start (a private key is never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if mode is not None and tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    with open(fd, "wb" if isinstance(text, bytes) else "w") as handle:
        if mode is not None:
            os.fchmod(handle.fileno(), mode)
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
