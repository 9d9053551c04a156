"""The `skyge` command against real daemons: exit statuses, one-line errors, JSON output."""
import json
import subprocess
import sys

import pytest

from skyge.services.common.paths import NodePaths
from tests.daemons.test_runner import DAEMON, wait_serving

SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]


def skyge(*args, root):
    return subprocess.run([*SKYGE, "--root", str(root), *args], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def emon_root(tmp_path):
    root = tmp_path / "node"
    proc = subprocess.Popen([*DAEMON, "-r", str(root), "--listen", "none"],
                            stderr=subprocess.DEVNULL)
    try:
        wait_serving(NodePaths.at(root).socket("emon"))
        yield root
    finally:
        proc.kill()
        proc.wait(5)


def test_status_names_the_daemons_that_are_down(emon_root):
    result = skyge("-o", "json", "status", root=emon_root)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["daemons"]["emon"] == "SERVING"
    assert data["daemons"]["lock"] == "DOWN"
    assert json.loads(result.stderr) == {"error": "not serving: heartbeat, bus, lock, ha",
                                         "exit_status": 1}
    assert skyge("status", root=emon_root).stderr.strip() == \
        "skyge: not serving: heartbeat, bus, lock, ha"


def test_output_may_come_after_the_command(emon_root):
    result = skyge("status", "-o", "json", root=emon_root)
    assert json.loads(result.stdout)["daemons"]["emon"] == "SERVING"
    overridden = skyge("-o", "json", "status", "--output", "text", root=emon_root)
    assert overridden.stdout.splitlines()[0].split() == ["skyge-heartbeat", "DOWN"]


def test_unbuilt_rpc_says_so_and_exits_1(emon_root):
    result = skyge("emon", "show", root=emon_root)
    assert result.returncode == 1
    assert result.stderr.strip() == "skyge: skyge-emon does not implement GetCurrent yet"


def test_daemon_not_running_exits_1_with_socket_path(tmp_path):
    result = skyge("bus", "list", "-d", "1", root=tmp_path)
    assert result.returncode == 1
    assert f"cannot reach skyge-bus at {tmp_path}/run/skyge/bus.sock" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,fragment", [
    (["bus", "create", "-d", "70", "-n", "x"], "-d/--domain: must be from 1 to 64, got 70"),
    (["ha", "svc", "-d", "1", "-s", "1024", "-t", "fifo", "-a", "add"],
     "-s/--slot: must be from 0 to 1023"),
    (["ha", "svc", "-d", "1", "-s", "1", "-t", "lifo", "-a", "add"], "-t/--type: invalid choice"),
    (["lock", "inspect", "-s", "1", "-l", "x"], "-l/--lock: must be an integer from 0 to 8191"),
    (["nosuch"], "invalid choice"),
    (["--timeout", "0", "status"], "--timeout: must be seconds"),
])
def test_bad_usage_exits_2_naming_the_argument(tmp_path, args, fragment):
    result = skyge(*args, root=tmp_path)
    assert result.returncode == 2
    assert fragment in result.stderr


def test_every_group_has_help(tmp_path):
    for group in ("status", "heartbeat", "hw-code", "bus", "lock", "ha", "emon", "lab"):
        result = skyge(group, "--help", root=tmp_path)
        assert result.returncode == 0 and "usage:" in result.stdout
