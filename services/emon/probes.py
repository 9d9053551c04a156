"""Probes: what emon samples. The three built-ins (psutil) and plug-ins (the seed's
/etc/emon/services/).

Built-ins:
    cpu_load    percent   CPU use of the whole machine since the previous sample, 0-100
    mem_load    percent   memory in use (psutil's virtual_memory().percent), 0-100
    disk_usage  kB        used kB of the file system holding the node root (the seed: the root
                          file system; on a real node the root is /)

A plug-in is a folder ROOT/etc/skyge/emon/probes/NAME/ (NAME: 1-48 of [a-z0-9_]) holding
probe.cfg, either an executable that prints a number:

    exec = "/usr/local/bin/queue_depth";   # absolute path; run without a shell
    args = ["--queue", "jobs"];            # optional arguments
    unit = "jobs";                         # optional, shown with the values
    timeout_ms = 5000;                     # optional: longer runs are killed, sample skipped
    interval_ms = 1000;                    # optional: default emon.cfg's interval_ms
    desc = "jobs waiting";                 # optional

or a Python callable returning a number (called in a worker thread, same timeout):

    entry_point = "mypackage.probes:queue_depth";
    python_path = "/opt/myprobes";         # optional folder added to the import path

A failing sample (exit status not 0, timeout, output that is not one finite number, exception)
raises ProbeError: the daemon logs it and skips the sample; it never crashes the daemon.
psutil is used in this module only.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import psutil

from skyge.services.common.config import (ConfigError, Field, Schema, integer, parse_config,
                                          string)

__all__ = [
    "BUILTINS",
    "PROBE_FILE",
    "BuiltinProbe",
    "EntryPointProbe",
    "ExecProbe",
    "Probe",
    "ProbeError",
    "builtin_probes",
    "load_plugin",
    "load_plugins",
    "parse_value",
]

PROBE_FILE = "probe.cfg"
BUILTINS = ("cpu_load", "mem_load", "disk_usage")
NAME_RE = re.compile(r"[a-z0-9_]{1,48}")
DEFAULT_TIMEOUT_MS = 5000
OUTPUT_LIMIT = 4096  # bytes of a plug-in's stdout read at most
CPU_MIN_WINDOW_S = 0.25  # shortest window cpu_load is measured over


class ProbeError(Exception):
    """One sample failed; the message says why (logged, sample skipped)."""


def parse_value(raw: Any) -> float:
    """A probe's result as a finite float: a number, or text holding exactly one number."""
    if isinstance(raw, bool):
        raise ProbeError(f"returned {raw!r}, not a number")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        if isinstance(raw, bytes):
            raw = raw.decode(errors="replace")
        if not isinstance(raw, str):
            raise ProbeError(f"returned {type(raw).__name__} {raw!r:.60}, not a number")
        text = raw.strip()
        if not text:
            raise ProbeError("printed nothing (expected one number)")
        try:
            value = float(text)
        except ValueError:
            raise ProbeError(f"printed {text[:60]!r}, not a number") from None
    if not math.isfinite(value):
        raise ProbeError(f"returned {value}, not a finite number")
    return value


@dataclass
class Probe:
    """Something sampled as a number; `read()` returns one value or raises ProbeError."""

    name: str
    unit: str
    interval_ms: int
    builtin: bool = False
    source: str = ""
    desc: str = ""
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    config_file: str = ""

    async def read(self) -> float:
        raise NotImplementedError

    def definition(self) -> tuple:
        """What identifies the probe's configuration (a reload restarts a changed probe)."""
        return (self.name, self.unit, self.interval_ms, self.source, self.timeout_ms, self.desc)

    async def close(self) -> None:
        """Release what the probe holds (called when it is removed or the daemon stops)."""


@dataclass
class BuiltinProbe(Probe):
    reader: Callable[[], float] = field(default=lambda: 0.0, repr=False)

    #: monotonic time of the previous read (cpu_load measures from one read to the next)
    last_read: float = field(default_factory=time.monotonic, repr=False)

    async def read(self) -> float:
        # psutil calls are fast syscalls/proc reads; statvfs of a hung mount could block, so the
        # disk probe runs in a worker thread and the event loop never waits on it
        if self.name == "disk_usage":
            return parse_value(await asyncio.to_thread(self.reader))
        if self.name == "cpu_load":
            # CPU use is measured since the previous read: a window of a few ms (the first read,
            # right after the daemon primed psutil) would give a meaningless 0 or 100
            wait = CPU_MIN_WINDOW_S - (time.monotonic() - self.last_read)
            if wait > 0:
                await asyncio.sleep(wait)
            self.last_read = time.monotonic()
        return parse_value(self.reader())


def builtin_probes(root: Path, interval_ms: int) -> list[BuiltinProbe]:
    """cpu_load, mem_load and disk_usage (of the file system holding `root`)."""
    psutil.cpu_percent(interval=None)  # the first call only starts the measurement
    disk_path = str(root)

    def disk_kb() -> float:
        return psutil.disk_usage(disk_path).used // 1024

    return [
        BuiltinProbe("cpu_load", "percent", interval_ms, True, "psutil",
                     "CPU use of the machine, all cores", reader=lambda: psutil.cpu_percent(None)),
        BuiltinProbe("mem_load", "percent", interval_ms, True, "psutil",
                     "memory in use", reader=lambda: psutil.virtual_memory().percent),
        BuiltinProbe("disk_usage", "kB", interval_ms, True, "psutil",
                     f"used kB of the file system of {disk_path}", reader=disk_kb),
    ]


@dataclass
class ExecProbe(Probe):
    """Runs an executable each sample; its stdout must be one number."""

    argv: Sequence[str] = ()

    async def read(self) -> float:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise ProbeError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_ms / 1000)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise ProbeError(f"{self.argv[0]} timed out after {self.timeout_ms} ms (killed)") \
                from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        code = await proc.wait()  # (it has exited: communicate read its output to the end)
        if code != 0:
            tail = err.decode(errors="replace").strip()[-200:]
            status = f"killed by signal {-code}" if code < 0 else f"exited {code}"
            raise ProbeError(f"{self.argv[0]} {status}" + (f": {tail}" if tail else ""))
        if len(out) > OUTPUT_LIMIT:
            raise ProbeError(f"{self.argv[0]} printed {len(out)} bytes (expected one number)")
        return parse_value(out)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class EntryPointProbe(Probe):
    """Calls a Python callable each sample (in a worker thread; coroutines run on the loop)."""

    function: Callable[[], Any] | None = field(default=None, repr=False)
    _busy: bool = field(default=False, init=False, repr=False)

    async def read(self) -> float:
        assert self.function is not None
        if inspect.iscoroutinefunction(self.function):
            try:
                return parse_value(await asyncio.wait_for(self.function(), self.timeout_ms / 1000))
            except TimeoutError:
                raise ProbeError(f"{self.source} timed out after {self.timeout_ms} ms") from None
            except ProbeError:
                raise
            except Exception as exc:
                raise ProbeError(f"{self.source} raised {type(exc).__name__}: {exc}") from None
        if self._busy:
            raise ProbeError(f"{self.source}: the previous call has not returned yet")
        self._busy = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._call, self.function)
        try:
            return parse_value(await asyncio.wait_for(asyncio.shield(future),
                                                      self.timeout_ms / 1000))
        except TimeoutError:
            # the thread cannot be killed: the probe stays busy (samples skipped) until it returns
            raise ProbeError(f"{self.source} timed out after {self.timeout_ms} ms") from None

    def _call(self, function: Callable[[], Any]) -> Any:
        try:
            return function()
        except Exception as exc:
            raise ProbeError(f"{self.source} raised {type(exc).__name__}: {exc}") from None
        finally:
            self._busy = False


# --- plug-in config -------------------------------------------------------------------------------

def _absolute(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must be an absolute path in quotes, got {value!r}")
    return value


def _arguments(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'must be a list of quoted strings like ["-q", "jobs"], got {value!r}')
    return value


_SCHEMA_FIELDS = [
    Field("exec", _absolute, help="executable printing one number"),
    Field("entry_point", string(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", '"module:function"'),
          help="Python callable returning a number"),
    Field("args", _arguments, default=[]),
    Field("python_path", _absolute),
    Field("unit", string(r"[^\x00-\x1f]{0,16}", "0-16 printable characters"), default=""),
    Field("timeout_ms", integer(10, 600_000), default=DEFAULT_TIMEOUT_MS),
    Field("interval_ms", integer(100, 3_600_000)),
    Field("desc", string(r"[^\x00-\x1f]{0,256}", "0-256 printable characters"), default=""),
]


def _resolve(entry: str, python_path: str | None) -> Callable[[], Any]:
    module_name, _, attr = entry.partition(":")
    if python_path and python_path not in sys.path:
        sys.path.insert(0, python_path)
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{entry} is a {type(target).__name__}, not a callable")
    return target


def load_plugin(folder: Path, default_interval_ms: int) -> Probe:
    """The probe of one plug-in folder (its probe.cfg), validated; ConfigError names the line."""
    cfg = folder / PROBE_FILE
    path = str(cfg)
    name = folder.name
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"plug-in probe folder name {name!r} must be 1-48 characters of "
                          f"a-z 0-9 _", path=path)
    if name in BUILTINS:
        raise ConfigError(f"{name!r} is a built-in probe; give the plug-in another name", path=path)
    try:
        text = cfg.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=path) from None
    settings = parse_config(text, path)
    values = Schema(_SCHEMA_FIELDS).validate(settings, path)
    lines = {s.key: s.line for s in settings}
    interval = values["interval_ms"] or default_interval_ms
    common = dict(name=name, unit=values["unit"], interval_ms=interval, builtin=False,
                  desc=values["desc"], timeout_ms=values["timeout_ms"], config_file=path)
    if (values["exec"] is None) == (values["entry_point"] is None):
        both = values["exec"] is not None
        raise ConfigError("set exactly one of exec and entry_point" +
                          (", not both" if both else ""), path=path,
                          line=lines.get("entry_point") if both else None,
                          key="entry_point" if both else "exec")
    if values["exec"] is not None:
        for key in ("python_path",):
            if values[key] is not None:
                raise ConfigError("only for entry_point probes", path=path, line=lines[key],
                                  key=key)
        program = values["exec"]
        if not os.path.isfile(program):
            raise ConfigError(f"{program} not found", path=path, line=lines["exec"], key="exec")
        if not os.access(program, os.X_OK):
            raise ConfigError(f"{program} is not executable (chmod +x {program})", path=path,
                              line=lines["exec"], key="exec")
        return ExecProbe(**common, source=program, argv=(program, *values["args"]))
    if values["args"]:
        raise ConfigError("only for exec probes", path=path, line=lines["args"], key="args")
    entry = values["entry_point"]
    try:
        function = _resolve(entry, values["python_path"])
    except Exception as exc:
        raise ConfigError(f"cannot load {entry}: {type(exc).__name__}: {exc}", path=path,
                          line=lines["entry_point"], key="entry_point") from None
    return EntryPointProbe(**common, source=f"python:{entry}", function=function)


def load_plugins(probes_dir: Path, default_interval_ms: int) -> list[Probe]:
    """Every plug-in folder PROBES_DIR/NAME/ holding a probe.cfg, sorted by name."""
    if not probes_dir.is_dir():
        return []
    return [load_plugin(folder, default_interval_ms) for folder in sorted(probes_dir.iterdir())
            if folder.is_dir() and (folder / PROBE_FILE).is_file()]
