"""A lab's state file, shared by every process that drives the lab (tests, CLI, benchmarks).

``/run/skyge-lab/{lab}/state.json`` holds what cannot be read back from the kernel cheaply: the
holder PIDs, which NICs are cut, the partition, the loss rules, crashed and frozen nodes, and the
processes started through the lab. Every change is a read-modify-write under an exclusive
``flock`` on ``/run/skyge-lab/{lab}/lock``, and the file is replaced atomically (write + rename),
so two processes changing one lab never lose each other's changes and a reader never sees half a
file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from skyge.clients.lab.errors import LabError
from skyge.services.common.atomic import write_atomic

STATE_VERSION = 1
LAB_ROOT = Path("/run/skyge-lab")
#: longest wait for another process's operation on the same lab to finish
LOCK_TIMEOUT = 60.0


def lab_dir(name: str) -> Path:
    return LAB_ROOT / name


def state_path(name: str) -> Path:
    return lab_dir(name) / "state.json"


def read(name: str) -> dict[str, Any] | None:
    """The lab's state, or None when there is no readable state file."""
    try:
        data = json.loads(state_path(name).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("version") != STATE_VERSION
            or data.get("name") != name):
        return None
    return data


def write(name: str, data: dict[str, Any]) -> None:
    """Replace the lab's state; the caller holds the lab's lock (see `locked`), so one writer at
    a time uses the temporary file."""
    write_atomic(state_path(name), json.dumps(data, indent=1, sort_keys=True), durable=False)


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold the lab's lock (exclusive, waits at most LOCK_TIMEOUT) for a read-modify-write."""
    try:
        fd = os.open(lab_dir(name) / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise LabError(f"lab {name!r} is not up (no {lab_dir(name)})") from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"lab {name!r} is busy: another process held its lock for "
                                   f"{LOCK_TIMEOUT:g} s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def mutate(name: str) -> Iterator[dict[str, Any]]:
    """Lock, read, let the caller change the state, write it back (not written on exception)."""
    with locked(name):
        data = read(name)
        if data is None:
            raise LabError(f"lab {name!r} is not up (no state in {state_path(name)})")
        yield data
        write(name, data)
