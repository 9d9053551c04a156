"""The etcd backend's lock engine: this node's sessions, their holds and waits, kept in etcd.

One etcd lease per lock daemon carries every key its sessions own (keys.py), so a dead or cut
off node's holds and waits vanish when its lease expires, or at once when a survivor fences it
and revokes the lease. Grants are transactions:

- Acquire: one transaction: "no holder and nobody waits" -> put the holder key (granted; the
  token is the transaction's revision), else put a waiter key (queued) or nothing (try_only).
- A free lock with waiters: each daemon follows every lock key with one watch; the daemon whose
  waiter comes first (keys.served_order) takes the lock with "no holder, my waiter is there,
  nobody joined the queue since the revision I read" -> delete my waiter, put the holder key.
  A daemon that read an old queue fails and tries again on the next change it sees.
- Release: delete the holder key if it is still ours (same create revision).

Holds are safe until this node's lease would expire: a keep-alive sent at t and answered with
TTL makes them safe until t + TTL (less a drift margin): etcd expires a lease no sooner than TTL
after it received the keep-alive, and a new etcd leader extends leases. Renewed events carry it,
the lease file gives it to HA's deadman, and sessions are told Lost `early_ns` before it runs out
without a renewal.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from skyge.services.common.clock import boot_ns
from skyge.v1 import common_pb2
from skyge.v1 import lock_pb2 as lp

from ..protocol.names import names_text, slot_lock
from ..protocol.table import (FIFO, PRIORITY, RANDOM, STACK, Name, acquire_problem, order_of,
                              sort_key)
from .client import (EtcdClient, EtcdError, LeaseGone, compare_created, compare_unchanged_since,
                     delete, get, put)
from .keys import HOLDER, Layout, Record, Waiting, next_waiter, prefix_end, served_order

__all__ = ["EtcdLocks", "EtcdTiming"]

logger = logging.getLogger("skyge.lock")
MS = 1_000_000
S = 1_000_000_000
ORDERS = {RANDOM: lp.WAIT_RANDOM, FIFO: lp.WAIT_FIFO, STACK: lp.WAIT_STACK,
          PRIORITY: lp.WAIT_PRIORITY}


@dataclass(frozen=True)
class EtcdTiming:
    lease_ttl_s: int = 2
    #: keep-alives per TTL: the lease survives an etcd hiccup of about TTL minus one interval
    renewals_per_ttl: int = 8
    #: clock rate difference allowed between this host and etcd's leader
    drift: float = 0.01
    #: sessions are told Lost this long before their holds stop being safe
    early_ns: int = 50 * MS
    #: a failed transaction (etcd unreachable) is tried again after this
    retry_ns: int = 100 * MS

    @property
    def renew_every_s(self) -> float:
        return self.lease_ttl_s / self.renewals_per_ttl

    def safe_until(self, sent_ns: int, ttl_s: int) -> int:
        return sent_ns + int(ttl_s * S * (1 - self.drift))


@dataclass
class Wait:
    record: Record
    try_only: bool
    create_revision: int = 0
    timer: asyncio.TimerHandle | None = None
    #: this daemon's transaction that turns it into a hold is out (its waiter key goes)
    taking: bool = False


@dataclass
class Session:
    id: int
    label: str
    pid: int
    keep_holds: bool = False
    campaign: str | None = None
    holds: dict[Name, int] = field(default_factory=dict)  # name -> fencing token
    waits: dict[Name, Wait] = field(default_factory=dict)
    orphaned: bool = False


@dataclass
class LockView:
    """A lock as this daemon's watch shows it."""

    holder: Waiting | None = None
    waiters: dict[int, Waiting] = field(default_factory=dict)


class OpenRefused(Exception):
    pass


Emit = Callable[[int, lp.SessionEvent], None]
EmitLeader = Callable[[int, lp.LeaderEvent], None]


class EtcdLocks:
    def __init__(self, client: EtcdClient, layout: Layout, domain: int, netid: int,
                 timing: EtcdTiming, *, emit: Emit, emit_leader: EmitLeader,
                 wall_ns: Callable[[], int], on_lease: Callable[[int], None]) -> None:
        self.client = client
        self.layout = layout
        self.domain = domain
        self.netid = netid
        self.timing = timing
        self._emit = emit
        self._emit_leader = emit_leader
        self._wall_ns = wall_ns
        self._on_lease = on_lease  # the safe-until for the HA deadman's lease file (0: none)
        self.sessions: dict[int, Session] = {}
        self.lease_id = 0
        self.safe_until = 0
        self.view: dict[Name, LockView] = {}
        self.applied_revision = 0
        self.watch_ready = asyncio.Event()
        self.stopping = False
        #: holder keys (key -> create revision) whose delete failed: tried again until done
        self._stale_holds: dict[bytes, int] = {}
        #: one asyncio lock per name in use, and how many hold or await it (see `_serialized`)
        self._name_locks: dict[Name, asyncio.Lock] = {}
        self._name_users: dict[Name, int] = {}
        self._watchers: dict[int, tuple[str, int]] = {}  # watcher -> (group, session)
        self._leaders: dict[str, tuple[int, int]] = {}  # group -> (session, token) last told
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._lost_timer: asyncio.TimerHandle | None = None
        self._renewed_told = 0

    # -- life -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Take a lease and read the locks; EtcdError when etcd does not answer (then call it
        again: what was done is kept)."""
        if not self.lease_id:
            await self._new_lease()
        await self._load()
        self._loops = [asyncio.create_task(self._lease_loop(), name="etcd-lease"),
                       asyncio.create_task(self._watch_loop(), name="etcd-watch"),
                       asyncio.create_task(self._retry_loop(), name="etcd-retry")]

    async def stop(self, told: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Clean stop: sessions are told Lost, then, if they held locks, early_ns after `told`
        says the Lost went out (the daemon's streams wrote it), the lease is revoked, so every
        hold and wait of this node passes on at once. If `told` says it did not, the lease is
        left to run out (TTL): no warning is cut short."""
        self.stopping = True
        if self._lost_timer is not None:
            self._lost_timer.cancel()
        held = self._lose_all(lp.LOST_NODE_LEFT, "the lock daemon is stopping",
                              lp.FAIL_NO_QUORUM)
        revoke = True
        if held:
            revoke = told is None or await told()
            if revoke:
                await asyncio.sleep(self.timing.early_ns / S)
            else:
                logger.warning("sessions still had their streams open after being told to "
                               "stop: the lease is left to run out, not revoked")
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        if self.lease_id and revoke:
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(self.lease_id)
        self._set_safe_until(0)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def _serialized(self, name: Name) -> AsyncIterator[None]:
        """One transaction on a lock name at a time from this node. The name's asyncio lock is
        dropped once nobody holds or awaits it: a long-lived daemon meets many names."""
        lock = self._name_locks.setdefault(name, asyncio.Lock())
        self._name_users[name] = self._name_users.get(name, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._name_users[name] -= 1
            if not self._name_users[name]:
                del self._name_locks[name], self._name_users[name]

    # -- the lease ------------------------------------------------------------------------------
    async def _new_lease(self) -> None:
        sent = boot_ns()
        lease, ttl = await self.client.lease_grant(self.timing.lease_ttl_s)
        await self.client.txn([], [put(self.layout.node(self.domain),
                                       str(lease).encode(), lease)])
        self.lease_id = lease
        self._confirmed(sent, ttl)
        logger.log(25, "etcd lease %x (TTL %d s) from %s", lease, ttl, self.client.endpoint)

    def _confirmed(self, sent_ns: int, ttl_s: int) -> None:
        until = self.timing.safe_until(sent_ns, ttl_s)
        if until <= self.safe_until:
            return
        self._set_safe_until(until)
        loop = asyncio.get_running_loop()
        if self._lost_timer is not None:
            self._lost_timer.cancel()
        delay = (until - self.timing.early_ns - boot_ns()) / S
        self._lost_timer = loop.call_later(max(delay, 0), self._lease_ran_out)
        if until - self._renewed_told >= self.timing.renew_every_s * S / 2:
            self._renewed_told = until
            for session in self.sessions.values():
                if session.holds and session.campaign is None:
                    self._emit(session.id, lp.SessionEvent(
                        renewed=lp.Renewed(valid_until_boot_ns=until)))

    def _set_safe_until(self, until: int) -> None:
        self.safe_until = until
        self._on_lease(until)

    def lease_valid(self) -> bool:
        return self.lease_id != 0 and boot_ns() < self.safe_until - self.timing.early_ns

    def _lease_ran_out(self) -> None:
        self._lost_timer = None
        if self.lease_id and boot_ns() >= self.safe_until - self.timing.early_ns:
            logger.error("etcd did not confirm this node's lease for %d ms: its holds end",
                         self.timing.lease_ttl_s * 1000)
            self._drop_lease(lp.LOST_NO_QUORUM, "etcd did not confirm this node's lease in "
                             "time (etcd unreachable or without quorum)", revoke=True)

    def _drop_lease(self, reason: lp.LostReason, detail: str, *, revoke: bool) -> None:
        """The lease is (or may be) gone: every hold and wait ends; a new lease comes next.
        With `revoke` (etcd may still have it), it is revoked once nobody relies on it any
        more: `early_ns` after the Lost and not before the holds' promised end."""
        self._lose_all(reason, detail, lp.FAIL_NO_QUORUM)
        old, self.lease_id = self.lease_id, 0
        revoke_at = max(boot_ns() + self.timing.early_ns, self.safe_until)
        self._set_safe_until(0)
        self._renewed_told = 0
        if old and revoke:
            self._spawn(self._revoke_at(old, revoke_at), "etcd-revoke")

    async def _revoke_at(self, lease: int, at_ns: int) -> None:
        await asyncio.sleep(max(at_ns - boot_ns(), 0) / S)
        with contextlib.suppress(EtcdError):
            await self.client.lease_revoke(lease)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.renew_every_s)
            try:
                if not self.lease_id:
                    await self._new_lease()
                    continue
                sent = boot_ns()
                left_s = max((self.safe_until - sent) / S, self.timing.renew_every_s)
                lease = self.lease_id
                # an attempt stuck in an etcd election must not use up the lease: give up on
                # it after two renewal intervals and send a new one
                ttl = await self.client.lease_keepalive(
                    lease, timeout_s=min(left_s, 2 * self.timing.renew_every_s))
                if lease == self.lease_id:  # not dropped meanwhile
                    self._confirmed(sent, ttl)
            except LeaseGone as error:
                logger.error("this node's etcd lease ended: %s", error)
                self._drop_lease(lp.LOST_NODE_LEFT, "etcd ended this node's lease (it expired "
                                 "or a survivor revoked it after fencing this node)",
                                 revoke=False)
            except EtcdError as error:
                logger.warning("etcd keep-alive failed: %s", error)

    # -- the watch ------------------------------------------------------------------------------
    async def _load(self) -> None:
        start, end = self.layout.locks_range()
        reply = await self.client.range(start, end)
        self.view.clear()
        for kv in reply.kvs:
            self._apply(kv.key, kv, None)
        self.applied_revision = reply.header.revision
        self.watch_ready.set()

    async def _watch_loop(self) -> None:
        start, end = self.layout.locks_range()
        while True:
            try:
                async for reply in self.client.watch(start, end, self.applied_revision + 1):
                    touched: set[Name] = set()
                    for event in reply.events:
                        deleted = event.type == event.DELETE
                        name = self._apply(event.kv.key, None if deleted else event.kv,
                                           event.prev_kv if deleted else None)
                        self.applied_revision = max(self.applied_revision,
                                                    event.kv.mod_revision)
                        if name is not None:
                            touched.add(name)
                    for name in touched:
                        self._changed(name)
            except EtcdError as error:
                logger.warning("etcd watch: %s; reading the locks again", error)
            await asyncio.sleep(self.timing.retry_ns / S)
            with contextlib.suppress(EtcdError):
                await self._load()
                for name in list(self._waited()):
                    self._changed(name)

    def _apply(self, key: bytes, kv: object, prev: object) -> Name | None:
        """One key's new value (kv) or deletion (prev: its last value) into the view."""
        parsed = self.layout.parse(key)
        if parsed is None:
            return None
        name, kind, session = parsed
        view = self.view.setdefault(name, LockView())
        if kv is not None:
            record = Record.decode(kv.value)  # type: ignore[attr-defined]
            if record is None:
                return None
            entry = Waiting(record, kv.create_revision)  # type: ignore[attr-defined]
            if kind == HOLDER:
                view.holder = entry
            else:
                view.waiters[session] = entry
        elif kind == HOLDER:
            view.holder = None
            if prev is not None:
                self._hold_deleted(name, prev.create_revision)  # type: ignore[attr-defined]
        else:
            view.waiters.pop(session, None)
            self._wait_deleted(name, session)
        if view.holder is None and not view.waiters:
            del self.view[name]
        return name

    def _hold_deleted(self, name: Name, token: int) -> None:
        """A holder key went: if a local session still holds it with that token, the lease
        behind it ended (expired, or revoked by a survivor that fenced this node)."""
        for session in self.sessions.values():
            if session.holds.get(name) == token:
                del session.holds[name]
                self._lost(session, name, lp.LOST_NODE_LEFT,
                           "etcd removed the hold: this node's lease ended")

    def _wait_deleted(self, name: Name, session_id: int) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return
        wait = session.waits.get(name)
        if wait is not None and not wait.taking and wait.create_revision and \
                wait.create_revision <= self.applied_revision:
            # not by this daemon (it forgets a wait before deleting it): the lease ended
            self._end_wait(session, name)
            self._fail(session, name, lp.FAIL_NO_QUORUM, "etcd removed the wait: this node's "
                       "lease ended")

    def _waited(self) -> set[Name]:
        return {name for s in self.sessions.values() for name in s.waits}

    def _changed(self, name: Name) -> None:
        view = self.view.get(name)
        if isinstance(name, str):
            self._tell_leader(name)
        if view is not None and view.holder is None and view.waiters and \
                any(name in s.waits for s in self.sessions.values()):
            self._spawn(self._try_take(name), "etcd-take")

    async def _retry_loop(self) -> None:
        """What failed for want of etcd: deletes of released holds, and takes of free locks."""
        while True:
            await asyncio.sleep(self.timing.retry_ns / S)
            for key, revision in list(self._stale_holds.items()):
                try:
                    await self.client.txn([compare_created(key, revision)], [delete(key)])
                    self._stale_holds.pop(key, None)
                except EtcdError:
                    break
            for name in self._waited():
                view = self.view.get(name)
                if view is not None and view.holder is None:
                    self._changed(name)

    # -- sessions -------------------------------------------------------------------------------
    def open_session(self, session_id: int, label: str, pid: int, *, keep_holds: bool = False,
                     campaign: str | None = None) -> tuple[int, list[tuple[Name, int]]]:
        """(session id, adopted holds): a new session, or the orphan of its label continued."""
        if keep_holds:
            for session in self.sessions.values():
                if session.keep_holds and session.label == label:
                    if not session.orphaned:
                        raise OpenRefused(f"a keep_holds session labelled {label!r} is still "
                                          f"open on this node (session {session.id:#x}); close "
                                          f"it first")
                    session.orphaned, session.pid = False, pid
                    logger.log(25, "session %#x (%r, pid %d) adopted %s kept since its previous "
                               "client ended", session.id, label, pid, names_text(session.holds))
                    return session.id, sorted(session.holds.items(), key=lambda i: sort_key(i[0]))
        self.sessions[session_id] = Session(session_id, label, pid, keep_holds=keep_holds,
                                            campaign=campaign)
        return session_id, []

    def close_session(self, session_id: int) -> None:
        """The stream ended: waits end; holds end too, unless keep_holds keeps them."""
        session = self.sessions.get(session_id)
        if session is None or session.orphaned:
            return
        for name in list(session.waits):
            self._spawn(self._cancel_wait(session, name), "etcd-cancel")
        if session.keep_holds and session.holds:
            session.orphaned = True
            logger.log(25, "session %#x (%r, pid %d) ended holding %s: kept for the next "
                       "keep_holds session labelled so", session.id, session.label, session.pid,
                       names_text(session.holds))
            return
        del self.sessions[session_id]
        for name, token in session.holds.items():
            self._spawn(self._delete_hold(name, token), "etcd-release")

    def _record(self, session: Session, priority: int) -> Record:
        return Record(session=session.id, domain=self.domain, label=session.label,
                      pid=session.pid, priority=priority, queued_unix_ns=self._wall_ns())

    def _fail(self, session: Session, name: Name, reason: lp.FailReason,
              detail: str) -> None:
        if session.campaign is None:
            slot, lock = slot_lock(name)
            self._emit(session.id, lp.SessionEvent(failed=lp.AcquireFailed(
                slot=slot, lock=lock, reason=reason, detail=detail)))

    def _granted(self, session: Session, name: Name, token: int) -> None:
        session.holds[name] = token
        if session.campaign is None:
            slot, lock = slot_lock(name)
            self._emit(session.id, lp.SessionEvent(granted=lp.Granted(
                slot=slot, lock=lock, fencing_token=token, valid_until_boot_ns=self.safe_until)))

    def _lost(self, session: Session, name: Name, reason: lp.LostReason,
              detail: str) -> None:
        if session.campaign is None:
            slot, lock = slot_lock(name)
            self._emit(session.id, lp.SessionEvent(lost=lp.Lost(slot=slot, lock=lock,
                                                                  reason=reason, detail=detail)))
        if session.orphaned and not session.holds:
            self.sessions.pop(session.id, None)

    def _lose_all(self, reason: lp.LostReason, detail: str,
                  fail: lp.FailReason) -> bool:
        """Every hold ends (Lost) and every wait fails; True if something was held."""
        held = False
        for session in list(self.sessions.values()):
            for name in list(session.waits):
                self._end_wait(session, name)
                self._fail(session, name, fail, detail)
            for name in list(session.holds):
                held = True
                del session.holds[name]
                self._lost(session, name, reason, detail)
        return held

    def _end_wait(self, session: Session, name: Name) -> Wait | None:
        wait = session.waits.pop(name, None)
        if wait is not None and wait.timer is not None:
            wait.timer.cancel()
        return wait

    async def acquire(self, session_id: int, name: Name, *, priority: int = 0,
                      try_only: bool = False, timeout_ms: int = 0) -> None:
        session = self.sessions[session_id]
        problem = acquire_problem(name, priority, name in session.holds or name in session.waits)
        if problem:
            self._fail(session, name, lp.FAIL_INVALID, problem)
            return
        if self.stopping:
            self._fail(session, name, lp.FAIL_NO_QUORUM, "the lock daemon is stopping")
            return
        if not self.lease_valid():
            self._fail(session, name, lp.FAIL_NO_QUORUM,
                       "etcd has not confirmed this node's lease (unreachable?)")
            return
        record = self._record(session, priority)
        wait = Wait(record, try_only)
        session.waits[name] = wait  # a Release meanwhile cancels it
        holder, (start, end) = self.layout.holder(name), self.layout.waiters(name)
        waiter = self.layout.waiter(name, session_id)
        granted = replace(record, granted_unix_ns=record.queued_unix_ns)
        async with self._serialized(name):
            # the lease as it is now: a key must never be written without one (it would outlive
            # this node); one dropped meanwhile is refused by etcd or revoked with its keys
            lease = self.lease_id
            try:
                if not lease:
                    raise EtcdError("this node has no etcd lease at the moment")
                reply = await self.client.txn(
                    [compare_created(holder, 0), compare_created(start, 0, end)],
                    [put(holder, granted.encode(), lease)],
                    [] if try_only else [put(waiter, record.encode(), lease), get(waiter)])
            except EtcdError as error:
                if session.waits.get(name) is wait:
                    self._end_wait(session, name)
                    self._fail(session, name, lp.FAIL_NO_QUORUM, str(error))
                return
        if session.waits.get(name) is not wait or session.id not in self.sessions:
            # released or closed while the request was out: undo what it did
            if reply.succeeded:
                await self._delete_hold(name, reply.header.revision)
            elif not try_only:
                await self._delete_wait(waiter, _created(reply))
            return
        if reply.succeeded:
            self._end_wait(session, name)
            self._granted(session, name, reply.header.revision)
            return
        if try_only:
            self._end_wait(session, name)
            self._fail(session, name, lp.FAIL_BUSY, "the lock is held")
            return
        wait.create_revision = _created(reply)
        if timeout_ms:
            wait.timer = asyncio.get_running_loop().call_later(
                timeout_ms / 1000, self._timed_out, session, name, wait)
        self._emit(session.id, lp.SessionEvent(queued=lp.Queued(
            slot=slot_lock(name)[0], lock=slot_lock(name)[1],
            position=self._position(name, session.id, wait))))
        self._changed(name)

    def _position(self, name: Name, session_id: int, wait: Wait) -> int:
        if order_of(name) == RANDOM:  # no place in the queue
            return 0
        view = self.view.get(name, LockView())
        waiters = {**view.waiters, session_id: Waiting(wait.record, wait.create_revision)}
        ordered = served_order(name, list(waiters.values()))
        return 1 + [w.record.session for w in ordered].index(session_id)

    def _timed_out(self, session: Session, name: Name, wait: Wait) -> None:
        if session.waits.get(name) is wait:
            self._fail(session, name, lp.FAIL_TIMEOUT, "timed out")
            self._spawn(self._cancel_wait(session, name), "etcd-timeout")

    async def _try_take(self, name: Name) -> None:
        """Take the free lock if this node's waiter comes first (see the module docstring)."""
        async with self._serialized(name):
            view = self.view.get(name)
            if view is None or view.holder is not None:
                return
            first = next_waiter(name, list(view.waiters.values()))
            if first is None or first.record.domain != self.domain:
                return
            session = self.sessions.get(first.record.session)
            wait = session.waits.get(name) if session is not None else None
            if session is None or wait is None or wait.create_revision != first.create_revision:
                return
            holder, (start, end) = self.layout.holder(name), self.layout.waiters(name)
            waiter = self.layout.waiter(name, session.id)
            record = replace(wait.record, granted_unix_ns=self._wall_ns())
            lease = self.lease_id
            if not lease:
                return  # the waits end with the lease
            wait.taking = True
            try:
                reply = await self.client.txn(
                    [compare_created(holder, 0), compare_created(waiter, wait.create_revision),
                     compare_unchanged_since(start, end, self.applied_revision)],
                    [delete(waiter), put(holder, record.encode(), lease)])
            except EtcdError as error:
                logger.warning("taking %s: %s", names_text([name]), error)
                return
            finally:
                wait.taking = False
            if not reply.succeeded:
                return  # the watch brings what changed; the next change tries again
            if session.waits.get(name) is not wait or session.id not in self.sessions:
                await self._delete_hold(name, reply.header.revision)
                return
            self._end_wait(session, name)
            self._granted(session, name, reply.header.revision)

    async def release(self, session_id: int, name: Name) -> None:
        """Release a hold or cancel a wait; `released` in any case (idempotent)."""
        session = self.sessions.get(session_id)
        if session is not None:
            token = session.holds.pop(name, None)
            if token is not None:
                await self._delete_hold(name, token)
            elif name in session.waits:
                await self._cancel_wait(session, name)
        slot, lock = slot_lock(name)
        self._emit(session_id, lp.SessionEvent(released=lp.Released(slot=slot, lock=lock)))

    async def _cancel_wait(self, session: Session, name: Name) -> None:
        wait = self._end_wait(session, name)
        if wait is not None and wait.create_revision:
            await self._delete_wait(self.layout.waiter(name, session.id), wait.create_revision)

    async def _delete_wait(self, key: bytes, revision: int) -> None:
        with contextlib.suppress(EtcdError):  # else it ends with the lease
            await self.client.txn([compare_created(key, revision)], [delete(key)])

    async def _delete_hold(self, name: Name, token: int) -> None:
        """Delete the holder key if it is still this hold's; kept for retries if etcd fails:
        a hold left in etcd would block the lock as long as this node's lease lives."""
        key = self.layout.holder(name)
        try:
            await self.client.txn([compare_created(key, token)], [delete(key)])
        except EtcdError:
            self._stale_holds[key] = token

    # -- queries --------------------------------------------------------------------------------
    async def states(self, name: Name | None = None) -> list[lp.LockState]:
        """Held or awaited locks (or the one asked, even free), read from etcd (linearizable)."""
        if name is None:
            start, end = self.layout.locks_range()
        else:
            start = self.layout.lock_dir(name).encode()
            end = prefix_end(start)
        reply = await self.client.range(start, end)
        views: dict[Name, LockView] = {}
        for kv in reply.kvs:
            parsed = self.layout.parse(kv.key)
            record = Record.decode(kv.value)
            if parsed is None or record is None or isinstance(parsed[0], str):
                continue
            view = views.setdefault(parsed[0], LockView())
            if parsed[1] == HOLDER:
                view.holder = Waiting(record, kv.create_revision)
            else:
                view.waiters[parsed[2]] = Waiting(record, kv.create_revision)
        if name is not None and not isinstance(name, str):
            views.setdefault(name, LockView())
        orphans = {s.id for s in self.sessions.values() if s.orphaned}
        return [self._state(n, views[n], orphans) for n in sorted(views, key=str)
                if not isinstance(n, str)]

    def _state(self, name: Name, view: LockView, orphans: set[int]) -> lp.LockState:
        slot, lock = slot_lock(name)

        def holder(entry: Waiting, held: bool) -> lp.Holder:
            r = entry.record
            return lp.Holder(session_id=r.session, node=self.node_id(r.domain), label=r.label,
                             fencing_token=entry.create_revision if held else 0,
                             granted_unix_ns=r.granted_unix_ns if held else 0,
                             queued_unix_ns=r.queued_unix_ns, priority=r.priority,
                             client_pid=r.pid, orphaned=held and r.session in orphans)

        state = lp.LockState(slot=slot, lock=lock, order=ORDERS[order_of(name)],
                             waiters=[holder(w, False) for w in
                                      served_order(name, list(view.waiters.values()))])
        if view.holder is not None:
            state.holder.CopyFrom(holder(view.holder, True))
        return state

    def node_id(self, domain: int) -> common_pb2.NodeId:
        return common_pb2.NodeId(netid=self.netid, domain=domain)

    # -- elections ------------------------------------------------------------------------------
    def watch(self, watcher: int, group: str, session: int) -> None:
        self._watchers[watcher] = (group, session)
        self._emit_leader(watcher, self._leader_event(group, session))

    def unwatch(self, watcher: int) -> None:
        self._watchers.pop(watcher, None)

    def _leader_event(self, group: str, session: int) -> lp.LeaderEvent:
        view = self.view.get(group)
        holder = view.holder if view is not None else None
        if holder is None:
            return lp.LeaderEvent(group=group)
        return lp.LeaderEvent(group=group, leader=holder.record.label,
                              leader_node=self.node_id(holder.record.domain),
                              term=holder.create_revision,
                              elected=bool(session) and holder.record.session == session)

    def _tell_leader(self, group: str) -> None:
        view = self.view.get(group)
        holder = view.holder if view is not None else None
        now = (holder.record.session, holder.create_revision) if holder else (0, 0)
        if self._leaders.get(group, (0, 0)) == now:
            return
        self._leaders[group] = now
        for watcher, (watched, session) in list(self._watchers.items()):
            if watched == group:
                self._emit_leader(watcher, self._leader_event(group, session))


def _created(queued: Any) -> int:
    """The create revision of the waiter key an acquire's transaction put (its failure branch:
    put, then get): that transaction's revision, unless the key was there already, left by a
    lease this node dropped (etcd was unreachable) and not yet revoked: then the put kept its
    create revision, its place in the queue."""
    return int(queued.responses[1].response_range.kvs[0].create_revision)
