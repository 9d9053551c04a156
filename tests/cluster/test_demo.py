"""The README's demo command, end to end: a 3-node cluster keeps a service reachable through the
crash of its active node, shows it, and leaves nothing behind."""
import json
import subprocess
import sys

from skyge.clients.lab import known_labs


def test_demo_fails_a_service_over_and_cleans_up(lab_support):
    result = subprocess.run([sys.executable, "-m", "skyge.clients.cli.main", "-o", "json", "demo"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for network in ("public_reachability", "private_reachability"):
        assert all(all(row.values()) for row in report[network].values()), report[network]
    assert report["daemons_serving"] is True
    # before: the service runs on one node (n1, unless the lock moved it while nodes joined),
    # the two others wait in fifo order; the client reaches the active node
    active, waiting = report["active_before"], report["waiting_before"]
    assert sorted([active, *waiting]) == [1, 2, 3]
    assert f"Service -- fifo: 0 is running on {active}" in report["status_before"]
    assert f"domain waiting for lock :[ {waiting[0]} ] [ {waiting[1]} ]" in report["status_before"]
    assert report["answer_before"].startswith(f"n{active} token ")
    # after the active node's crash: the client reaches the first waiter, with a newer token
    assert report["answer_after"].startswith(f"n{waiting[0]} token ")
    assert int(report["answer_after"].split()[-1]) > int(report["answer_before"].split()[-1])
    assert 0 < report["failover_ms"] < 15000
    assert (report["active_after"], report["waiting_after"]) == (waiting[0], waiting[1:])
    assert f"Service -- fifo: 0 is running on {waiting[0]}" in report["status_after"]
    assert f"domain waiting for lock :[ {waiting[1]} ]" in report["status_after"]
    assert "demo" not in known_labs()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "demo-" not in namespaces
