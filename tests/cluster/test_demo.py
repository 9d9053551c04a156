"""The README's demo command, end to end: it must show a working cluster and leave nothing behind."""
import json
import subprocess
import sys

from skyge.clients.lab import known_labs


def test_demo_shows_connectivity_and_cleans_up(lab_support):
    result = subprocess.run([sys.executable, "-m", "skyge.clients.cli.main", "-o", "json", "demo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for network in ("public_reachability", "private_reachability"):
        assert all(all(row.values()) for row in report[network].values()), report[network]
    assert all(report["reference_ip_reachable"].values())
    assert report["daemons_serving"] is True
    assert report["after_cutting_n1_eth1"] == {"eth0": True, "eth1": False}
    assert "demo" not in known_labs()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "demo-" not in namespaces
