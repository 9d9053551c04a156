"""User scripts: exit codes per kind (seed, LSB, OCF), environment, timeouts that kill the whole
process group, bounded output, and process death seen through a pidfd within milliseconds."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyge.services.ha.resources.script import (Outcome, PidfileError, ProcessWatch,
                                                ScriptRunner, classify, read_pidfile, run_script)
from skyge.services.ha.service_config import parse_service


def make_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def runner(tmp_path: Path, script: Path, extra: str = "", type: str = "fifo",
           slot: int = 3) -> ScriptRunner:
    config = parse_service(f'name = "demo";\nscript = "{script}";\n{extra}', type, slot,
                           str(tmp_path / "service.cfg"))
    return ScriptRunner(config, domain=2, log_path=tmp_path / "log" / "demo.log")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("kind,action,code,outcome", [
    ("seed", "start", 0, Outcome.OK), ("seed", "start", 1, Outcome.FAILED),
    ("seed", "stop", 3, Outcome.FAILED), ("seed", "status", 0, Outcome.OK),
    ("seed", "status", 1, Outcome.NOT_RUNNING), ("seed", "status", 3, Outcome.FAILED),
    ("lsb", "status", 3, Outcome.NOT_RUNNING), ("lsb", "status", 1, Outcome.FAILED),
    ("lsb", "status", 4, Outcome.FAILED), ("lsb", "stop", 0, Outcome.OK),
    ("ocf", "status", 7, Outcome.NOT_RUNNING), ("ocf", "status", 8, Outcome.OK),
    ("ocf", "status", 1, Outcome.FAILED), ("ocf", "start", 7, Outcome.FAILED),
    ("seed", "status", -9, Outcome.FAILED),
])
def test_an_exit_code_means_what_the_script_kind_says_it_means(kind, action, code, outcome):
    assert classify(kind, action, code) is outcome


def test_seed_script_actions_and_environment(tmp_path):
    seen = tmp_path / "env"
    script = make_script(tmp_path / "svc.sh", f'''
env | grep -E '^(SKYGE_|OCF_)' | sort > {seen}.$1
echo "did $1"
case "$1" in start|stop) exit 0;; status) exit 1;; esac
exit 2
''')
    r = runner(tmp_path, script)

    async def main():
        return (await r.start(41), await r.status(41), await r.stop(42))

    start, status, stop = asyncio.run(main())
    assert start.ok and start.returncode == 0 and "did start" in start.output
    assert start.reason.startswith("start: ok (exit 0, seed")
    assert status.outcome is Outcome.NOT_RUNNING and status.returncode == 1
    assert stop.ok
    env = dict(line.split("=", 1) for line in Path(f"{seen}.start").read_text().split())
    expected = {"SKYGE_SERVICE": "demo", "SKYGE_DOMAIN": "2", "SKYGE_SLOT": "3",
                "SKYGE_TYPE": "fifo", "SKYGE_FENCING_TOKEN": "41", "SKYGE_ACTION": "start"}
    inherited = {k: v for k, v in env.items() if k not in expected and os.environ.get(k) == v}
    assert env == {**expected, **inherited}  # the test run's own SKYGE_ variables pass through
    assert "SKYGE_FENCING_TOKEN=42" in Path(f"{seen}.stop").read_text()
    log = (tmp_path / "log" / "demo.log").read_text()
    assert "did start" in log and "status: not running (exit 1, seed" in log


def test_lsb_script_status_3_is_not_running(tmp_path):
    script = make_script(tmp_path / "init" / "svc", 'exit 3\n')
    r = runner(tmp_path, script, 'script_type = "lsb";\n')
    result = asyncio.run(r.status(1))
    assert result.outcome is Outcome.NOT_RUNNING and "(exit 3, lsb" in result.reason


def test_ocf_agent_gets_monitor_and_ocf_environment(tmp_path):
    root = tmp_path / "ocf"
    seen = tmp_path / "ocf-env"
    agent = make_script(root / "resource.d" / "acme" / "Thing", f'''
echo "$1 $OCF_ROOT $OCF_RESOURCE_INSTANCE $OCF_RESOURCE_PROVIDER $OCF_RESOURCE_TYPE \
$OCF_RESKEY_ip $OCF_RESKEY_CRM_meta_timeout $SKYGE_SERVICE" > {seen}
[ "$1" = monitor ] && exit 7
exit 0
''')
    r = runner(tmp_path, agent, 'ocf_params = "ip=10.0.0.9";\nstatus_timeout = 4;\n')
    assert r.config.script_kind == "ocf"
    result = asyncio.run(r.status(5))
    assert result.outcome is Outcome.NOT_RUNNING
    assert seen.read_text().split() == ["monitor", str(root), "demo", "acme", "Thing",
                                        "10.0.0.9", "4000", "demo"]
    assert asyncio.run(r.start(5)).ok and seen.read_text().startswith("start ")


def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    script = make_script(tmp_path / "hang.sh", f'''
sleep 60 &
echo $$ $! > {pids}
sleep 60
''')
    r = runner(tmp_path, script)
    began = time.monotonic()
    result = asyncio.run(r.start(1, timeout=0.5))
    elapsed = time.monotonic() - began
    assert result.outcome is Outcome.TIMEOUT and result.returncode is None
    assert "timed out after 0.5 s" in result.reason
    assert 0.5 <= elapsed < 2.0
    leader, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while (alive(leader) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(leader) and not alive(child)


def test_cancelling_kills_the_process_group(tmp_path):
    pids = tmp_path / "pids"
    script = make_script(tmp_path / "hang.sh", f'sleep 60 &\necho $! > {pids}\nsleep 60\n')
    r = runner(tmp_path, script)

    async def main():
        task = asyncio.create_task(r.stop(1))
        for _ in range(500):  # until the script has written its child's PID (bounded: 5 s)
            if pids.exists() and pids.read_text().strip():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    child = int(pids.read_text())
    deadline = time.monotonic() + 2
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)


def test_background_daemon_survives_and_start_returns_at_once(tmp_path):
    pidfile = tmp_path / "daemon.pid"
    # the daemon keeps the script's stdout open: start must not wait for it, nor break it
    script = make_script(tmp_path / "svc.sh", f'''
case "$1" in
start) (trap '' PIPE; while :; do echo tick; sleep 0.05; done) & echo $! > {pidfile}; exit 0;;
stop) kill $(cat {pidfile}); exit 0;;
esac
''')
    r = runner(tmp_path, script)
    result = asyncio.run(r.start(1))
    assert result.ok and result.seconds < 1.0
    pid = read_pidfile(pidfile)
    time.sleep(0.2)
    assert alive(pid)
    assert asyncio.run(r.stop(1)).ok
    deadline = time.monotonic() + 2
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)


def test_output_tail_is_bounded(tmp_path):
    script = make_script(tmp_path / "loud.sh", 'seq 1 20000\necho LAST >&2\nexit 1\n')
    config = parse_service(f'name = "loud";\nscript = "{script}";\n', "random", 0)
    r = ScriptRunner(config, domain=1, log_path=tmp_path / "loud.log", output_limit=1000)
    result = asyncio.run(r.start(1))
    assert result.outcome is Outcome.FAILED and result.returncode == 1
    assert len(result.output) <= 1000 and "LAST" in result.output


def test_scripts_that_cannot_run(tmp_path):
    missing = asyncio.run(run_script(str(tmp_path / "none.sh"), "start", timeout=5,
                                     log_path=tmp_path / "x.log"))
    assert missing.outcome is Outcome.ERROR and "could not run" in missing.reason
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\nexit 0\n")
    denied = asyncio.run(run_script(str(plain), "start", timeout=5, log_path=tmp_path / "x.log"))
    assert denied.outcome is Outcome.ERROR and "ermission denied" in denied.reason
    with pytest.raises(ValueError):
        asyncio.run(run_script(str(plain), "restart", timeout=5, log_path=tmp_path / "x.log"))


def test_killed_by_signal_is_a_failure(tmp_path):
    script = make_script(tmp_path / "suicide.sh", 'kill -TERM $$\n')
    result = asyncio.run(run_script(str(script), "status", timeout=5,
                                    log_path=tmp_path / "x.log"))
    assert result.outcome is Outcome.FAILED and result.returncode == -signal.SIGTERM
    assert "killed by SIGTERM" in result.reason


# --- pidfd watcher ------------------------------------------------------------------------------
def test_process_death_is_seen_within_milliseconds(tmp_path):
    proc = subprocess.Popen(["sleep", "60"])
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{proc.pid}\n")
    delays = []

    async def main():
        watch = ProcessWatch.from_pidfile(pidfile)
        called = asyncio.Event()
        watch.add_callback(lambda pid: called.set())
        assert watch.pid == proc.pid and not watch.dead
        await asyncio.sleep(0.05)
        assert not watch.dead
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(watch.wait(), 2)
        delays.append(watch.died_at - killed)
        await asyncio.wait_for(called.wait(), 1)
        watch.close()

    try:
        asyncio.run(main())
    finally:
        proc.kill()
        proc.wait()
    assert delays[0] < 0.02, f"death seen after {delays[0] * 1000:.1f} ms"


def test_watch_of_an_unreaped_or_grandchild_process(tmp_path):
    # a process that is not our child (the user's daemon): started through a shell that exits
    pidfile = tmp_path / "d.pid"
    subprocess.run(["sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}"], check=True)
    pid = read_pidfile(pidfile)

    async def main():
        with ProcessWatch(pid) as watch:
            os.kill(pid, signal.SIGTERM)
            await asyncio.wait_for(watch.wait(), 2)
            assert watch.dead

    asyncio.run(main())


def test_an_unusable_pidfile_is_refused_saying_why(tmp_path):
    bad = tmp_path / "bad.pid"
    bad.write_text("hello\n")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = tmp_path / "gone.pid"
    gone.write_text(done.stdout)

    async def main():  # a ProcessWatch watches on the running loop
        with pytest.raises(PidfileError, match="cannot read"):
            ProcessWatch.from_pidfile(tmp_path / "none.pid")
        with pytest.raises(PidfileError, match="does not start with a PID"):
            ProcessWatch.from_pidfile(bad)
        with pytest.raises(PidfileError, match="is not running"):
            ProcessWatch.from_pidfile(gone)

    asyncio.run(main())
