"""The shipped systemd units: systemd-analyze verifies them, the daemons other than HA are
hardened well below systemd's 9.6 "UNSAFE", and the HA unit never outwaits or kills services."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from skyge.services.ha.service_config import ServiceConfig

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
DAEMONS = ("heartbeat", "bus", "lock", "ha", "emon", "witness")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (deploy/install.sh does)")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The units as `deploy/install.sh --system` installs them, /opt/skyge being this checkout."""
    folder = tmp_path_factory.mktemp("units")
    for unit in UNITS.iterdir():
        (folder / unit.name).write_text(unit.read_text().replace("/opt/skyge", str(REPO)))
    return folder


def settings(unit: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def test_systemd_analyze_verifies_every_unit(installed):
    done = subprocess.run(["systemd-analyze", "verify",
                           *sorted(str(u) for u in installed.iterdir())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("daemon", [d for d in DAEMONS if d != "ha"])
def test_every_daemon_but_ha_is_hardened(installed, daemon):
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           str(installed / f"skyge-{daemon}.service")],
                          capture_output=True, text=True, timeout=120)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level is not None, done.stdout + done.stderr
    assert float(level.group(1)) <= 5.5


def test_units_wait_for_the_network_and_stop_without_touching_services():
    largest_stop = ServiceConfig.__dataclass_fields__["stop_timeout"].default  # the default
    for daemon in DAEMONS:
        unit = settings(UNITS / f"skyge-{daemon}.service")
        assert "network-online.target" in unit["Wants"] and unit["KillMode"] == "mixed"
        assert int(unit["TasksMax"]) > 0 and unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(settings(UNITS / "skyge-ha.service")["TimeoutStopSec"]) >= largest_stop
