"""The lock daemon's etcd backend (services/lock/etcd/) against a real etcd (Debian's etcd-server,
one member on loopback): two engines stand for two nodes' lock daemons in one process.

What a user would notice: who gets a lock and when, in which order, with which token; that a
node whose lease is not confirmed any more is told Lost before anyone else is granted its lock;
that a fenced node's locks pass on at once. The engines share the process, so their boot clocks
are one clock: "B was granted after A's hold stopped being safe" is checked on it.
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skyge.clients.lab.etcd import ClientTls, LoopbackEtcd
from skyge.services.common.clock import boot_ns
from skyge.services.lock.etcd.client import EtcdClient, EtcdError, EtcdTls
from skyge.services.lock.etcd.engine import EtcdLocks, EtcdTiming, OpenRefused
from skyge.services.lock.etcd.keys import Layout
from skyge.v1 import lock_pb2 as lp

WAIT_S = 20.0  # generous: every wait ends on an event long before on a sane machine


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackEtcd]:
    with LoopbackEtcd(tmp_path_factory.mktemp("etcd")) as server:
        yield server


class Node:
    """One lock daemon's engine and the events of its sessions."""

    def __init__(self, endpoint: str, domain: int, prefix: str, ttl_s: int = 1) -> None:
        self.events: dict[int, asyncio.Queue[lp.SessionEvent]] = {}
        self.leader_events: dict[int, asyncio.Queue[lp.LeaderEvent]] = {}
        #: the latest "safe until" any session of this node was told (Granted, Renewed)
        self.told_safe_until = 0
        self.client = EtcdClient([endpoint])
        self.engine = EtcdLocks(self.client, Layout.of(prefix, 7), domain, 7,
                                EtcdTiming(lease_ttl_s=ttl_s), emit=self._emit,
                                emit_leader=lambda w, e: self.leader_events.setdefault(
                                    w, asyncio.Queue()).put_nowait(e),
                                wall_ns=time.time_ns, on_lease=lambda until: None)
        self.next_session = domain << 56

    def _emit(self, session: int, event: lp.SessionEvent) -> None:
        told = event.granted.valid_until_boot_ns or event.renewed.valid_until_boot_ns
        self.told_safe_until = max(self.told_safe_until, told)
        self.events.setdefault(session, asyncio.Queue()).put_nowait(event)

    def open(self, label: str = "", keep_holds: bool = False) -> int:
        self.next_session += 1
        session, _ = self.engine.open_session(self.next_session, label, 0, keep_holds=keep_holds)
        return session

    async def event(self, session: int, kind: str | None = None) -> lp.SessionEvent:
        """The session's next event other than Renewed (of `kind` if given)."""
        queue = self.events.setdefault(session, asyncio.Queue())
        while True:
            event = await asyncio.wait_for(queue.get(), WAIT_S)
            if event.WhichOneof("event") == "renewed":
                continue
            if kind is not None:
                assert event.WhichOneof("event") == kind, event
            return event

    def pending(self, session: int) -> list[str]:
        queue = self.events.get(session)
        found = []
        while queue is not None and not queue.empty():
            kind = queue.get_nowait().WhichOneof("event")
            if kind != "renewed":
                found.append(kind or "")
        return found


Body = Callable[..., Awaitable[None]]


def with_nodes(test: Body) -> Callable[..., None]:
    """Run an async test body with two started nodes (its own key prefix), stopped after."""

    @functools.wraps(test)
    def run(etcd: LoopbackEtcd, request: pytest.FixtureRequest, **params: object) -> None:
        async def body() -> None:
            prefix = f"/test/{request.node.name}"
            nodes = [Node(etcd.endpoint, domain, prefix) for domain in (1, 2)]
            try:
                for node in nodes:
                    await node.engine.start()
                await test(nodes, **params)
            finally:
                for node in nodes:
                    if not node.engine.stopping:
                        await node.engine.stop()
                    await node.client.close()

        asyncio.run(body())

    # pytest sees (etcd, request, the test's own parameters)
    own = [p for name, p in inspect.signature(test).parameters.items() if name != "nodes"]
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("etcd", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD), *own])
    return run


LOCK = (600, 1)  # a fifo slot


async def held_and_awaited(a: Node, b: Node) -> tuple[int, int, lp.Granted]:
    """A session of `a` holds LOCK and one of `b` waits for it: (holder, waiter, the grant)."""
    holder, waiter = a.open(), b.open()
    await a.engine.acquire(holder, LOCK)
    granted = (await a.event(holder, "granted")).granted
    await b.engine.acquire(waiter, LOCK)
    await b.event(waiter, "queued")
    return holder, waiter, granted


@with_nodes
async def test_a_free_lock_is_granted_and_a_waiter_gets_it_on_release(nodes: list[Node]) -> None:
    a, b = nodes
    holder, waiter = a.open("a"), b.open("b")
    await a.engine.acquire(holder, LOCK)
    first = (await a.event(holder, "granted")).granted
    assert first.fencing_token >= 1 and first.valid_until_boot_ns > boot_ns()
    await b.engine.acquire(waiter, LOCK)
    assert (await b.event(waiter, "queued")).queued.position == 1
    state = (await b.engine.states(LOCK))[0]
    assert state.holder.session_id == holder and [w.session_id for w in state.waiters] == [waiter]
    await a.engine.release(holder, LOCK)
    await a.event(holder, "released")
    second = (await b.event(waiter, "granted")).granted
    assert second.fencing_token > first.fencing_token


@with_nodes
async def test_a_long_lived_node_keeps_nothing_per_lock_name_it_no_longer_uses(
        nodes: list[Node]) -> None:
    """A daemon that meets many lock names over its life (one per job, say) does not grow: the
    per-name serialization is dropped once a name has no holder or waiter on the node."""
    a, b = nodes
    for lock in range(1, 41):
        holder, waiter = a.open(), b.open()
        await a.engine.acquire(holder, (600, lock))
        await a.event(holder, "granted")
        await b.engine.acquire(waiter, (600, lock))
        await b.event(waiter, "queued")
        await a.engine.release(holder, (600, lock))
        await b.event(waiter, "granted")
        await b.engine.release(waiter, (600, lock))
        await b.event(waiter, "released")
    for _ in range(500):  # the last take's transaction may still be finishing
        if not any(node.engine._name_locks for node in nodes):
            break
        await asyncio.sleep(0.01)
    assert [node.engine._name_locks for node in nodes] == [{}, {}]


@with_nodes
async def test_try_only_on_a_held_lock_fails_busy_and_leaves_no_wait(nodes: list[Node]) -> None:
    a, b = nodes
    holder, other = a.open(), b.open()
    await a.engine.acquire(holder, LOCK)
    await a.event(holder, "granted")
    await b.engine.acquire(other, LOCK, try_only=True)
    assert (await b.event(other, "failed")).failed.reason == lp.FAIL_BUSY
    assert not (await a.engine.states(LOCK))[0].waiters


@with_nodes
async def test_bad_requests_fail_invalid_and_the_session_goes_on(nodes: list[Node]) -> None:
    a, _ = nodes
    session = a.open()
    await a.engine.acquire(session, (2048, 0))
    assert (await a.event(session, "failed")).failed.reason == lp.FAIL_INVALID
    await a.engine.acquire(session, (600, 2), priority=5)
    assert "priority" in (await a.event(session, "failed")).failed.detail
    await a.engine.acquire(session, LOCK)
    await a.event(session, "granted")
    await a.engine.acquire(session, LOCK)
    assert (await a.event(session, "failed")).failed.reason == lp.FAIL_INVALID


@with_nodes
async def test_a_timed_out_wait_fails_and_leaves_the_queue(nodes: list[Node]) -> None:
    a, b = nodes
    holder, waiter = a.open(), b.open()
    await a.engine.acquire(holder, LOCK)
    await a.event(holder, "granted")
    await b.engine.acquire(waiter, LOCK, timeout_ms=200)
    await b.event(waiter, "queued")
    assert (await b.event(waiter, "failed")).failed.reason == lp.FAIL_TIMEOUT
    for _ in range(100):  # the delete follows the event: bounded wait for it
        if not (await a.engine.states(LOCK))[0].waiters:
            break
        await asyncio.sleep(0.05)
    assert not (await a.engine.states(LOCK))[0].waiters


@pytest.mark.parametrize(("slot", "priorities", "served"), [
    (600, [0, 0, 0], [0, 1, 2]),        # fifo: first come first served
    (1100, [0, 0, 0], [2, 1, 0]),       # stack: last come first served
    (1600, [1, 5, 5], [1, 2, 0]),       # priority: highest first, ties fifo
])
@with_nodes
async def test_waiters_are_served_in_the_order_of_their_slot(
        nodes: list[Node], slot: int, priorities: list[int], served: list[int]) -> None:
    a, b = nodes
    lock = (slot, 3)
    holder = a.open()
    await a.engine.acquire(holder, lock)
    await a.event(holder, "granted")
    waiters = []
    for index, priority in enumerate(priorities):  # alternate the nodes
        node = (a, b)[index % 2]
        session = node.open(f"w{index}")
        await node.engine.acquire(session, lock, priority=priority)
        await node.event(session, "queued")
        waiters.append((node, session))
    order = []
    await a.engine.release(holder, lock)
    for _ in waiters:
        granted = None
        while granted is None:
            for index, (node, session) in enumerate(waiters):
                if index not in order and "granted" in node.pending(session):
                    granted = index
            if granted is None:
                await asyncio.sleep(0.01)
        order.append(granted)
        node, session = waiters[granted]
        await node.engine.release(session, lock)
    assert order == served


@with_nodes
async def test_a_random_slot_serves_every_waiter_once(nodes: list[Node]) -> None:
    a, b = nodes
    lock = (100, 7)
    holder = a.open()
    await a.engine.acquire(holder, lock)
    await a.event(holder, "granted")
    waiters = [(node, node.open()) for node in (a, b, a, b)]
    for node, session in waiters:
        await node.engine.acquire(session, lock)
        assert (await node.event(session, "queued")).queued.position == 0
    await a.engine.release(holder, lock)
    tokens = []
    for _ in range(len(waiters)):
        done = await _first_granted(waiters)
        node, session = done
        tokens.append((await node.event(session, "granted")).granted.fencing_token)
        await node.engine.release(session, lock)
        waiters.remove(done)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


async def _first_granted(waiters: list[tuple[Node, int]]) -> tuple[Node, int]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for node, session in waiters:
            queue = node.events.get(session)
            if queue is not None and any(e.WhichOneof("event") == "granted"
                                         for e in queue._queue):  # type: ignore[attr-defined]
                return node, session
        await asyncio.sleep(0.01)
    raise AssertionError("nobody was granted the lock")


@with_nodes
async def test_a_stalled_node_is_told_lost_before_its_lock_passes_on(nodes: list[Node]) -> None:
    a, b = nodes
    holder, waiter, granted = await held_and_awaited(a, b)
    valid_until = granted.valid_until_boot_ns
    # node a's daemon stops talking to etcd (its keep-alives, its watch): a stall
    for task in a.engine._loops:
        task.cancel()
    lost = await a.event(holder, "lost")
    lost_at = boot_ns()
    assert lost.lost.reason == lp.LOST_NO_QUORUM
    await b.event(waiter, "granted")
    granted_at = boot_ns()
    # told before, and nobody else granted before the last time the holder was told was safe
    assert lost_at < a.told_safe_until <= granted_at
    assert a.told_safe_until >= valid_until


@with_nodes
async def test_a_revoked_lease_passes_the_lock_at_once_and_tells_the_holder(
        nodes: list[Node]) -> None:
    """What a survivor does after fencing a node: revoke its lease."""
    a, b = nodes
    holder, waiter, _ = await held_and_awaited(a, b)
    started = time.monotonic()
    await b.client.lease_revoke(a.engine.lease_id)
    await b.event(waiter, "granted")
    assert time.monotonic() - started < a.engine.timing.lease_ttl_s  # not the lease's expiry
    assert (await a.event(holder, "lost")).lost.reason == lp.LOST_NODE_LEFT


@with_nodes
async def test_a_clean_stop_tells_the_holders_and_passes_the_locks(nodes: list[Node]) -> None:
    a, b = nodes
    holder, waiter, _ = await held_and_awaited(a, b)
    started = time.monotonic()
    await a.engine.stop()
    assert (await a.event(holder, "lost")).lost.reason == lp.LOST_NODE_LEFT
    await b.event(waiter, "granted")
    assert time.monotonic() - started < a.engine.timing.lease_ttl_s


@pytest.mark.parametrize("streams_end", [True, False], ids=["told", "streams stuck"])
@with_nodes
async def test_a_clean_stop_revokes_only_after_its_sessions_were_told(
        nodes: list[Node], streams_end: bool) -> None:
    """The lease is revoked early_ns after the daemon's streams carried the Lost out, however
    long that took (a stall before the writes must not eat the warning); when they never do,
    the lease is left to run out rather than cut the warning short."""
    a, b = nodes
    _, waiter, _ = await held_and_awaited(a, b)
    told_at: list[float] = []

    async def told() -> bool:
        await asyncio.sleep(0.3)  # the streams take this long
        told_at.append(time.monotonic())
        return streams_end

    await a.engine.stop(told=told)
    await b.event(waiter, "granted")
    waited = time.monotonic() - told_at[0]
    if streams_end:
        assert a.engine.timing.early_ns / 1e9 <= waited < a.engine.timing.lease_ttl_s
    else:
        assert waited >= a.engine.timing.lease_ttl_s * 0.9


@with_nodes
async def test_kept_holds_outlive_the_session_and_are_adopted_by_its_label(
        nodes: list[Node]) -> None:
    a, b = nodes
    first = a.open("mysql", keep_holds=True)
    await a.engine.acquire(first, LOCK)
    token = (await a.event(first, "granted")).granted.fencing_token
    with pytest.raises(OpenRefused):
        a.engine.open_session(999, "mysql", 0, keep_holds=True)
    a.engine.close_session(first)
    state = (await b.engine.states(LOCK))[0]
    assert state.holder.session_id == first and state.holder.fencing_token == token
    session, adopted = a.engine.open_session(1000, "mysql", 0, keep_holds=True)
    assert session == first and adopted == [(LOCK, token)]


@with_nodes
async def test_a_campaign_elects_the_first_candidate_and_then_the_next(nodes: list[Node]) -> None:
    a, b = nodes
    one = a.engine.open_session(11, "candidate-a", 0, campaign="db")[0]
    two = b.engine.open_session(12, "candidate-b", 0, campaign="db")[0]
    a.engine.watch(1, "db", one)
    b.engine.watch(2, "db", two)
    await a.engine.acquire(one, "db")
    await b.engine.acquire(two, "db")
    event = await _leader(a, 1, lambda e: e.elected)
    assert event.leader == "candidate-a" and event.term >= 1
    a.engine.close_session(one)
    event = await _leader(b, 2, lambda e: e.elected)
    assert event.leader == "candidate-b"


async def _leader(node: Node, watcher: int, wanted: object) -> lp.LeaderEvent:
    queue = node.leader_events.setdefault(watcher, asyncio.Queue())
    while True:
        event = await asyncio.wait_for(queue.get(), WAIT_S)
        if wanted(event):  # type: ignore[operator]
            return event


def test_an_unreachable_etcd_is_an_error_naming_it() -> None:
    async def start() -> None:
        client = EtcdClient(["127.0.0.1:1"], timeout_s=0.5)
        try:
            await client.members()
        finally:
            await client.close()

    with pytest.raises(EtcdError, match=re.escape("etcd at 127.0.0.1:1: UNAVAILABLE")):
        asyncio.run(start())


@with_nodes
async def test_a_node_that_lost_its_lease_queues_again_and_is_served(nodes: list[Node]) -> None:
    """Its lease dropped while etcd still has it (etcd unreachable for a moment): the wait it
    had failed; queued again under the new lease, the same waiter key is served in its turn."""
    a, b = nodes
    holder, waiter, _ = await held_and_awaited(a, b)
    b.engine._drop_lease(lp.LOST_NO_QUORUM, "simulated: etcd unreachable", revoke=False)
    assert (await b.event(waiter, "failed")).failed.reason == lp.FAIL_NO_QUORUM
    for _ in range(200):  # the lease loop takes a new lease: bounded wait
        if b.engine.lease_valid():
            break
        await asyncio.sleep(0.05)
    await b.engine.acquire(waiter, LOCK)
    await b.event(waiter, "queued")
    await a.engine.release(holder, LOCK)
    await b.event(waiter, "granted")


# -- TLS to etcd (lock.cfg etcd_ca, etcd_cert, etcd_key) -------------------------------------------
def _certificates(folder: Path) -> ClientTls:
    """A CA, etcd's certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def make(subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
             extensions: list[tuple[x509.ExtensionType, bool]]
             ) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name, issuer_key = issuer or (name, key)
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(issuer_key, hashes.SHA256())
        return (name, key, cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    ca_name, ca_key, ca_pem, _ = make("test etcd CA", None,
                                      [(x509.BasicConstraints(ca=True, path_length=0), True)])
    _, _, server_pem, server_key = make("etcd", (ca_name, ca_key), [
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
         False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    _, _, client_pem, client_key = make("skyge-lock", (ca_name, ca_key), [
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    files = {}
    for name, data in (("ca.crt", ca_pem), ("etcd.crt", server_pem), ("etcd.key", server_key),
                       ("client.crt", client_pem), ("client.key", client_key)):
        files[name] = folder / name
        files[name].write_bytes(data)
    return ClientTls(files["ca.crt"], files["etcd.crt"], files["etcd.key"], files["client.crt"],
                     files["client.key"])


def test_locks_over_tls_to_etcd_and_no_answer_without_a_client_certificate(
        tmp_path: Path) -> None:
    tls = _certificates(tmp_path)
    with LoopbackEtcd(tmp_path / "etcd", client_tls=tls) as server:
        async def body() -> None:
            secure = EtcdClient([server.endpoint], EtcdTls(tls.ca, tls.client_cert,
                                                           tls.client_key))
            engine = EtcdLocks(secure, Layout.of("/tls", 7), 1, 7, EtcdTiming(),
                               emit=lambda s, e: events.append(e), emit_leader=lambda w, e: None,
                               wall_ns=time.time_ns, on_lease=lambda until: None)
            events: list[lp.SessionEvent] = []
            try:
                await engine.start()
                session, _ = engine.open_session(1, "over TLS", 0)
                await engine.acquire(session, LOCK)
                assert events[-1].granted.fencing_token >= 1, events
                await engine.stop()
            finally:
                await secure.close()
            for client in (EtcdClient([server.endpoint], timeout_s=2),  # plain TCP
                           EtcdClient([server.endpoint], EtcdTls(tls.ca), timeout_s=2)):
                try:
                    with pytest.raises(EtcdError, match="UNAVAILABLE"):
                        await client.members()
                finally:
                    await client.close()

        asyncio.run(body())
