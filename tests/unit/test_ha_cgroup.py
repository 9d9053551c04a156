"""Services' own cgroups: finding the cgroup2 mount, naming, entering, killing."""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest

from skyge.services.ha.resources.cgroup import (Cgroups, cgroup2_mount,
                                                node_label)

HYBRID = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""
UNIFIED = "35 30 0:30 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate\n"


def test_the_cgroup2_mount_is_found_on_hybrid_and_unified_hosts():
    assert cgroup2_mount(HYBRID) == Path("/sys/fs/cgroup/unified")
    assert cgroup2_mount(UNIFIED) == Path("/sys/fs/cgroup")
    assert cgroup2_mount("27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n") is None


def test_each_node_and_service_has_its_own_cgroup_or_scope():
    assert node_label(Path("/")) == "node"
    assert node_label(Path("/run/skyge-lab/a/n1")) != node_label(Path("/run/skyge-lab/a/n2"))
    plain = Cgroups(Path("/sys/fs/cgroup"), "node", systemd=False).for_service("fifo", 3)
    assert plain.path == Path("/sys/fs/cgroup/skyge/node/fifo-3") and plain.unit is None
    scope = Cgroups(Path("/sys/fs/cgroup"), "node", systemd=True).for_service("fifo", 3)
    assert scope.unit == "skyge-svc-node-fifo-3.scope"
    assert scope.wrap(["/etc/init.d/db", "start"])[:2] == ["systemd-run", "--scope"]
    assert scope.wrap(["/etc/init.d/db", "start"])[-3:] == ["--", "/etc/init.d/db", "start"]


def test_a_started_process_and_its_children_stay_in_the_cgroup_and_die_with_it(tmp_path):
    found = Cgroups.find(tmp_path)
    if found is None:
        pytest.skip("no writable cgroup v2 hierarchy here")
    cgroup = found.for_service("fifo", 9)
    script = tmp_path / "svc.sh"
    script.write_text("#!/bin/sh\nsetsid sleep 300 & echo $! > \"$0.pid\"\n")  # a new session
    script.chmod(0o755)
    try:
        subprocess.run(cgroup.wrap([str(script)]), check=True, timeout=30)
        pid = int(Path(f"{script}.pid").read_text())
        assert pid in cgroup.pids()
        assert cgroup.kill() == 1
        deadline = time.monotonic() + 10
        while cgroup.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cgroup.pids() == []
    finally:
        cgroup.kill()
        time.sleep(0.1)
        cgroup.remove()
        for folder in (cgroup.path.parent, cgroup.path.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()
    assert not cgroup.path.exists()
