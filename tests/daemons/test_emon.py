"""skyge-emon as a real process under a temporary node root (no network needed): values over gRPC,
plug-in probes, watermark scripts that run once per crossing, a CPU hog, bad config refused with
file, line and reason, sampling that goes on without a bus daemon, and the daemon's CPU cost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from skyge.clients.lab.configs import write_daemon_config, write_probe_config
from skyge.services.common.paths import NodePaths
from skyge.v1 import emon_pb2 as pb, emon_pb2_grpc
from tests.daemons.test_runner import wait_serving

DAEMON = [sys.executable, "-m", "skyge.services.emon"]
SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]
INTERVAL_MS = 100
START_TIMEOUT_S = 60  # generous: the machine may be shared with other test runs


class Node:
    """A node root with emon's config folders, and a helper to write its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = NodePaths.at(root)
        self.paths.etc.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def config(self, **values: Any) -> None:
        write_daemon_config(self.root, "emon", values)

    def ecs(self, probe: str, text: str) -> Path:
        folder = self.paths.etc / "emon" / "ecs" / probe
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "service.cfg").write_text(text)
        return folder / "service.cfg"

    def controlled_probe(self, name: str, value: float) -> Path:
        """A plug-in probe printing the number in a file the test writes."""
        value_file = self.root / f"{name}.value"
        value_file.write_text(f"{value}\n")
        program = self.root / f"{name}.sh"
        program.write_text(f"#!/bin/sh\ncat {value_file}\n")
        program.chmod(0o755)
        write_probe_config(self.root, name, {"exec": str(program), "unit": "level"})
        return value_file

    def counting_script(self, name: str) -> tuple[Path, Path]:
        """A watermark script appending one line per run to a file."""
        log = self.root / f"{name}.runs"
        script = self.root / f"{name}.sh"
        script.write_text(f'#!/bin/sh\necho "$SKYGE_EMON_WATERMARK $SKYGE_EMON_VALUE" >> {log}\n'
                          f'echo ran\n')
        script.chmod(0o755)
        return script, log

    def start(self) -> subprocess.Popen:
        with open(self.root / "emon.out", "w") as log:  # the daemon keeps its own copy
            self.proc = subprocess.Popen([*DAEMON, "-r", str(self.root), "--listen", "none",
                                          "-l", "LOG_DEBUG"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_serving(self.paths.socket("emon"), timeout=START_TIMEOUT_S)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.output()[-3000:]}") from None
        return self.proc

    def output(self) -> str:
        return (self.root / "emon.out").read_text(errors="replace")

    def stub(self) -> emon_pb2_grpc.EmonStub:
        channel = grpc.insecure_channel(f"unix:{self.paths.socket('emon')}")
        return emon_pb2_grpc.EmonStub(channel)

    def watermark(self, probe: str, name: str) -> pb.Watermark:
        reply = self.stub().ListWatermarks(pb.ListWatermarksRequest(probe=probe), timeout=5)
        return next(w for w in reply.watermarks if w.name == name)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "node")
    n.config(interval_ms=INTERVAL_MS)
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.proc.kill()
        n.proc.wait(10)


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def samples_after(node: Node, probe: str, count: int, timeout: float = 15.0) -> None:
    """Wait until `count` more samples of `probe` were taken."""
    stub = node.stub()
    start = len(stub.GetHistory(pb.GetHistoryRequest(probe=probe), timeout=5).samples)
    wait_for(lambda: len(stub.GetHistory(pb.GetHistoryRequest(probe=probe), timeout=5).samples)
             >= start + count, timeout, f"{count} samples of {probe}")


def runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# ---- values over gRPC

def test_values_readable_over_grpc_with_a_plugin_probe(node):
    node.controlled_probe("level", 42)
    node.start()
    stub = node.stub()
    probes = {p.name: p for p in stub.ListProbes(pb.ListProbesRequest(), timeout=5).probes}
    assert sorted(probes) == ["cpu_load", "disk_usage", "level", "mem_load"]
    assert probes["cpu_load"].unit == "percent" and probes["disk_usage"].unit == "kB"
    assert probes["level"].builtin is False and probes["level"].unit == "level"
    assert probes["level"].interval_ms == INTERVAL_MS
    current = wait_for(lambda: (lambda r: r if len(r.samples) == 4 else None)(
        stub.GetCurrent(pb.GetCurrentRequest(), timeout=5)), what="4 samples")
    values = {s.probe: s.value for s in current.samples}
    assert values["level"] == 42
    assert 0 <= values["cpu_load"] <= 100 and 0 < values["mem_load"] <= 100
    assert values["disk_usage"] > 0
    assert [s.probe for s in stub.GetCurrent(pb.GetCurrentRequest(probes=["level", "cpu_load"]),
                                             timeout=5).samples] == ["level", "cpu_load"]
    history = stub.GetHistory(pb.GetHistoryRequest(probe="level", limit=3), timeout=5).samples
    assert 1 <= len(history) <= 3 and history[-1].time_unix_ns >= history[0].time_unix_ns

    # a live stream: the latest sample first, then new ones; a new value appears
    stream = stub.Watch(pb.WatchRequest(probes=["level"]), timeout=15)
    first = next(stream)
    assert first.probe == "level" and first.value == 42
    (node.root / "level.value").write_text("7.5\n")
    assert wait_for(lambda: next(stream).value == 7.5, what="7.5 on the stream")
    stream.cancel()

    with pytest.raises(grpc.RpcError) as info:
        stub.GetCurrent(pb.GetCurrentRequest(probes=["nope"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in info.value.details()


def test_bad_plugin_output_is_skipped_and_counted(node):
    value_file = node.controlled_probe("level", 1)
    node.start()
    samples_after(node, "level", 1)
    value_file.write_text("not a number\n")
    stub = node.stub()
    probe = wait_for(lambda: next((p for p in stub.ListProbes(pb.ListProbesRequest(), timeout=5)
                                   .probes if p.name == "level" and p.errors >= 3), None),
                     what="3 errors")
    assert "printed 'not a number', not a number" in probe.last_error
    value_file.write_text("3\n")
    wait_for(lambda: stub.GetCurrent(pb.GetCurrentRequest(probes=["level"]), timeout=5)
             .samples[0].value == 3, what="the probe to recover")
    assert node.proc.poll() is None
    assert node.output().count("sample skipped") == 1  # logged once, then counted


def test_cli_show_and_watch_print_seed_like_text(node):
    node.controlled_probe("level", 12.5)
    node.start()
    samples_after(node, "cpu_load", 1)  # the last to come: measured over >= 0.25 s
    samples_after(node, "level", 1)
    show = subprocess.run([*SKYGE, "--root", str(node.root), "emon", "show"], capture_output=True,
                          text=True, timeout=30)
    assert show.returncode == 0, show.stderr
    lines = {line.split()[0]: line.split() for line in show.stdout.splitlines()}
    assert sorted(lines) == ["cpu_load", "disk_usage", "level", "mem_load"]
    assert lines["level"][1:3] == ["12.5", "level"] and lines["cpu_load"][2] == "%"
    assert lines["disk_usage"][2] == "kB"
    watch = subprocess.Popen([*SKYGE, "--root", str(node.root), "emon", "watch", "level"],
                             stdout=subprocess.PIPE, text=True)
    try:
        first, second = watch.stdout.readline().split(), watch.stdout.readline().split()
    finally:
        watch.kill()
        watch.wait(10)
    assert first[1:] == ["level", "12.5", "level"] and second[1:] == first[1:]
    as_json = subprocess.run([*SKYGE, "--root", str(node.root), "-o", "json", "emon", "show",
                              "level"], capture_output=True, text=True, timeout=30)
    assert '"probe": "level"' in as_json.stdout and '"value": 12.5' in as_json.stdout


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_watch_stops_cleanly_on_sigint_or_sigterm_even_started_with_sigint_ignored(node, stop):
    """A watch started as a background job (SIGINT ignored, as a shell without job control
    starts it) or stopped by a supervisor (SIGTERM) still ends on the signal: its output is
    all there and it exits 128 + the signal number."""
    node.start()
    samples_after(node, "cpu_load", 1)
    watch = subprocess.Popen([*SKYGE, "--root", str(node.root), "emon", "watch", "cpu_load"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        first = watch.stdout.readline()
        watch.send_signal(stop)
        rest, errors = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
    assert "cpu_load" in first, (first, rest, errors, watch.returncode)
    assert watch.returncode == 128 + stop, (watch.returncode, errors)
    assert "Traceback" not in errors


# ---- watermarks

def test_script_runs_once_per_crossing_and_again_only_after_rearming(node):
    value_file = node.controlled_probe("level", 10)
    script, log = node.counting_script("wm50")
    node.ecs("level", f'watermarks = "wm_50";\nwm_50 = "script:{script}:above";\n'
                      'hysteresis = 10;\n')
    node.start()
    samples_after(node, "level", 2)
    assert runs(log) == []

    value_file.write_text("60\n")  # crosses: runs once
    wait_for(lambda: runs(log), what="the script's first run")
    for value in ("70", "55", "45", "80"):  # stays above, then within the hysteresis (> 40)
        value_file.write_text(value + "\n")
        samples_after(node, "level", 3)
    assert runs(log) == ["wm_50 60"]
    wm = node.watermark("level", "wm_50")
    assert (wm.armed, wm.fired_count, wm.last_exit_status, wm.hysteresis) == (False, 1, 0, 10)
    assert wm.last_result.startswith("script exited 0") and wm.config_line == 2

    value_file.write_text("40\n")  # back past 50 - 10: re-arms
    wait_for(lambda: node.watermark("level", "wm_50").armed, what="re-arming")
    value_file.write_text("90\n")  # crosses again: runs a second time
    wait_for(lambda: len(runs(log)) == 2, what="the second run")
    samples_after(node, "level", 3)
    assert runs(log) == ["wm_50 60", "wm_50 90"]
    assert node.watermark("level", "wm_50").fired_count == 2
    out = node.output()
    assert f"{script} exited 0" in out and "output: ran" in out


def start_hog(seconds: float = 60.0) -> subprocess.Popen:
    """A bounded busy loop (it ends by itself after `seconds`); the test kills it by PID."""
    return subprocess.Popen([sys.executable, "-c",
                             f"import time\nend = time.monotonic() + {seconds}\n"
                             f"while time.monotonic() < end: pass\n"])


def test_cpu_hog_crosses_wm_above_and_the_script_runs_once(node):
    script, log = node.counting_script("cpu40")
    # a low threshold and one hog per core: reliable on a shared 2-core machine
    node.ecs("cpu_load", f'watermarks = "wm_40";\nwm_40 = "script:{script}:above";\n')
    hogs = []
    try:
        node.start()
        hogs = [start_hog() for _ in range(os.cpu_count() or 1)]
        wait_for(lambda: runs(log), timeout=20, what="the cpu_load watermark script")
        samples_after(node, "cpu_load", 10)  # ~1 s at 100% CPU: no second run
        assert len(runs(log)) == 1 and runs(log)[0].startswith("wm_40 ")
        assert float(runs(log)[0].split()[1]) > 40
        wm = node.watermark("cpu_load", "wm_40")
        assert wm.fired_count == 1 and not wm.armed and wm.direction == pb.DIRECTION_ABOVE
    finally:
        for hog in hogs:
            os.kill(hog.pid, signal.SIGKILL)
            hog.wait(10)


def test_bad_watermark_config_is_refused_at_start_with_line_and_reason(node):
    cfg = node.ecs("cpu_load", 'watermarks = "wm_90";\nwm_90 = "script:/bin/true:over";\n')
    result = subprocess.run([*DAEMON, "-r", str(node.root), "--listen", "none"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert (f"skyge-emon: {cfg}:2: wm_90: unknown direction 'over' (allowed: above, below, "
            f"equal)") in result.stderr
    assert not node.paths.socket("emon").exists()


def test_reload_applies_good_files_and_refuses_bad_ones_keeping_the_running_config(node):
    script, log = node.counting_script("wm")
    node.controlled_probe("level", 10)
    node.start()
    stub = node.stub()
    assert list(stub.ListWatermarks(pb.ListWatermarksRequest(), timeout=5).watermarks) == []
    node.ecs("level", f'watermarks = "wm_5";\nwm_5 = "script:{script}:above";\n')
    reply = stub.Reload(pb.ReloadRequest(), timeout=10)
    assert [(w.probe, w.name) for w in reply.watermarks] == [("level", "wm_5")]
    wait_for(lambda: runs(log), what="the reloaded watermark to fire")

    cfg = node.ecs("level", f'watermarks = "wm_5:wm_9";\nwm_5 = "script:{script}:above";\n')
    with pytest.raises(grpc.RpcError) as info:
        stub.Reload(pb.ReloadRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (f"{cfg}:1: watermarks: wm_9 is listed but not defined (add a "
                                    f'line wm_9 = "script:/path/to/script:above";) (the running '
                                    f"configuration is kept)")
    (wm,) = stub.ListWatermarks(pb.ListWatermarksRequest(), timeout=5).watermarks
    assert (wm.name, wm.fired_count, wm.armed) == ("wm_5", 1, False)  # state kept as well
    cli = subprocess.run([*SKYGE, "--root", str(node.root), "emon", "reload"], capture_output=True,
                         text=True, timeout=30)
    assert cli.returncode == 2 and "wm_9 is listed but not defined" in cli.stderr


def test_switch_watermark_reports_an_ha_daemon_that_is_not_there(node):
    value_file = node.controlled_probe("level", 1)
    node.ecs("level", 'watermarks = "wm_5";\nwm_5 = "switch::above";\n')
    node.start()
    value_file.write_text("9\n")
    wm = wait_for(lambda: (lambda w: w if w.last_result else None)(node.watermark("level", "wm_5")),
                  what="the switch outcome")
    assert wm.action == pb.WATERMARK_SWITCH and wm.fired_count == 1
    assert wm.last_result.startswith("HA daemon not reachable at ")
    assert "switch: HA daemon not reachable" in node.output()


# ---- no bus daemon; stopping; CPU cost

def test_sampling_goes_on_without_a_bus_daemon_and_the_outage_is_logged_once(node):
    node.start()
    samples_after(node, "mem_load", 10)
    stats = node.stub().GetStats(pb.GetEmonStatsRequest(), timeout=5)
    assert stats.publishing and not stats.bus_reachable and stats.published == 0
    assert stats.publish_failures >= 1 and stats.samples >= 25
    assert node.output().count("cannot publish samples on the bus daemon") == 1


def test_watch_ends_with_unavailable_when_the_daemon_stops(node):
    node.start()
    stream = node.stub().Watch(pb.WatchRequest(probes=["cpu_load"]), timeout=30)
    next(stream)
    node.proc.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as info:
        for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert node.proc.wait(10) == 0


def test_daemon_cpu_cost_at_a_1s_interval_is_under_1_percent(node):
    import psutil
    node.config(interval_ms=1000)
    node.start()
    proc = psutil.Process(node.proc.pid)
    time.sleep(2)  # past start-up (imports)
    before, started = proc.cpu_times(), time.monotonic()
    time.sleep(10)
    after, elapsed = proc.cpu_times(), time.monotonic() - started
    used = (after.user - before.user) + (after.system - before.system)
    assert used / elapsed < 0.01, f"skyge-emon used {100 * used / elapsed:.2f}% of a core"


def test_sighup_reloads_probes_and_watermarks_like_the_reload_rpc(node):
    script, _ = node.counting_script("wm")
    node.controlled_probe("level", 1)
    node.start()
    node.ecs("level", f'watermarks = "wm_5";\nwm_5 = "script:{script}:above";\n')
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: [w.name for w in node.stub().ListWatermarks(
        pb.ListWatermarksRequest(), timeout=5).watermarks] == ["wm_5"], what="wm_5 after SIGHUP")
    assert node.proc.poll() is None and "reloaded: probes" in node.output()
