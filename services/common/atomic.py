"""Durable small files: write a temporary file, fsync it, rename it over the old one, fsync the
folder. The one way skyge replaces a file whose content must survive a crash."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, text: str | bytes, *, durable: bool = True,
                 mode: int | None = None) -> None:
    """Replace `path` with `text`: a crash leaves the old content or the new, never a mix.
    `durable=False` skips the fsyncs: for files under /run, which need not survive a reboot
    and are read by other processes as soon as they are renamed. `mode` sets the permissions
    from the start (a private key is never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if mode is not None and tmp.exists():
        tmp.unlink()  # O_CREAT keeps the mode of a file left by an earlier crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                 0o666 if mode is None else mode)
    try:
        with open(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:  # the rename itself is on disk only once the folder is
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
