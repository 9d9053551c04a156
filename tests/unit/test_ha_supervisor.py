"""The supervisor (services/ha/supervisor.py) driven by the policy, against a small in-process
fake of the lock Session contract (one authority, fifo/stack/random waiters, fencing tokens) and
fake floating IP / mount operations, with real user scripts. This checks the supervisor's wiring
(order of work, fencing token in the script, handover between "nodes" of one process); the real
cluster behaviour is tested on the lab (tests/cluster/test_ha.py)."""
from __future__ import annotations

import asyncio
import random
import stat
from pathlib import Path

import pytest

from skyge.services.common.clock import boot_ns
from skyge.services.ha import policy as P
from skyge.services.ha.deadman import Deadman
from skyge.services.ha.service_config import parse_service
from skyge.services.ha.supervisor import ServiceSupervisor, lock_of, parse_label, session_label


class FakeAuthority:
    """Locks as lock.proto describes them: one holder, waiters served in the slot's order."""

    def __init__(self) -> None:
        self.holder: dict[tuple[int, int], FakeSession] = {}
        self.waiters: dict[tuple[int, int], list[FakeSession]] = {}
        self.token = 0

    def _order(self, slot: int) -> str:
        return "random" if slot < 512 else "fifo" if slot < 1024 else "stack"

    def acquire(self, session: FakeSession) -> None:
        key = (session.slot, session.lock)
        if key not in self.holder:
            self._grant(session)
        else:
            queue = self.waiters.setdefault(key, [])
            queue.append(session)
            session.emit(P.Queued(len(queue) if self._order(session.slot) == "fifo" else 0))

    def _grant(self, session: FakeSession) -> None:
        self.token += 1
        self.holder[(session.slot, session.lock)] = session
        session.emit(P.Granted(self.token))

    def release(self, session: FakeSession) -> None:
        key = (session.slot, session.lock)
        queue = self.waiters.get(key, [])
        if session in queue:
            queue.remove(session)
        if self.holder.get(key) is session:
            del self.holder[key]
            self._next(key)
        session.emit(P.Released())

    def _next(self, key: tuple[int, int]) -> None:
        queue = self.waiters.get(key, [])
        if not queue:
            return
        order = self._order(key[0])
        index = 0 if order == "fifo" else -1 if order == "stack" else random.randrange(len(queue))
        self._grant(queue.pop(index))

    def kill(self, session: FakeSession) -> None:
        """The session's node left: its hold is lost, the next waiter is served."""
        key = (session.slot, session.lock)
        if self.holder.get(key) is session:
            del self.holder[key]
            session.emit(P.Lost("node_left"))
            self._next(key)

    def waiting(self, slot: int, lock: int) -> list[int]:
        return [s.domain for s in self.waiters.get((slot, lock), [])]


class FakeSession:
    def __init__(self, authority: FakeAuthority, supervisor: ServiceSupervisor) -> None:
        self.authority, self.supervisor = authority, supervisor
        self.slot, self.lock = lock_of(supervisor.config)
        self.domain = supervisor.domain
        self.label = session_label(supervisor.config)

    def emit(self, event: P.Event) -> None:
        asyncio.get_running_loop().call_soon(self.supervisor.post, event)

    async def acquire(self) -> None:
        self.authority.acquire(self)

    async def release(self) -> None:
        self.authority.release(self)

    async def close(self) -> None:
        self.authority.release(self)


class FakeResources:
    """Floating IPs and mounts per node, as sets; every operation journaled."""

    def __init__(self, journal: list[str], domain: int) -> None:
        self.journal, self.domain = journal, domain
        self.fips: set[str] = set()
        self.mounts: set[str] = set()
        self.peers: list[FakeResources] = []  # the other nodes, on the same LAN

    async def mount(self, store):
        self.journal.append(f"{self.domain} mount {store.mountpoint}")
        self.mounts.add(store.mountpoint)

    async def unmount(self, store, mode):
        self.journal.append(f"{self.domain} unmount {store.mountpoint}")
        self.mounts.discard(store.mountpoint)

    async def mounted(self, store):
        return store.mountpoint in self.mounts

    async def add_fip(self, fip):
        self.journal.append(f"{self.domain} fip+ {fip.ip}")
        self.fips.add(fip.ip)

    async def remove_fip(self, fip):
        self.journal.append(f"{self.domain} fip- {fip.ip}")
        self.fips.discard(fip.ip)

    def remove_fip_now(self, fip):
        """The deadman's removal, from its thread."""
        self.journal.append(f"{self.domain} deadman fip- {fip.ip}")
        self.fips.discard(fip.ip)

    async def fip_present(self, fip):
        return fip.ip in self.fips

    async def announce(self, fip):
        self.journal.append(f"{self.domain} garp {fip.ip}")

    async def answered_by(self, fip):
        """Another fake node that holds the address answers the probe."""
        return next((f"node {r.domain}" for r in self.peers if fip.ip in r.fips), None)


SCRIPT = """#!/bin/sh
# a service whose "process" is a file; $STATE_DIR is shared by the fake nodes
f="$STATE_DIR/running-$SKYGE_DOMAIN"
case "$1" in
  start) [ -e "$STATE_DIR/fail-start" ] && exit 1
         echo "$SKYGE_FENCING_TOKEN" > "$f"
         echo "$SKYGE_DOMAIN start $SKYGE_FENCING_TOKEN" >> "$STATE_DIR/journal"; exit 0 ;;
  stop)  [ -e "$STATE_DIR/fail-stop" ] && exit 1
         rm -f "$f"; echo "$SKYGE_DOMAIN stop" >> "$STATE_DIR/journal"; exit 0 ;;
  status) [ -e "$f" ] && [ ! -e "$STATE_DIR/fail-status-$SKYGE_DOMAIN" ] && exit 0; exit 1 ;;
esac
exit 3
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    script = tmp_path / "svc.sh"
    script.write_text(SCRIPT)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    return tmp_path, script


def make(tmp_path: Path, script: Path, type: str = "fifo", slot: int = 0, **options: str) -> str:
    settings = {"check_interval": "1", "start_timeout": "5", "stop_timeout": "5", **options}
    lines = ['name = "demo";', f'script = "{script}";',
             'fip = "eth0-192.168.1.100-255.255.255.0-192.168.1.255:";',
             'store = "-/dev/loop9-/mnt/shared-755-root-root:";']
    lines += [f"{k} = {v};" for k, v in settings.items()]
    return "\n".join(lines)


class Cluster:
    def __init__(self, tmp_path: Path, script: Path, domains=(1, 2, 3), type="fifo",
                 deadman: Deadman | None = None, **options):
        self.authority = FakeAuthority()
        self.journal: list[str] = []
        self.tmp = tmp_path
        config = parse_service(make(tmp_path, script, **options), type, 0)
        self.res = {d: FakeResources(self.journal, d) for d in domains}
        for res in self.res.values():
            res.peers = [other for other in self.res.values() if other is not res]
        self.sup = {d: ServiceSupervisor(config, domain=d,
                                         session_factory=lambda s: FakeSession(self.authority, s),
                                         resources=self.res[d], log_dir=tmp_path / f"log{d}",
                                         deadman=deadman)
                    for d in domains}
        for s in self.sup.values():
            s.start()

    def script_journal(self) -> list[str]:
        path = self.tmp / "journal"
        return path.read_text().splitlines() if path.exists() else []

    async def until(self, predicate, timeout=20.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.01)

    def states(self) -> dict[int, str]:
        return {d: s.state.state_name for d, s in self.sup.items()}

    async def close(self):
        for s in self.sup.values():
            await s.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_start_order_token_in_script_and_fifo_takeover_on_check_failure(world):
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, check_failures=2)
        for d in (1, 2, 3):
            refused, message = await c.sup[d].command("start")
            assert refused is None, message
        assert c.states() == {1: "running", 2: "waiting", 3: "waiting"}
        assert c.journal[:3] == ["1 mount /mnt/shared", "1 fip+ 192.168.1.100",
                                 "1 garp 192.168.1.100"] \
            or c.journal[:2] == ["1 mount /mnt/shared", "1 fip+ 192.168.1.100"]
        assert c.script_journal() == ["1 start 1"]  # the fencing token reached the script
        assert (tmp / "running-1").read_text().strip() == "1"
        assert c.authority.waiting(512, 0) == [2, 3]

        # the service dies on 1: two failed checks (1 s apart), then 2 (first waiter) takes over
        (tmp / "running-1").unlink()
        await c.until(lambda: c.sup[2].state.phase is P.Phase.RUNNING)
        assert c.sup[1].state.fail_count == 1 and c.states()[1] == "waiting"
        # 1 backs off (failure_backoff, 1 s by default), then queues again at the back
        assert c.authority.waiting(512, 0) == [3] and c.sup[1].state.backing_off
        await c.until(lambda: c.authority.waiting(512, 0) == [3, 1], timeout=3.0)
        assert c.script_journal()[-2:] == ["1 stop", "2 start 2"]
        # stop on 1 undid everything in reverse order before 2 started
        tail = c.journal[c.journal.index("1 fip- 192.168.1.100") - 0:]
        assert tail[:2] == ["1 fip- 192.168.1.100", "1 unmount /mnt/shared"]
        assert c.res[1].fips == set() and c.res[2].fips == {"192.168.1.100"}
        await c.close()

    run(main())


def test_stack_order_and_lost_lock_stops_urgently(world):
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, type="stack")
        for d in (1, 2, 3):
            await c.sup[d].command("start")
        assert c.states() == {1: "running", 2: "waiting", 3: "waiting"}
        session1 = c.sup[1].session
        mark = len(c.journal)
        c.authority.kill(session1)  # node 1 "left": 3 (the last waiter) takes over
        await c.until(lambda: c.sup[3].state.phase is P.Phase.RUNNING)
        await c.until(lambda: c.sup[1].state.phase is P.Phase.WAITING)
        ones = [line for line in c.journal[mark:] if line.startswith("1 ")]
        assert ones[0] == "1 fip- 192.168.1.100"  # urgent: floating IP first
        assert c.sup[1].state.cause == "lock lost (node left)"
        await c.close()

    run(main())


def test_stop_keeps_the_lock_release_hands_over_remove_is_refused_while_running(world):
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, domains=(1, 2))
        await c.sup[1].command("start")
        await c.sup[2].command("start")
        refused, _ = await c.sup[1].command("remove")
        assert refused and "stop or release it first" in refused
        refused, _ = await c.sup[1].command("stop")
        assert refused is None
        assert c.states() == {1: "stopped", 2: "waiting"} and c.sup[1].state.holding
        await asyncio.sleep(0.3)
        assert c.states()[2] == "waiting"  # nobody takes over a stopped service
        refused, _ = await c.sup[1].command("release")
        assert refused is None and c.states()[1] == "released"
        await c.until(lambda: c.states()[2] == "running")
        refused, _ = await c.sup[1].command("remove")
        assert refused is None and c.sup[1].forgotten
        await c.close()

    run(main())


def test_failed_start_is_cleaned_up_and_handed_over(world):
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, domains=(1, 2))
        (tmp / "fail-start").touch()
        await c.sup[2].command("start")  # 2 will fail to start, then 1 (waiting) takes over
        assert c.states()[2] == "failed" and not c.sup[2].state.holding
        assert "start failed" in c.sup[2].state.reason
        assert c.res[2].fips == set() and c.res[2].mounts == set()  # cleaned up
        (tmp / "fail-start").unlink()
        await c.sup[1].command("start")
        assert c.states() == {1: "running", 2: "failed"}
        await c.close()

    run(main())


def test_failed_stop_keeps_the_lock_so_nobody_takes_over(world):
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, domains=(1, 2))
        await c.sup[1].command("start")
        await c.sup[2].command("start")
        (tmp / "fail-stop").touch()
        refused, _ = await c.sup[1].command("release")
        assert refused is None
        assert c.states() == {1: "failed", 2: "waiting"} and c.sup[1].state.holding
        (tmp / "fail-stop").unlink()
        await c.sup[1].command("release")  # retries the stop, then hands over
        await c.until(lambda: c.states() == {1: "released", 2: "running"})
        await c.close()

    run(main())


def test_switch_hands_over_and_queues_again(world):
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, domains=(1, 2))
        await c.sup[1].command("start")
        await c.sup[2].command("start")
        await c.sup[1].command("switch")
        await c.until(lambda: c.states() == {1: "waiting", 2: "running"})
        assert c.authority.waiting(512, 0) == [1]
        await c.close()

    run(main())


def test_session_labels_round_trip():
    config = parse_service('name = "web"; script = "/bin/true";', "stack", 17)
    assert session_label(config) == "ha:stack/17:web"
    assert parse_label("ha:stack/17:web") == ("stack", 17)
    assert parse_label("test_d_lock") is None and parse_label("ha:nope/1:x") is None
    assert lock_of(config) == (1024, 17)
    assert lock_of(parse_service('name = "a"; script = "/bin/true";', "random", 3)) == (0, 3)
    assert lock_of(parse_service('name = "a"; script = "/bin/true";', "fifo", 1023)) == (512, 1023)


def test_a_floating_ip_another_host_still_answers_for_is_added_only_once_it_is_free(world):
    """Duplicate address detection: node 1 still holds the floating IP although it no longer
    holds the lock (its kernel answers: frozen, or the other half of a cut two-node cluster).
    Node 2, granted the lock, waits in STARTING without adding it; once node 1 dropped it, node
    2 adds it and starts."""
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, domains=(1, 2))
        c.res[1].fips.add("192.168.1.100")
        await c.sup[2].command("start", timeout=0.1)
        await c.until(lambda: c.sup[2].state.phase is P.Phase.STARTING)
        await asyncio.sleep(0.5)
        assert c.sup[2].state.phase is P.Phase.STARTING
        assert "2 fip+ 192.168.1.100" not in c.journal and c.script_journal() == []
        c.res[1].fips.discard("192.168.1.100")
        await c.until(lambda: c.sup[2].state.phase is P.Phase.RUNNING)
        assert c.res[2].fips == {"192.168.1.100"}
        await c.close()

    run(main())


def test_the_deadman_stops_a_service_once_per_deadline(world):
    """No renewal after the deadline: the deadman stops the service once; the urgent stop and the
    state changes that follow do not arm it again with the deadline that already passed."""
    tmp, script = world

    async def main():
        guard = Deadman(tmp / "lock.lease", margin_ns=10 * 1_000_000)
        guard.start()
        c = Cluster(tmp, script, domains=(1,), deadman=guard)
        try:
            await c.sup[1].command("start")
            assert c.states() == {1: "running"}
            c.sup[1].valid_until(boot_ns() + 100 * 1_000_000)
            await c.until(lambda: "1 deadman fip- 192.168.1.100" in c.journal)
            await c.until(lambda: c.sup[1].state.phase is P.Phase.RUNNING)  # queued again, granted
            assert c.journal.count("1 deadman fip- 192.168.1.100") == 1, c.journal
            assert c.sup[1].state.cause.startswith("ownership deadline passed")
        finally:
            await c.close()
            guard.close()

    run(main())


def test_a_floating_ip_held_past_start_timeout_gives_the_lock_back_and_queues_again(world):
    """Node 1 still holds the floating IP past start_timeout (frozen for longer): node 2 gives
    the lock back and queues again instead of ending FAILED, so it is still a waiter when the
    address is free."""
    tmp, script = world

    async def main():
        c = Cluster(tmp, script, domains=(1, 2), start_timeout="1", failure_backoff="0")
        c.res[1].fips.add("192.168.1.100")
        await c.sup[2].command("start", timeout=0.1)
        await c.until(lambda: c.sup[2].state.phase is P.Phase.STARTING)
        await c.until(lambda: c.sup[2].state.cause == "floating IP held by another host")
        assert c.sup[2].state.phase is not P.Phase.FAILED and c.sup[2].state.fail_count == 0
        c.res[1].fips.discard("192.168.1.100")
        await c.until(lambda: c.sup[2].state.phase is P.Phase.RUNNING)
        assert c.res[2].fips == {"192.168.1.100"}
        await c.close()

    run(main())
