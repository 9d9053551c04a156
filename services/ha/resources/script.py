"""Running a service's user script (asyncio), and watching its main process die (pidfd).

The contract (seed chapter 6.2): ``script start|stop|status``; exit 0 = success (for status:
running), 1 = failure (for status: not running). LSB init scripts and OCF agents work too:

======  ==========================  =====================================================
kind    called as                   status / monitor exit codes
======  ==========================  =====================================================
seed    ``script start|stop|status``  0 running, 1 not running, other = failed
lsb     ``script start|stop|status``  0 running, 3 not running, 1/2/4/other = failed
ocf     ``agent start|stop|monitor``  0 running, 8 running (promoted), 7 not running,
                                    other = failed; env OCF_ROOT, OCF_RESKEY_*, ...
======  ==========================  =====================================================

For start and stop, 0 is success and anything else a failure, whatever the kind.

Every run gets the daemon's environment plus SKYGE_SERVICE (name), SKYGE_DOMAIN, SKYGE_SLOT,
SKYGE_TYPE (random|fifo|stack), SKYGE_FENCING_TOKEN and SKYGE_ACTION. The script runs in its own
session and process group, with stdin /dev/null and the working directory /. At its timeout the
whole process group is SIGKILLed (background children included, unless they left the group with
setsid) and the result is `Outcome.TIMEOUT`; the same happens when the awaiting task is cancelled.

Output: stdout and stderr are appended to a per-service log file (opened O_APPEND), not a pipe.
A script that starts a daemon in the background without redirecting its output leaves the
daemon writing to that file; with a pipe the daemon would get EPIPE/SIGPIPE as soon as the
script exited (or as soon as the HA daemon restarted). The file is cut (copied to ``.1``, then
truncated, which O_APPEND writers survive) when it passes `LOG_ROTATE_BYTES`. The result carries
the last `OUTPUT_TAIL_BYTES` written during the run, for the HA log.

`ProcessWatch` turns a process's death into an asyncio event: ``pidfd_open`` + ``add_reader``,
readable the moment the process exits, so the daemon reacts at once rather than at the next
``status`` check; it also kills the process (and its group) when the lock is lost.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping

from skyge.services.ha.resources.cgroup import ServiceCgroup
from skyge.services.ha.service_config import ServiceConfig

__all__ = [
    "ACTIONS",
    "LOG_ROTATE_BYTES",
    "OUTPUT_TAIL_BYTES",
    "Outcome",
    "PidfileError",
    "ProcessWatch",
    "ScriptResult",
    "ScriptRunner",
    "classify",
    "kill_group",
    "read_pidfile",
    "run_script",
]

ACTIONS = ("start", "stop", "status")
OUTPUT_TAIL_BYTES = 4096
LOG_ROTATE_BYTES = 1 << 20
#: how long to wait for a SIGKILLed process group leader to be reaped
KILL_WAIT_S = 5.0
DEFAULT_OCF_ROOT = "/usr/lib/ocf"
NOT_RUNNING_CODES = {"seed": 1, "lsb": 3, "ocf": 7}
OCF_RUNNING_PROMOTED = 8


class Outcome(enum.Enum):
    """What a script run came to."""

    #: exit 0 (status: running; OCF monitor 8 = running promoted counts too)
    OK = "ok"
    #: status only: cleanly not running (seed 1, LSB 3, OCF 7)
    NOT_RUNNING = "not running"
    #: any other exit code, or killed by a signal it did not get from us
    FAILED = "failed"
    #: still running at its timeout; its process group was SIGKILLed
    TIMEOUT = "timeout"
    #: could not be started at all (missing, not executable, bad interpreter...)
    ERROR = "error"


@dataclass(frozen=True)
class ScriptResult:
    action: str
    outcome: Outcome
    #: exit status (negative: killed by that signal); None for TIMEOUT and ERROR
    returncode: int | None
    seconds: float
    #: the last OUTPUT_TAIL_BYTES of what the script wrote during this run
    output: str
    #: one line for the log, e.g. "status: not running (exit 3, lsb)"
    reason: str
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def classify(kind: str, action: str, returncode: int) -> Outcome:
    """Map an exit status to an outcome for a script of `kind` (seed, lsb, ocf)."""
    if returncode == 0:
        return Outcome.OK
    if returncode < 0:
        return Outcome.FAILED
    if action == "status":
        if kind == "ocf" and returncode == OCF_RUNNING_PROMOTED:
            return Outcome.OK
        if returncode == NOT_RUNNING_CODES.get(kind):
            return Outcome.NOT_RUNNING
    return Outcome.FAILED


def _ocf_layout(script: str) -> tuple[str, str, str]:
    """(OCF_ROOT, provider, type) of an agent, e.g. /usr/lib/ocf/resource.d/heartbeat/IPaddr2."""
    root, sep, rest = script.partition("/resource.d/")
    if not sep:
        return DEFAULT_OCF_ROOT, "", os.path.basename(script)
    parts = rest.split("/")
    return root or "/", parts[0] if len(parts) > 1 else "", parts[-1]


def _describe(action: str, outcome: Outcome, returncode: int | None, kind: str,
              seconds: float, timeout: float, extra: str = "") -> str:
    if outcome is Outcome.TIMEOUT:
        return f"{action}: timed out after {timeout:g} s; its process group was killed{extra}"
    if outcome is Outcome.ERROR:
        return f"{action}: could not run: {extra}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        how = f"killed by {name}"
    else:
        how = f"exit {returncode}"
    word = {Outcome.OK: "running" if action == "status" else "ok",
            Outcome.NOT_RUNNING: "not running", Outcome.FAILED: "failed"}[outcome]
    return f"{action}: {word} ({how}, {kind}, {seconds * 1000:.0f} ms)"


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            shutil.copyfile(path, path.with_name(path.name + ".1"))
            os.truncate(path, 0)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _finish_log(path: Path, reason: str, start: int, limit: int) -> str:
    """Append the run's result line to its log; return what the run wrote there (its last
    `limit` bytes from `start`)."""
    try:
        with open(path, "ab") as sink:
            sink.write(f"--- {reason}\n".encode())
    except OSError:
        pass
    try:
        with open(path, "rb") as log:
            end = log.seek(0, os.SEEK_END)
            if end < start:  # cut meanwhile
                start = 0
            log.seek(max(start, end - limit))
            data = log.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def kill_group(pgid: int) -> bool:
    """SIGKILL a process group; False when no process of it was left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def run_script(script: str, action: str, *, timeout: float, kind: str = "seed",
                     env: Mapping[str, str] | None = None, log_path: str | os.PathLike[str],
                     output_limit: int = OUTPUT_TAIL_BYTES,
                     cgroup: ServiceCgroup | None = None) -> ScriptResult:
    """Run ``script ACTION`` (ACTION start|stop|status; OCF agents get monitor for status).

    `env` is the complete environment. Output is appended to `log_path`. Never raises for the
    script's own failures: they are in the result. Cancelling the awaiting task kills the group.
    With `cgroup`, the script (and all it leaves running) runs in it.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    argv_action = "monitor" if kind == "ocf" and action == "status" else action
    log = Path(log_path)
    loop = asyncio.get_running_loop()
    fd = _open_log(log)
    try:
        start_offset = os.fstat(fd).st_size
        os.write(fd, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {script} {argv_action}\n".encode())
        began = loop.time()
        try:
            argv = [script, argv_action]
            proc = await asyncio.create_subprocess_exec(
                *(cgroup.wrap(argv) if cgroup is not None else argv),
                stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd,
                env=dict(env) if env is not None else None, cwd="/", start_new_session=True)
        except OSError as error:
            reason = _describe(action, Outcome.ERROR, None, kind, 0.0, timeout,
                               f"{script}: {error.strerror or error}")
            os.write(fd, f"--- {reason}\n".encode())
            return ScriptResult(action, Outcome.ERROR, None, 0.0, "", reason)
    finally:
        os.close(fd)
    timed_out = False
    try:
        try:
            returncode: int | None = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            kill_group(proc.pid)
            try:
                returncode = await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
            except TimeoutError:
                returncode = None
    except asyncio.CancelledError:
        kill_group(proc.pid)
        raise
    seconds = loop.time() - began
    if timed_out:
        outcome, code = Outcome.TIMEOUT, None
        extra = ("" if returncode is not None
                 else f" (pid {proc.pid} did not die in {KILL_WAIT_S:g} s)")
    else:
        assert returncode is not None
        outcome, code, extra = classify(kind, action, returncode), returncode, ""
    reason = _describe(action, outcome, code, kind, seconds, timeout, extra)
    # (reading back up to output_limit bytes: off the loop, as the file may be on a slow disk)
    output = await asyncio.to_thread(_finish_log, log, reason, start_offset, output_limit)
    return ScriptResult(action, outcome, code, seconds, output, reason, proc.pid)


class ScriptRunner:
    """The user script of one service on this node: `start`, `stop`, `status` with the service's
    timeouts and the SKYGE_* (and OCF_*) environment."""

    def __init__(self, config: ServiceConfig, *, domain: int,
                 log_path: str | os.PathLike[str] | None = None,
                 extra_env: Mapping[str, str] | None = None,
                 output_limit: int = OUTPUT_TAIL_BYTES,
                 cgroup: ServiceCgroup | None = None) -> None:
        self.config = config
        #: where `script start` runs (and the service with it); None: the daemon's own cgroup
        self.cgroup = cgroup
        self.domain = domain
        self.log_path = Path(log_path) if log_path is not None else Path(
            tempfile.gettempdir()) / f"skyge-ha-{config.type}-{config.slot}-{config.name}.log"
        self.extra_env = dict(extra_env or {})
        self.output_limit = output_limit

    def timeout_for(self, action: str) -> float:
        c = self.config
        return float({"start": c.start_timeout, "stop": c.stop_timeout,
                      "status": c.status_timeout}[action])

    def environment(self, action: str, fencing_token: int, timeout: float) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(SKYGE_SERVICE=c.name, SKYGE_DOMAIN=str(self.domain), SKYGE_SLOT=str(c.slot),
                   SKYGE_TYPE=c.type, SKYGE_FENCING_TOKEN=str(fencing_token),
                   SKYGE_ACTION=action)
        if c.script_kind == "ocf":
            root, provider, agent = _ocf_layout(c.script)
            env.update(OCF_ROOT=root, OCF_RA_VERSION_MAJOR="1", OCF_RA_VERSION_MINOR="1",
                       OCF_RESOURCE_INSTANCE=c.name, OCF_RESOURCE_TYPE=agent,
                       OCF_RESOURCE_PROVIDER=provider,
                       OCF_RESKEY_CRM_meta_timeout=str(int(timeout * 1000)))
            if action == "status":
                env["OCF_RESKEY_CRM_meta_interval"] = str(c.check_interval * 1000)
            env.update({f"OCF_RESKEY_{key}": value for key, value in c.ocf_params})
        return env

    async def run(self, action: str, fencing_token: int,
                  timeout: float | None = None) -> ScriptResult:
        timeout = self.timeout_for(action) if timeout is None else timeout
        return await run_script(self.config.script, action, timeout=timeout,
                                kind=self.config.script_kind,
                                env=self.environment(action, fencing_token, timeout),
                                log_path=self.log_path, output_limit=self.output_limit,
                                cgroup=self.cgroup if action == "start" else None)

    async def start(self, fencing_token: int, timeout: float | None = None) -> ScriptResult:
        return await self.run("start", fencing_token, timeout)

    async def stop(self, fencing_token: int, timeout: float | None = None) -> ScriptResult:
        return await self.run("stop", fencing_token, timeout)

    async def status(self, fencing_token: int, timeout: float | None = None) -> ScriptResult:
        return await self.run("status", fencing_token, timeout)


# --- the pidfile watcher ------------------------------------------------------------------------
class PidfileError(Exception):
    """The pid file is missing, unreadable, malformed, or names no live process."""


def read_pidfile(path: str | os.PathLike[str]) -> int:
    """The PID in a pid file (first word; the rest of the file is ignored)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as error:
        raise PidfileError(f"{path}: cannot read: {error.strerror or error}") from None
    word = text.split(maxsplit=1)[0] if text.split() else ""
    if not word.isdigit() or int(word) < 1:
        raise PidfileError(f"{path}: does not start with a PID (got {text[:20]!r})")
    return int(word)


class ProcessWatch:
    """The death of one process as an asyncio event: ``await watch.wait()`` returns (and the
    callbacks run) as soon as the process exits. Uses a pidfd, so a recycled PID cannot fool it.

    Create inside the running loop; `close()` (or ``with``) when no longer needed.
    """

    def __init__(self, pid: int, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.pid = pid
        self._loop = loop or asyncio.get_running_loop()
        self._fd: int | None = os.pidfd_open(pid)  # ProcessLookupError when already gone
        self._done: asyncio.Future[float] = self._loop.create_future()
        self._callbacks: list[Callable[[int], object]] = []
        self._loop.add_reader(self._fd, self._ready)

    @classmethod
    def from_pidfile(cls, path: str | os.PathLike[str], *,
                     loop: asyncio.AbstractEventLoop | None = None) -> ProcessWatch:
        """Watch the process named by a pid file; raises PidfileError when there is none."""
        for _ in range(3):
            pid = read_pidfile(path)
            try:
                watch = cls(pid, loop=loop)
            except ProcessLookupError:
                raise PidfileError(f"{path}: process {pid} is not running") from None
            try:
                again = read_pidfile(path)
            except PidfileError:
                again = pid
            if again == pid:
                return watch
            watch.close()  # the file changed while we opened the pidfd: look again
        raise PidfileError(f"{path}: keeps changing")

    def _ready(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
        if not self._done.done():
            self._done.set_result(time.monotonic())
            for callback in self._callbacks:
                self._loop.call_soon(callback, self.pid)

    @property
    def dead(self) -> bool:
        return self._done.done() and not self._done.cancelled()

    @property
    def died_at(self) -> float | None:
        """time.monotonic() when the death was seen, or None."""
        return self._done.result() if self.dead else None

    def add_callback(self, callback: Callable[[int], object]) -> None:
        """Call `callback(pid)` (in the loop) when the process dies; at once if it already has."""
        if self.dead:
            self._loop.call_soon(callback, self.pid)
        else:
            self._callbacks.append(callback)

    async def wait(self) -> None:
        """Return when the process has exited."""
        await asyncio.shield(self._done)

    def kill(self) -> bool:
        """SIGKILL the process, through its pidfd (never another process that reused its PID);
        when it leads its process group (a daemon that called setsid), the whole group, so its
        workers die with it. False if it had already exited."""
        if self._fd is None or self.dead:
            return False
        try:
            leader = os.getpgid(self.pid) == self.pid
            if leader:  # the PID cannot be reused while its group has members
                os.killpg(self.pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if not self._done.done():
            self._done.cancel()
        self._callbacks.clear()

    def __enter__(self) -> ProcessWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self.close()
