"""Probes: built-ins, plug-in folders (probe.cfg) and what a plug-in's output may be."""
from __future__ import annotations

import asyncio
import textwrap

import pytest

from skyge.services.common.config import ConfigError
from skyge.services.emon.probes import (EntryPointProbe, ExecProbe, ProbeError, builtin_probes,
                                        load_plugin, load_plugins, parse_value)


def run(coro):
    return asyncio.run(coro)


def executable(path, body):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def plugin(root, name, cfg):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "probe.cfg").write_text(cfg)
    return folder


# ---- values

@pytest.mark.parametrize("raw,value", [(3, 3.0), (2.5, 2.5), ("42\n", 42.0), (b" 7.25 ", 7.25),
                                       ("-1e3", -1000.0)])
def test_parse_value_accepts_one_number(raw, value):
    assert parse_value(raw) == value


@pytest.mark.parametrize("raw,words", [("", "printed nothing"), ("abc", "'abc', not a number"),
                                       ("1 2", "not a number"), (True, "not a number"),
                                       (None, "NoneType"), ("nan", "not a finite number"),
                                       (float("inf"), "not a finite number")])
def test_parse_value_refuses_anything_else(raw, words):
    with pytest.raises(ProbeError, match=words.replace("(", r"\(")):
        parse_value(raw)


# ---- built-ins

def test_builtins_give_plausible_values(tmp_path):
    probes = {p.name: p for p in builtin_probes(tmp_path, 1000)}
    assert sorted(probes) == ["cpu_load", "disk_usage", "mem_load"]
    assert {p.unit for p in probes.values()} == {"percent", "kB"}
    cpu, mem, disk = (run(probes[n].read()) for n in ("cpu_load", "mem_load", "disk_usage"))
    assert 0 <= cpu <= 100 and 0 < mem <= 100
    assert disk > 0 and disk == int(disk)  # whole kB


# ---- plug-in config

def test_an_exec_plugin_takes_its_options_and_reads_its_programs_output(tmp_path):
    prog = executable(tmp_path / "depth.sh", 'echo "$1-$2" >/dev/null; echo 12.5')
    folder = plugin(tmp_path / "probes", "queue_depth",
                    f'exec = "{prog}";\nargs = ["a", "b"];\nunit = "jobs";\ntimeout_ms = 800;\n'
                    f'interval_ms = 2000;\ndesc = "jobs waiting";\n')
    probe = load_plugin(folder, 1000)
    assert isinstance(probe, ExecProbe)
    assert (probe.name, probe.unit, probe.interval_ms, probe.timeout_ms, probe.source,
            probe.desc, probe.builtin) == ("queue_depth", "jobs", 2000, 800, str(prog),
                                           "jobs waiting", False)
    assert tuple(probe.argv) == (str(prog), "a", "b")
    assert run(probe.read()) == 12.5


def test_entry_point_plugin_with_python_path(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "emon_test_probe_mod.py").write_text(textwrap.dedent("""
        calls = []
        def depth():
            calls.append(1)
            return len(calls) * 10
        class Holder:
            @staticmethod
            def fixed():
                return "7"
    """))
    folder = plugin(tmp_path / "probes", "pyprobe",
                    f'entry_point = "emon_test_probe_mod:depth";\npython_path = "{lib}";\n')
    probe = load_plugin(folder, 1500)
    assert isinstance(probe, EntryPointProbe)
    assert probe.source == "python:emon_test_probe_mod:depth" and probe.interval_ms == 1500
    assert run(probe.read()) == 10 and run(probe.read()) == 20
    nested = load_plugin(plugin(tmp_path / "p2", "nested",
                                'entry_point = "emon_test_probe_mod:Holder.fixed";\n'), 1000)
    assert run(nested.read()) == 7


def test_load_plugins_sorted_and_skips_folders_without_cfg(tmp_path):
    prog = executable(tmp_path / "one.sh", "echo 1")
    plugin(tmp_path / "probes", "zeta", f'exec = "{prog}";\n')
    plugin(tmp_path / "probes", "alpha", f'exec = "{prog}";\n')
    (tmp_path / "probes" / "empty").mkdir()
    assert [p.name for p in load_plugins(tmp_path / "probes", 1000)] == ["alpha", "zeta"]
    assert load_plugins(tmp_path / "nothing", 1000) == []


@pytest.mark.parametrize("name,cfg,line,key,words", [
    ("q", 'unit = "x";\n', None, "exec", "exactly one of exec and entry_point"),
    ("q", 'exec = "{prog}";\nentry_point = "a:b";\n', 2, "entry_point", "not both"),
    ("q", 'exec = "relative.sh";\n', 1, "exec", "absolute path"),
    ("q", 'exec = "/no/such/probe";\n', 1, "exec", "/no/such/probe not found"),
    ("q", 'exec = "{noexec}";\n', 1, "exec", "is not executable"),
    ("q", 'exec = "{prog}";\ntimeout_ms = 5;\n', 2, "timeout_ms", "from 10 to 600000"),
    ("q", 'exec = "{prog}";\ninterval_ms = 50;\n', 2, "interval_ms", "from 100 to 3600000"),
    ("q", 'exec = "{prog}";\ncolour = 1;\n', 2, "colour", "unknown option"),
    ("q", 'exec = "{prog}";\npython_path = "/tmp";\n', 2, "python_path", "only for entry_point"),
    ("q", 'entry_point = "nomodule_xyz_emon:f";\n', 1, "entry_point",
     "cannot load nomodule_xyz_emon:f: ModuleNotFoundError"),
    ("q", 'entry_point = "os:sep";\n', 1, "entry_point", "not a callable"),
    ("q", 'entry_point = "os";\n', 1, "entry_point", '"module:function"'),
    ("q", 'entry_point = "os:getpid";\nargs = ["x"];\n', 2, "args", "only for exec"),
    ("cpu_load", 'exec = "{prog}";\n', None, None, "is a built-in probe"),
    ("Bad-Name", 'exec = "{prog}";\n', None, None, "1-48 characters of a-z 0-9 _"),
])
def test_bad_plugin_config_names_line_key_and_reason(tmp_path, name, cfg, line, key, words):
    prog = executable(tmp_path / "p.sh", "echo 1")
    noexec = tmp_path / "n.sh"
    noexec.write_text("echo 1\n")
    folder = plugin(tmp_path / "probes", name, cfg.format(prog=prog, noexec=noexec))
    with pytest.raises(ConfigError) as info:
        load_plugin(folder, 1000)
    assert (info.value.path, info.value.line, info.value.key) == (str(folder / "probe.cfg"), line,
                                                                  key)
    assert words in str(info.value)


# ---- bad output never crashes: ProbeError, sample skipped

@pytest.mark.parametrize("body,words", [
    ("echo hello", "printed 'hello', not a number"),
    ("echo oops >&2; exit 3", "exited 3: oops"),
    ("kill -9 $$", "killed by signal 9"),
    ("exec sleep 5", "timed out after 300 ms"),
    ("", "printed nothing"),
])
def test_exec_probe_failures_raise_probe_error(tmp_path, body, words):
    prog = executable(tmp_path / "p.sh", body)
    probe = ExecProbe("p", "", 1000, timeout_ms=300, source=str(prog), argv=(str(prog),))
    with pytest.raises(ProbeError, match=words):
        run(probe.read())


def test_exec_probe_timeout_kills_the_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    prog = executable(tmp_path / "p.sh", f"sleep 30 & echo $! > {marker}; wait")
    probe = ExecProbe("p", "", 1000, timeout_ms=300, source=str(prog), argv=(str(prog),))
    with pytest.raises(ProbeError, match="timed out"):
        run(probe.read())
    import os
    import time
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the plug-in's child survived the timeout")


def test_entry_point_failures_raise_probe_error_and_a_hung_call_is_not_repeated():
    import threading
    release = threading.Event()

    def boom():
        raise RuntimeError("disk gone")

    def hang():
        release.wait(5)
        return 1

    async def scenario():
        with pytest.raises(ProbeError, match="raised RuntimeError: disk gone"):
            await EntryPointProbe("b", "", 1000, source="python:m:boom", function=boom).read()
        with pytest.raises(ProbeError, match="not a number"):
            await EntryPointProbe("s", "", 1000, source="python:m:s", function=lambda: "x").read()
        slow = EntryPointProbe("h", "", 1000, timeout_ms=100, source="python:m:hang", function=hang)
        with pytest.raises(ProbeError, match="timed out after 100 ms"):
            await slow.read()
        with pytest.raises(ProbeError, match="previous call has not returned"):
            await slow.read()
        release.set()
        await asyncio.sleep(0.2)
        assert await slow.read() == 1

    run(scenario())


def test_an_entry_point_probe_may_be_a_coroutine():
    async def value():
        return 3

    assert run(EntryPointProbe("c", "", 1000, source="python:m:c", function=value).read()) == 3
