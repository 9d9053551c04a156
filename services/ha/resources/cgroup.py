"""A cgroup (v2) per service, outside the HA daemon's own, so that the service outlives its daemon.

`script start` runs inside the service's cgroup, and so does everything it leaves running
(a daemon that double-forks into a new session included). Restarting or killing skyge-ha, even
with its whole control group (systemd's default KillMode), never touches the service; stopping
the service kills whatever is left in its cgroup after `script stop`, and the deadman kills the
whole cgroup at once (`cgroup.kill`).

- systemd as PID 1: the cgroup is a transient scope, ``skyge-svc-<node>-<type>-<slot>.scope`` in
  ``skyge.slice``, made by ``systemd-run --scope`` around `script start` (systemd owns the tree,
  so skyge does not write into it except to read and kill).
- otherwise: ``<cgroup2 mount>/skyge/<node>/<type>-<slot>``, made by the HA daemon; the script
  moves itself there (``echo $$ > cgroup.procs``) before it execs.

Without a writable cgroup2 hierarchy (an old kernel, a container without one) services run as
before, in the daemon's cgroup, tracked by process group; the daemon says so once at start.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from pathlib import Path
from collections.abc import Sequence

logger = logging.getLogger("skyge.ha.cgroup")

#: moves the shell into the cgroup whose cgroup.procs is $0, then runs the script ("$@")
ENTER = 'echo $$ > "$0" && exec "$@"'


def cgroup2_mount(mountinfo: str | None = None) -> Path | None:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
    hybrid systems), None when it is not."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    for line in mountinfo.splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return Path(fields[0].split()[4])
    return None


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def node_label(root: Path) -> str:
    """A short name for a node root: "node" for /, else a digest (lab nodes share one host)."""
    if root == Path("/"):
        return "node"
    return "root-" + hashlib.sha1(str(root).encode()).hexdigest()[:12]


class ServiceCgroup:
    """One service's cgroup: entering it, what runs in it, killing it."""

    def __init__(self, path: Path, unit: str | None = None) -> None:
        self.path = path
        self.unit = unit  # the systemd scope, when systemd manages the tree

    def __repr__(self) -> str:
        return f"<ServiceCgroup {self.unit or self.path}>"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv`, run inside this cgroup (the cgroup is made first where skyge makes it)."""
        if self.unit is not None:
            return ["systemd-run", "--scope", "--quiet", "--collect", "--slice=skyge.slice",
                    f"--unit={self.unit}", "--", *argv]
        self.path.mkdir(parents=True, exist_ok=True)
        return ["/bin/sh", "-c", ENTER, str(self.path / "cgroup.procs"), *argv]

    def pids(self) -> list[int]:
        """The processes in the cgroup now (empty when it does not exist)."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(word) for word in text.split()]

    def kill(self) -> int:
        """SIGKILL everything in the cgroup; how many processes were there. One write to
        cgroup.kill where the kernel has it (5.14+), which also catches processes forking
        meanwhile; else each process."""
        pids = self.pids()
        if not pids:
            return 0
        try:
            (self.path / "cgroup.kill").write_text("1")
            return len(pids)
        except OSError:
            pass
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def remove(self) -> None:
        """Remove the (empty) cgroup skyge made; leave one that still holds processes."""
        if self.unit is None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


class Cgroups:
    """Where a node's services' cgroups are; None from `find` when the host offers none."""

    def __init__(self, mount: Path, node: str, systemd: bool) -> None:
        self.mount, self.node, self.systemd = mount, node, systemd

    @classmethod
    def find(cls, root: Path) -> Cgroups | None:
        mount = cgroup2_mount()
        if mount is None or not os.access(mount, os.W_OK):
            return None
        return cls(mount, node_label(root), systemd_is_init())

    def for_service(self, service_type: str, slot: int) -> ServiceCgroup:
        if self.systemd:
            unit = f"skyge-svc-{self.node}-{service_type}-{slot}.scope"
            return ServiceCgroup(self.mount / "skyge.slice" / unit, unit)
        return ServiceCgroup(self.mount / "skyge" / self.node / f"{service_type}-{slot}")
