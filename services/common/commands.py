"""Running an administrator's command (emon watermark scripts, HA isolation script, reboot,
fence) with a timeout, its output kept for the log.

The command runs without a shell unless given one, in its own process group, stdin /dev/null.
Past its timeout the group gets SIGTERM, then SIGKILL `KILL_GRACE_S` later. Never raises for the
command's own failures: they are in the result.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from collections.abc import Mapping, Sequence

__all__ = ["KILL_GRACE_S", "OUTPUT_TAIL", "CommandResult", "run_command"]

OUTPUT_TAIL = 2048
KILL_GRACE_S = 2.0
#: how long to wait for the output pipe after exit (a background child may keep it open)
PIPE_GRACE_S = 1.0


@dataclass(frozen=True)
class CommandResult:
    #: exit status, -N when killed by signal N, 127 when it could not be started
    status: int
    timed_out: bool
    seconds: float
    #: the last lines of stdout + stderr, joined with " | "
    output: str
    #: e.g. "exited 0 in 0.01 s", "timed out after 5 s (killed by signal 15)"
    summary: str
    #: False when it could not be started at all (missing, not executable...)
    started: bool = True

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out


def _exit_text(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exited {status}"


def _tail(data: bytes) -> str:
    lines = data.decode(errors="replace").rstrip().splitlines()[-20:]
    return " | ".join(line.rstrip() for line in lines)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_command(argv: Sequence[str], *, timeout_s: float,
                      env: Mapping[str, str] | None = None) -> CommandResult:
    """Run `argv` (environment: the daemon's plus `env`) and wait at most `timeout_s`."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(os.environ, **(env or {})),
            start_new_session=True)
    except OSError as error:
        return CommandResult(127, False, 0.0, "", f"cannot run {argv[0]}: "
                                                  f"{error.strerror or error}", started=False)
    tail = bytearray()

    async def collect() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(4096):
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL]

    reader = asyncio.create_task(collect())
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    except asyncio.CancelledError:
        _signal_group(proc.pid, signal.SIGKILL)
        reader.cancel()
        raise
    try:
        await asyncio.wait_for(reader, PIPE_GRACE_S)
    except TimeoutError:
        reader.cancel()
    status = proc.returncode if proc.returncode is not None else -9
    seconds = time.monotonic() - started
    summary = (f"timed out after {timeout_s:g} s ({_exit_text(status)})" if timed_out
               else f"{_exit_text(status)} in {seconds:.2f} s")
    return CommandResult(status, timed_out, seconds, _tail(bytes(tail)), summary)
