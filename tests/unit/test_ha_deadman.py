"""The HA deadman thread: it stops a service at its ownership deadline unless renewed, and
trusts the lock daemon's lease file over a renewal the (stalled) loop has not taken yet."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from skyge.services.common.clock import boot_ns
from skyge.services.ha.deadman import Deadman

MS = 1_000_000


class Service:
    def __init__(self) -> None:
        self.name = "web (fifo/0)"
        self.stopped_at = 0
        self.fired = threading.Event()

    def stop_now(self) -> list[str]:
        self.stopped_at = boot_ns()
        return ["killed process group 42"]

    def expired(self, detail: str) -> None:
        self.detail = detail
        self.fired.set()


@pytest.fixture
def deadman(tmp_path: Path):
    guard = Deadman(tmp_path / "lock.lease", margin_ns=10 * MS)
    guard.start()
    yield guard
    guard.close()


def test_a_service_whose_hold_is_not_renewed_is_stopped_before_its_deadline(deadman):
    service = Service()
    until = boot_ns() + 100 * MS
    deadman.arm(service, until)
    assert service.fired.wait(5.0)
    assert service.stopped_at < until  # margin_ns before, unless this host stalled the thread
    assert "no renewal" in service.detail
    assert deadman.deadline(service) == 0


def test_a_renewal_on_the_lease_file_keeps_the_service(deadman, tmp_path: Path):
    """The HA loop stalled (no Renewed taken) while the lock daemon renewed: nothing is killed;
    the deadman moves to the file's deadline and fires there if no later word comes."""
    service = Service()
    now = boot_ns()
    (tmp_path / "lock.lease").write_text(str(now + 600 * MS))
    deadman.arm(service, now + 50 * MS)
    assert not service.fired.wait(0.3)
    assert deadman.deadline(service) == now + 600 * MS
    assert service.fired.wait(5.0)
    assert service.stopped_at >= now + 590 * MS


def test_a_disarmed_service_is_left_alone_and_deadlines_only_grow(deadman):
    service = Service()
    now = boot_ns()
    deadman.arm(service, now + 400 * MS)
    deadman.arm(service, now + 100 * MS)  # an older renewal arriving late changes nothing
    assert deadman.deadline(service) == now + 400 * MS
    deadman.disarm(service)
    assert not service.fired.wait(0.6)


def test_the_backstop_stops_a_registered_service_when_the_lease_on_file_runs_out(tmp_path):
    """The backstop process's loop (run here in a thread): a registered service whose lease on
    file runs out has its process group killed; one whose lease is renewed on file is left."""
    import os
    import signal
    import subprocess

    from skyge.services.common.atomic import write_atomic
    from skyge.services.common.paths import NodePaths
    from skyge.services.ha.deadman import Registry, run_backstop

    paths = NodePaths.at(tmp_path)
    paths.lease_file.parent.mkdir(parents=True)
    write_atomic(paths.lease_file, str(boot_ns() + 400 * MS), durable=False)
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    stop = threading.Event()
    guard = threading.Thread(target=run_backstop, args=(paths,), kwargs={"stop": stop})
    try:
        Registry(paths.deadman_file).put("fifo/0", "web (fifo/0)", [victim.pid], [])
        guard.start()
        renewed_until = time.monotonic() + 0.6  # renewed on file past the first lease...
        while time.monotonic() < renewed_until:
            # as the lock daemon writes it: renamed into place, never seen half-written
            write_atomic(paths.lease_file, str(boot_ns() + 400 * MS), durable=False)
            time.sleep(0.05)
        assert victim.poll() is None
        victim.wait(timeout=5)  # ...then no more: killed at the last lease on file
        assert victim.returncode == -signal.SIGKILL
    finally:
        stop.set()
        guard.join(timeout=5)
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
