"""The seed's command names: each takes the seed manual's example arguments, and the installed
scripts run the skyge command they stand for."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from skyge.clients.cli.main import build_parser
from skyge.clients.cli.seed_commands import SEED_COMMANDS, seed_argv

#: the seed manual's examples (its "-1" is the lock's -l and mb_cli_get_service's list flag)
MANUAL = {
    "jl_config": [["-n", "1000", "-d", "1", "-e", "eth1", "-p", "2"], ["-c"], ["-s"], ["-r"]],
    "jl_get_hw_code": [[]],
    "mb_cli_create_service": [["-d", "1", "-n", "Mytestmb"]],
    "mb_cli_get_service": [["-d", "1", "-1"]],
    "mb_general_provider": [["-d", "1", "-n", "Mytestmb", "-m", "Hello"]],
    "mb_cli_delete_service": [["-d", "1", "-n", "Mytestmb"]],
    "yc_msg_spy": [["-d", "1", "-n", "Mytestmb"]],
    "test_d_lock": [["-s", "600", "-1", "100"]],
    "ha_status": [[]],
    "ha_query": [["-d", "1"]],
    "ha_svc_commander": [["-d", "1", "-s", "4", "-t", "stack", "-a", a]
                         for a in ("add", "start", "stop", "release", "remove")],
    "sk_user_heartbeat": [["-n", "mysql"]],
}


@pytest.mark.parametrize("name", sorted(SEED_COMMANDS))
def test_each_seed_command_takes_the_manuals_arguments(name):
    parser = build_parser()
    for example in MANUAL[name]:
        parser.parse_args(seed_argv(name, example))  # SystemExit(2) on any refusal


def test_installed_scripts_run_the_skyge_command(tmp_path):
    bin_dir, root = tmp_path / "bin", tmp_path / "node"
    done = subprocess.run([sys.executable, "-m", "skyge.clients.cli.main", "seed-commands",
                           "install", "--dir", str(bin_dir)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(SEED_COMMANDS)
    env = {**os.environ, "SKYGE_ROOT": str(root)}
    query = subprocess.run([str(bin_dir / "ha_query"), "-d", "1"], capture_output=True,
                           text=True, timeout=60, env=env)
    assert query.returncode == 1 and f"cannot reach skyge-ha at {root}" in query.stderr
    usage = subprocess.run([str(bin_dir / "ha_svc_commander"), "-d", "1", "-s", "4", "-t",
                            "lifo", "-a", "add"], capture_output=True, text=True, timeout=60,
                           env=env)
    assert usage.returncode == 2 and "-t/--type: invalid choice" in usage.stderr
