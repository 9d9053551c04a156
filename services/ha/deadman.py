"""The deadman: a service stops where its ownership ends, even when nobody says so.

A lock holder learns that its hold ended from its lock daemon (`Lost`), but a lock daemon that
is frozen, starved or dead says nothing, and an HA event loop that is stalled hears nothing:
meanwhile the authority passes the lock on once the node's lease ran out. So every grant and
renewal carries `valid_until_boot_ns`, and this thread, outside the asyncio loop and at
real-time priority when allowed, stops what a service runs (SIGKILL of its process groups, its
floating IPs removed) `margin` before that time unless a renewal moved it.

Before it acts it reads the lock daemon's lease file (`NodePaths.lease_file`): a renewal the
stalled HA loop has not taken yet is there, so a pause of the HA daemon alone (its lock daemon
renewing all along) kills nothing.

A thread stops with its process: when the HA daemon is frozen (SIGSTOP, a cgroup freezer) or
killed, its services keep running. So the HA daemon also keeps a *registry* of what each
service it holds runs (`NodePaths.deadman_file`: process groups, floating IPs) for the backstop,
`python -m skyge.services.ha.deadman`, a small process of its own that the HA daemon starts and
that outlives it: the same deadline logic, driven by the lease file alone, acting `margin` later
than the thread, so it has work only when the HA daemon cannot. A node frozen as a whole stops
both: only a fence command (the lock daemon's `fence_command`) covers that case.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable

from skyge.services.common.atomic import write_atomic
from skyge.services.common.clock import boot_ns
from skyge.services.common.paths import NodePaths
from skyge.services.ha.resources import fip as fip_mod
from skyge.services.ha.resources.cgroup import ServiceCgroup
from skyge.services.ha.resources.script import kill_group
from skyge.services.ha.service_config import FloatingIp

__all__ = ["Deadman", "Owner", "Registry", "main", "spawn_backstop"]

logger = logging.getLogger("skyge.ha.deadman")

#: act this long before the deadline: time to kill and remove addresses (a few ms) before the
#: lock daemon's own early warning and the authority's takeover guard run out
DEFAULT_MARGIN_NS = 20_000_000
#: the backstop acts this long before the deadline: after the HA daemon's own thread would have
BACKSTOP_MARGIN_NS = 10_000_000
#: how often the backstop reads the registry and the lease file (the lease is hundreds of ms)
BACKSTOP_POLL_S = 0.05


class Owner(Protocol):
    """What the deadman guards: a service that holds its lock here."""

    @property
    def name(self) -> str: ...

    def stop_now(self) -> list[str]:
        """Kill what the service runs and remove its floating IPs, from any thread; returns
        what it did, for the log."""

    def expired(self, detail: str) -> None:
        """Tell the owner (thread-safe) that its ownership ended."""


class Deadman(threading.Thread):
    """One thread per HA daemon guarding every armed owner's deadline."""

    def __init__(self, lease_file: Path, *, margin_ns: int = DEFAULT_MARGIN_NS,
                 realtime_priority: int = 0, clock: Callable[[], int] = boot_ns) -> None:
        super().__init__(name="ha-deadman", daemon=True)
        self.lease_file = lease_file
        self.margin_ns = margin_ns
        self.realtime_priority = realtime_priority
        self.clock = clock
        self._deadlines: dict[Owner, int] = {}
        self._wake = threading.Condition()
        self._stopping = False

    # -- from the loop --------------------------------------------------------------------------
    def arm(self, owner: Owner, valid_until_ns: int) -> None:
        """`owner` holds its lock until `valid_until_ns` (CLOCK_BOOTTIME); a later call moves
        it (never earlier: renewals only grow)."""
        with self._wake:
            if valid_until_ns > self._deadlines.get(owner, 0):
                self._deadlines[owner] = valid_until_ns
                self._wake.notify()

    def disarm(self, owner: Owner) -> None:
        """`owner` no longer runs anything that needs guarding (stopped, released)."""
        with self._wake:
            self._deadlines.pop(owner, None)

    def lower_all(self, until_ns: int) -> None:
        """The lease was withdrawn (the lock daemon's word went down: a new daemon instance
        holds nothing): no owner is safe past `until_ns`."""
        with self._wake:
            for owner, until in self._deadlines.items():
                self._deadlines[owner] = min(until, until_ns)
            self._wake.notify()

    def deadline(self, owner: Owner) -> int:
        """The armed deadline (0 when not armed)."""
        with self._wake:
            return self._deadlines.get(owner, 0)

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self.is_alive():
            self.join(timeout=2.0)

    # -- the thread -----------------------------------------------------------------------------
    def lease_on_file(self) -> int:
        """The lock daemon's latest word on this node's lease (0 when unknown)."""
        try:
            return int(self.lease_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def run(self) -> None:
        if self.realtime_priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
            except (OSError, AttributeError) as error:
                logger.warning("deadman runs without real-time priority (%s)", error)
        while True:
            with self._wake:
                if self._stopping:
                    return
                now = self.clock()
                due = [o for o, until in self._deadlines.items() if now >= until - self.margin_ns]
                if not due:
                    soonest = min(self._deadlines.values(), default=0)
                    self._wake.wait((soonest - self.margin_ns - now) / 1e9 if soonest else None)
                    continue
                on_file = self.lease_on_file()
                fire = []
                for owner in due:
                    if on_file - self.margin_ns > now:  # renewed; the loop has not heard yet
                        self._deadlines[owner] = on_file
                    else:
                        del self._deadlines[owner]
                        fire.append(owner)
            for owner in fire:  # outside the lock: arm() from the loop never waits for a kill
                self._fire(owner)

    def _fire(self, owner: Owner) -> None:
        try:
            done = owner.stop_now()
        except Exception:
            logger.exception("deadman: stopping %s failed", owner.name)
            done = ["(stop failed, see above)"]
        detail = "ownership deadline passed with no renewal from the lock daemon"
        logger.error("service %s: %s: stopped at once (%s)", owner.name, detail,
                     ", ".join(done) or "nothing ran")
        owner.expired(detail)


# -- the backstop process ----------------------------------------------------------------------
class Registry:
    """The HA daemon's side of the backstop: what each service it holds runs, written as JSON
    to `NodePaths.deadman_file` on every change (tmpfs: no fsync)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self._write()

    def put(self, key: str, name: str, groups: list[int], fips: list[dict[str, Any]],
            cgroup: str = "") -> None:
        entry = {"name": name, "groups": sorted(set(groups)), "fips": fips, "cgroup": cgroup}
        if self.entries.get(key) != entry:
            self.entries[key] = entry
            self._write()

    def remove(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self._write()

    def _write(self) -> None:
        try:
            write_atomic(self.path, json.dumps(self.entries, sort_keys=True), durable=False)
        except OSError as error:
            logger.error("deadman registry %s not written: %s", self.path, error)


class RegisteredService:
    """A service as the backstop knows it from the registry."""

    def __init__(self, key: str, entry: dict[str, Any]) -> None:
        self.key, self.entry = key, entry
        self.fired = False  # stopped once; armed again only when the HA daemon registers anew
        self.name = str(entry.get("name", key))
        self.groups = [int(g) for g in entry.get("groups", ())]
        self.fips = list(entry.get("fips", ()))
        self.cgroup = ServiceCgroup(Path(entry["cgroup"])) if entry.get("cgroup") else None

    def stop_now(self) -> list[str]:
        done = []
        if self.cgroup is not None and (killed := self.cgroup.kill()):
            done.append(f"killed {killed} processes of cgroup {self.cgroup.path}")
        done += [f"killed process group {g}" for g in self.groups if kill_group(g)]
        for fields in self.fips:
            fip = FloatingIp(**fields)
            try:
                if fip_mod.remove_sync(fip):
                    done.append(f"removed {fip.ip}")
            except (fip_mod.FipError, OSError) as error:
                done.append(f"{fip.ip} not removed: {error}")
        return done

    def expired(self, detail: str) -> None:
        """Nobody to tell: the HA daemon learns it from its lock session when it runs again."""
        self.fired = True


def _read_registry(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_backstop(paths: NodePaths, *, stop: threading.Event) -> None:
    """The backstop's loop: every registered service is armed at the lease on file; a lease
    that goes down (withdrawn) brings every deadline down with it."""
    deadman = Deadman(paths.lease_file, margin_ns=BACKSTOP_MARGIN_NS,
                      realtime_priority=BACKSTOP_PRIORITY)
    deadman.start()
    owners: dict[str, RegisteredService] = {}
    seen_mtime = -1
    last_lease = 0
    try:
        while not stop.is_set():
            try:
                mtime = paths.deadman_file.stat().st_mtime_ns
            except OSError:
                mtime = 0
            if mtime != seen_mtime:
                seen_mtime = mtime
                registry = _read_registry(paths.deadman_file)
                for key in list(owners):
                    if key not in registry:
                        deadman.disarm(owners.pop(key))
                for key, entry in registry.items():
                    old = owners.get(key)
                    if old is None or old.entry != entry:
                        owners[key] = RegisteredService(key, entry)
                        if old is not None:
                            deadman.disarm(old)
            lease = deadman.lease_on_file()
            if lease < last_lease:
                deadman.lower_all(lease)
            last_lease = lease
            for owner in owners.values():
                if not owner.fired:
                    deadman.arm(owner, max(lease, 1))  # no lease on file (0): due at once
            stop.wait(BACKSTOP_POLL_S)
    finally:
        deadman.close()


#: SCHED_FIFO priority of the backstop (as the HA daemon's own deadman thread)
BACKSTOP_PRIORITY = 15


def spawn_backstop(paths: NodePaths, log_path: Path) -> subprocess.Popen[bytes] | None:
    """Start the backstop for this node unless one runs (its pid file is locked); it outlives
    the caller (own session)."""
    lock = paths.run / "ha" / "deadman.pid"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(lock, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return None  # one runs (a previous HA daemon started it)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "skyge.services.ha.deadman", "--root",
                                 str(paths.root)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="skyge-ha-deadman",
        description="Backstop of the HA daemon: stops services whose lock lease ran out while "
                    "the HA daemon could not (frozen, killed). Started by skyge-ha.")
    parser.add_argument("--root", default="/", help="node root (default /)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s skyge-ha-deadman[%(process)d] "
                                                   "%(levelname)s: %(message)s")
    paths = NodePaths.at(args.root)
    lock = paths.run / "ha" / "deadman.pid"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:  # its lock is held as long as it is open: to the end
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another backstop guards this node
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        logger.info("guarding the services of %s (lease file %s)", paths.root, paths.lease_file)
        run_backstop(paths, stop=stop)
        logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
