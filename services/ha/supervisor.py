"""One service on this node: its lock session, its start/stop/check work, driven by `policy`.

Each added service has a `ServiceSupervisor`: one asyncio task takes events one at a time (lock
events from its `LockSession`, results of the work it started, commands), asks `policy.decide`
what to do, and runs the actions in order. Long work (start, stop, a status check) runs in its own
task and reports back with an event, so a lost lock or a command is handled while a start script
is still running.

The lock: each service has its own Session stream on the local lock daemon (unix socket), so a
broken stream affects that service only. Takeover order maps to the lock slot range (random ->
slot 0, fifo -> 512, stack -> 1024, the first slot of each wait-order range) and the service's
slot folder number (0-1023) is the lock number; the session label is ``ha:TYPE/SLOT:NAME`` so
`Ha.Status` can tell HA sessions from others on the same lock (e.g. `skyge lock test`).

Start, in order: mount each store, add each floating IP (a gratuitous ARP burst goes out in the
background while the rest continues), `script start` within start_timeout with the lock's
fencing token in SKYGE_FENCING_TOKEN. Stop, in reverse: `script stop` within stop_timeout,
floating IPs down, unmount (within release_timeout); when the lock was lost ("urgent") the
pidfile's process (and its process group) is SIGKILLed and the floating IPs go first, since
another node may be granted the lock within milliseconds. Every step of a stop is
tried even when an earlier one failed; the stop fails if any did. A status check runs `script
status` (status_timeout) and also checks that the floating IPs are up and the stores mounted.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import grpc

from skyge.services.common.clock import boot_ns
from skyge.services.ha import policy
from skyge.services.ha.deadman import Deadman, Registry
from skyge.services.ha.resources import fip as fip_mod
from skyge.services.ha.resources import garp as garp_mod
from skyge.services.ha.resources import store as store_mod
from skyge.services.ha.resources.cgroup import Cgroups
from skyge.services.ha.resources.script import (PidfileError, ProcessWatch, ScriptRunner,
                                                kill_group)
from skyge.services.ha.service_config import TYPE_INDEX, FloatingIp, ServiceConfig, Store
from skyge.v1 import lock_pb2, lock_pb2_grpc

__all__ = [
    "LOCK_SLOTS",
    "GrpcLockSession",
    "LockSession",
    "Resources",
    "ServiceSupervisor",
    "SystemResources",
    "lock_channel",
    "lock_of",
    "parse_label",
    "session_label",
]

#: the lock slot of each takeover order: the first slot of its wait-order range
LOCK_SLOTS = {"random": 0, "fifo": 512, "stack": 1024}
LABEL_PREFIX = "ha:"
OPEN_TIMEOUT_S = 3.0
#: how long closing a lock session waits for its stream and reader to end (see close)
CLOSE_TIMEOUT_S = 1.0
#: how long, after a start, to look for the process of a service's pidfile
PIDFILE_WAIT_S = 2.0
PIDFILE_POLL_S = 0.02
#: how often a start probes again for a floating IP another host still answers for
DAD_RETRY_S = 0.1
#: gRPC options of the channel to the local lock daemon: reconnect fast after it restarts
LOCK_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),
)

logger = logging.getLogger("skyge.ha")

#: a Lock.Session stream (grpc.aio's call objects are generic only to type checkers)
SessionCall: TypeAlias = (
    "grpc.aio.StreamStreamCall[lock_pb2.SessionRequest, lock_pb2.SessionEvent]")


def lock_of(config: ServiceConfig) -> tuple[int, int]:
    """(lock slot, lock number) of a service."""
    return LOCK_SLOTS[config.type], config.slot


def session_label(config: ServiceConfig) -> str:
    """``ha:TYPE/SLOT:NAME``, cut to the 64 characters a lock session label may have."""
    return f"{LABEL_PREFIX}{config.type}/{config.slot}:{config.name}"[:64]


def parse_label(label: str) -> tuple[str, int] | None:
    """(type, slot) of an HA session label, or None for another kind of session."""
    if not label.startswith(LABEL_PREFIX):
        return None
    key, _, _ = label[len(LABEL_PREFIX):].partition(":")
    kind, _, slot = key.partition("/")
    return (kind, int(slot)) if kind in LOCK_SLOTS and slot.isdigit() else None


def lock_channel(socket_path: str | os.PathLike[str]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"unix:{socket_path}", options=LOCK_CHANNEL_OPTIONS)


# --- the lock session ---------------------------------------------------------------------------
class LockSession(Protocol):
    """What a supervisor needs of a lock session (the gRPC one, or a fake in unit tests).
    Events are delivered through the `on_event` callback given at construction."""

    async def attach(self) -> None: ...
    async def acquire(self) -> None: ...
    async def release(self) -> None: ...
    async def close(self) -> None: ...


_FAIL = {lock_pb2.FAIL_TIMEOUT: "timeout", lock_pb2.FAIL_BUSY: "busy",
         lock_pb2.FAIL_NO_QUORUM: "no_quorum", lock_pb2.FAIL_INVALID: "invalid"}
_LOST = {lock_pb2.LOST_NO_QUORUM: "no_quorum", lock_pb2.LOST_NODE_LEFT: "node_left",
         lock_pb2.LOST_AUTHORITY_CHANGE: "authority_change"}


class GrpcLockSession:
    """A Lock.Session stream on the local lock daemon for one lock, opened on first use and
    again after it broke. Lock events become policy events through `on_event`; the end of the
    stream becomes `SessionDown` (every hold and wait of the session is gone with it).

    Sessions are opened with keep_holds: if this daemon dies holding the lock, the lock daemon
    keeps the hold until the restarted daemon's session (same label) adopts it, which becomes
    `Adopted` (`held_by_command()` tells whether the service was stopped there by command)."""

    def __init__(self, channel: grpc.aio.Channel, label: str, slot: int, lock: int,
                 on_event: Callable[[policy.Event], None],
                 held_by_command: Callable[[], bool] = lambda: False,
                 on_valid_until: Callable[[int], None] = lambda until: None) -> None:
        self._stub = lock_pb2_grpc.LockStub(channel)
        self.label, self.slot, self.lock = label, slot, lock
        self._on_event = on_event
        self._held_by_command = held_by_command
        #: told every ownership deadline (Granted, Opened.adopted, Renewed), before the event
        self._on_valid_until = on_valid_until
        self._call: SessionCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        self.session_id = 0

    @property
    def open(self) -> bool:
        return self._call is not None

    async def _open(self) -> bool:
        """Open the stream (once, whoever asks first); True if it adopted this lock."""
        async with self._opening:
            if self._call is not None:
                return False
            call = self._stub.Session(None)
            try:
                await call.write(lock_pb2.SessionRequest(open=lock_pb2.Open(
                    label=self.label, client_pid=os.getpid(), keep_holds=True)))
                first = await asyncio.wait_for(call.read(), OPEN_TIMEOUT_S)
            except BaseException:
                call.cancel()
                raise
            # (the stream's end, grpc.aio.EOF, is no SessionEvent)
            if not isinstance(first, lock_pb2.SessionEvent) or \
                    first.WhichOneof("event") != "opened":
                call.cancel()
                raise ConnectionError(f"lock daemon did not open the session (got {first!r})")
            self.session_id = first.opened.session_id
            self._call = call
            if self._reader is not None:
                self._reader.cancel()  # the broken stream's reader, if still reading
            self._reader = asyncio.create_task(self._read(call), name=f"lock-{self.label}")
            adopted = next((g for g in first.opened.adopted
                            if (g.slot, g.lock) == (self.slot, self.lock)), None)
            if adopted is not None:
                self._on_valid_until(adopted.valid_until_boot_ns)
                self._on_event(policy.Adopted(adopted.fencing_token, self._held_by_command()))
            return adopted is not None

    async def attach(self) -> None:
        """Open the session now (at daemon start), to adopt a hold kept for this service."""
        if self._call is None:
            # no lock daemon: nothing was kept; acquire() reports it when asked
            with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError, ConnectionError,
                                     OSError):
                await self._open()

    async def _read(self, call: SessionCall) -> None:
        detail = "stream ended"
        try:
            while True:
                event = await call.read()
                if not isinstance(event, lock_pb2.SessionEvent):  # grpc.aio.EOF
                    break
                mapped = self._map(event)
                if mapped is not None:
                    self._on_event(mapped)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as error:
            detail = f"{error.code().name}: {error.details()}"
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
        if self._call is call:
            self._call = None
            self._on_event(policy.SessionDown(detail))

    def _map(self, event: lock_pb2.SessionEvent) -> policy.Event | None:
        kind = event.WhichOneof("event")
        body = getattr(event, kind) if kind else None
        if kind == "renewed":  # the session's every hold: this one's too
            self._on_valid_until(event.renewed.valid_until_boot_ns)
            return None
        if body is None or kind == "opened" or (body.slot, body.lock) != (self.slot, self.lock):
            return None
        if kind == "granted":
            self._on_valid_until(body.valid_until_boot_ns)
            return policy.Granted(body.fencing_token)
        if kind == "queued":
            return policy.Queued(body.position)
        if kind == "failed":
            return policy.AcquireFailed(_FAIL.get(body.reason, "unknown"), body.detail)
        if kind == "released":
            return policy.Released()
        if kind == "lost":
            return policy.Lost(_LOST.get(body.reason, "unknown"), body.detail)
        return None

    async def _write(self, request: lock_pb2.SessionRequest) -> None:
        assert self._call is not None
        try:
            await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as error:
            call, self._call = self._call, None
            if call is not None:
                call.cancel()
                self._on_event(policy.SessionDown(f"write failed: {error}"))

    async def acquire(self) -> None:
        if self._call is None:
            try:
                if await self._open():
                    return  # adopted: held already
            except (TimeoutError, grpc.aio.AioRpcError, ConnectionError, OSError) as error:
                if isinstance(error, grpc.aio.AioRpcError):
                    detail = ("the local skyge-lock is unreachable"
                              if error.code() == grpc.StatusCode.UNAVAILABLE
                              else f"{error.code().name}: {error.details()}")
                else:
                    detail = str(error) or type(error).__name__
                self._on_event(policy.SessionDown(f"cannot open a lock session: {detail}"))
                return
        await self._write(lock_pb2.SessionRequest(acquire=lock_pb2.Acquire(
            slot=self.slot, lock=self.lock)))

    async def release(self) -> None:
        if self._call is None:  # no session: nothing held nor awaited
            self._on_event(policy.Released())
            return
        await self._write(lock_pb2.SessionRequest(release=lock_pb2.Release(
            slot=self.slot, lock=self.lock)))

    async def close(self) -> None:
        """End the stream. Bounded: a grpc.aio read of a cancelled call has been seen never to
        return, and a daemon's stop must not wait on it."""
        call, self._call = self._call, None
        if call is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await call.done_writing()
            call.cancel()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader}, timeout=CLOSE_TIMEOUT_S)


# --- resources ----------------------------------------------------------------------------------
class Resources(Protocol):
    async def mount(self, store: Store) -> None: ...
    async def unmount(self, store: Store, mode: str) -> None: ...
    async def mounted(self, store: Store) -> bool: ...
    async def add_fip(self, fip: FloatingIp) -> None: ...
    async def remove_fip(self, fip: FloatingIp) -> None: ...
    async def fip_present(self, fip: FloatingIp) -> bool: ...
    async def announce(self, fip: FloatingIp) -> None: ...
    async def answered_by(self, fip: FloatingIp) -> str | None:
        """Another host's MAC if one answers for the floating IP already (else None)."""
    def remove_fip_now(self, fip: FloatingIp) -> None:
        """Remove at once, from any thread (the deadman's)."""


class SystemResources:
    """The real thing: netlink floating IPs, raw-socket gratuitous ARP, mount(2).

    `dad_timeout_s`: how long an ARP probe waits for another host claiming a floating IP before
    it is added (0: no probe)."""

    def __init__(self, dad_timeout_s: float = 0.0) -> None:
        self.dad_timeout_s = dad_timeout_s

    async def mount(self, store: Store) -> None:
        await store_mod.mount_async(store)

    async def unmount(self, store: Store, mode: str) -> None:
        await store_mod.unmount_async(store, mode=mode)

    async def mounted(self, store: Store) -> bool:
        return await asyncio.to_thread(store_mod.mounted, store)

    async def add_fip(self, fip: FloatingIp) -> None:
        await fip_mod.add(fip)

    async def remove_fip(self, fip: FloatingIp) -> None:
        await fip_mod.remove(fip)

    async def fip_present(self, fip: FloatingIp) -> bool:
        return await fip_mod.present(fip)

    async def announce(self, fip: FloatingIp) -> None:
        await garp_mod.announce(fip.nic, fip.ip)

    def remove_fip_now(self, fip: FloatingIp) -> None:
        fip_mod.remove_sync(fip)

    async def answered_by(self, fip: FloatingIp) -> str | None:
        if self.dad_timeout_s <= 0:
            return None
        return await asyncio.to_thread(garp_mod.answered_by, fip.nic, fip.ip, self.dad_timeout_s)


RESOURCE_ERRORS = (store_mod.StoreError, fip_mod.FipError, garp_mod.GarpError, OSError)


class AddressTaken(fip_mod.FipError):
    """Another host still answers for a floating IP after start_timeout (see
    `_wait_address_free`)."""


class OwnershipExpired(Exception):
    """The lock's ownership deadline passed before an irreversible step of a start."""


async def _finish_then_cancel(awaitable: Awaitable[object]) -> object:
    """Await work that cannot be interrupted halfway (a mount in a thread): on cancellation,
    let it finish first so the stop that follows sees the mount, then re-raise."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


# --- the supervisor -----------------------------------------------------------------------------
@dataclass
class Change:
    """A state change of a supervised service (for the log, the state bus and watchers)."""

    supervisor: ServiceSupervisor
    previous: str
    state: str
    reason: str


class ServiceSupervisor:
    """Runs one service on this node according to `policy` (see the module doc)."""

    def __init__(self, config: ServiceConfig, *, domain: int,
                 session_factory: Callable[[ServiceSupervisor], LockSession],
                 resources: Resources | None = None, log_dir: str | os.PathLike[str] | None = None,
                 on_change: Callable[[Change], None] | None = None,
                 on_forget: Callable[[ServiceSupervisor], None] | None = None,
                 on_reboot: Callable[[str], Coroutine[Any, Any, None]] | None = None,
                 deadman: Deadman | None = None, registry: Registry | None = None,
                 cgroups: Cgroups | None = None) -> None:
        self.config = config
        self.domain = domain
        #: the service's own cgroup (see resources/cgroup.py), None where the host has none
        self.cgroup = cgroups.for_service(config.type, config.slot) if cgroups else None
        self.resources: Resources = resources or SystemResources()
        self.log_path = (Path(log_dir) / f"{config.type}-{config.slot}-{config.name}.log"
                         if log_dir is not None else None)
        self.runner = ScriptRunner(config, domain=domain, log_path=self.log_path,
                                   cgroup=self.cgroup)
        self.state = policy.State()
        self.since_unix_ns = time.time_ns()
        self._on_change = on_change
        self._on_forget = on_forget
        self._on_reboot = on_reboot
        self._session_factory = session_factory
        self.session: LockSession | None = None
        self._queue: asyncio.Queue[tuple[policy.Event, asyncio.Future | None]] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._start_task: asyncio.Task | None = None
        self._stop_task: asyncio.Task | None = None
        self._check_task: asyncio.Task | None = None
        self._retry_task: asyncio.Task | None = None
        self._expiry_task: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self.forgotten = False
        self.last_start_ms: float | None = None
        self._granted_at = 0.0
        #: time.monotonic() the current run came up (RUNNING), 0 outside a run
        self._running_since = 0.0
        self._process_watch: ProcessWatch | None = None
        self._watch_task: asyncio.Task | None = None
        #: ownership: the lock's valid_until (CLOCK_BOOTTIME ns; 0 = not told, e.g. no lock
        #: daemon deadline) and the thread that stops the service there unless renewed
        self.valid_until_ns = 0
        self._fired_until_ns = 0  # the deadline the deadman last fired at
        self.deadman = deadman
        self.registry = registry  # the same, for the backstop process (see deadman.py)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the process group of the last `script start`: what it left running (pidfile or not)
        self._start_group = 0
        #: user heartbeat: time.monotonic() by which the next pulse is due (0: not armed)
        self.pulse_deadline = 0.0
        self._pulse_task: asyncio.Task | None = None
        self._announcing: set[asyncio.Task[None]] = set()  # gratuitous ARP bursts under way
        #: force_reboot runs of the reboot command (cancelled by `close`)
        self._reboots: set[asyncio.Task[None]] = set()
        #: the close of a removed service's session (awaited by `close`, never cut short)
        self._forgetting: asyncio.Task[None] | None = None

    # -- identity
    @property
    def key(self) -> tuple[str, int]:
        return self.config.key

    @property
    def name(self) -> str:
        return f"{self.config.name} ({self.config.type}/{self.config.slot})"

    @property
    def settings(self) -> policy.Settings:
        c = self.config
        return policy.Settings(check_interval_s=float(c.check_interval),
                               check_failures=c.check_failures, restarts=c.restarts,
                               backoff_s=float(c.failure_backoff),
                               backoff_max_s=float(c.failure_backoff_max),
                               force_reboot=c.force_reboot,
                               failure_timeout_s=float(c.failure_timeout))

    def reload(self, config: ServiceConfig) -> None:
        """Take a new service.cfg (only while nothing runs or waits here)."""
        self.config = config
        self.runner = ScriptRunner(config, domain=self.domain, log_path=self.log_path,
                                   cgroup=self.cgroup)

    # -- life
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"ha-{self.config.type}-"
                                                           f"{self.config.slot}")

    def post(self, event: policy.Event) -> None:
        """Hand an event to the supervisor (from any task of the loop)."""
        if isinstance(event, policy.Granted):
            self._granted_at = time.monotonic()
        self._queue.put_nowait((event, None))

    async def command(self, action: str, timeout: float | None = None) -> tuple[str | None, str]:
        """Apply a command; wait until its work is done (bounded by `timeout`, default: the
        service's start + stop + release timeouts). Returns (refusal or None, message)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((policy.Command(action), future))
        refused, message = await future
        if refused is None:
            limit = timeout if timeout is not None else (
                self.config.start_timeout + self.config.stop_timeout +
                self.config.release_timeout + 10.0)
            if not await self.wait_settled(limit):
                message += f" (still {self.state.state_name} after {limit:g} s)"
        return refused, message

    async def wait_settled(self, timeout: float) -> bool:
        return await self.wait_until(lambda: policy.settled(self.state), timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most `timeout` s) until `predicate()` holds after an event; False if not."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._changed.clear()
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancel that meets
            # the event, and this loop would then outlive the task's cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()
        return True

    async def close(self) -> None:
        """Stop the supervisor's tasks and its session (the service is left as it is)."""
        if self._forgetting is not None:  # removed: its session ends as `_close_later` says
            await asyncio.gather(self._forgetting, return_exceptions=True)
        watches = (self._watch_task, self._pulse_task)
        self._end_run_watches()
        self._close_process_watch()
        if self.deadman is not None:
            self.deadman.disarm(self)  # the daemon stops: its session's holds end with it
        tasks = (self._start_task, self._stop_task, self._check_task, self._retry_task,
                 self._expiry_task, self._task, *watches, *self._announcing, *self._reboots)
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- the event loop
    async def _run(self) -> None:
        while True:
            event, future = await self._queue.get()
            try:
                await self._handle(event, future)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.exception("service %s: handling %r failed", self.name, event)
                if future is not None and not future.done():
                    future.set_result((f"internal error: {error}", ""))

    async def _handle(self, event: policy.Event, future: asyncio.Future | None) -> None:
        before = self.state
        decision = policy.decide(before, event, self.settings)
        self.state = decision.state
        if future is not None and not future.done():
            future.set_result((decision.refused, decision.message))
        if before.state_name != self.state.state_name:
            self.since_unix_ns = time.time_ns()
        running = self.state.phase is policy.Phase.RUNNING
        if running and (before.phase is not policy.Phase.RUNNING or before.run != self.state.run):
            self._begin_run_watches()
        elif not running and before.phase is policy.Phase.RUNNING:
            self._end_run_watches()
        if (before.state_name, before.reason, before.holding) != (
                self.state.state_name, self.state.reason, self.state.holding) and \
                self._on_change is not None:
            self._on_change(Change(self, before.state_name, self.state.state_name,
                                   self.state.reason))
        self._guard_ownership()
        for action in decision.actions:
            await self._execute(action)
        self._changed.set()

    async def _execute(self, action: policy.Action) -> None:
        if isinstance(action, policy.Acquire):
            if self.session is None:
                self.session = self._session_factory(self)
            await self.session.acquire()
        elif isinstance(action, policy.Release):
            if self.session is None:
                self.post(policy.Released())
            else:
                await self.session.release()
        elif isinstance(action, policy.Start):
            self._start_task = asyncio.create_task(
                self._do_start(action.token, action.adopt, action.unmanaged))
        elif isinstance(action, policy.CancelStart):
            await self._cancel(self._start_task)
        elif isinstance(action, policy.Stop):
            await self._cancel(self._check_task)
            await self._cancel(self._start_task)  # (a start being cleaned up is finished)
            self._stop_task = asyncio.create_task(self._do_stop(action.urgent))
        elif isinstance(action, policy.ScheduleCheck):
            self._check_task = asyncio.create_task(self._do_check(action.run, action.delay_s))
        elif isinstance(action, policy.CancelCheck):
            await self._cancel(self._check_task)
        elif isinstance(action, policy.ScheduleRetry):
            await self._cancel(self._retry_task)
            self._retry_task = asyncio.create_task(self._later(action.delay_s,
                                                               policy.RetryAcquire()))
        elif isinstance(action, policy.ExpireFailureLater):
            await self._cancel(self._expiry_task)
            self._expiry_task = asyncio.create_task(self._later(
                action.delay_s, policy.FailureExpired(action.run)))
        elif isinstance(action, policy.Reboot):
            logger.critical("service %s: %s", self.name, action.reason)
            if self._on_reboot is not None:
                task = asyncio.create_task(self._on_reboot(action.reason))
                self._reboots.add(task)
                task.add_done_callback(self._reboots.discard)
        elif isinstance(action, policy.Forget):
            self.forgotten = True
            if self.session is not None:
                session, self.session = self.session, None
                self._forgetting = asyncio.create_task(self._close_later(session))
            if self._on_forget is not None:
                self._on_forget(self)
        else:  # pragma: no cover
            raise TypeError(f"unknown action {action!r}")

    async def _close_later(self, session: LockSession) -> None:
        await self.wait_settled(2.0)  # let an outstanding Release be answered first
        await session.close()

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _later(self, delay: float, event: policy.Event) -> None:
        await asyncio.sleep(delay)
        self.post(event)

    # -- ownership deadline
    def valid_until(self, until_ns: int) -> None:
        """The lock daemon's word: this node's hold is safe until `until_ns` (grows only)."""
        if until_ns > self.valid_until_ns:
            self.valid_until_ns = until_ns
            self._guard_ownership()

    def _guard_ownership(self) -> None:
        """The deadman guards the service while this node holds its lock."""
        if self.deadman is None:
            return
        key = f"{self.config.type}/{self.config.slot}"
        if self.state.holding and self.valid_until_ns > self._fired_until_ns:
            self.deadman.arm(self, self.valid_until_ns)
            if self.registry is not None:
                self.registry.put(key, self.name, self._groups(), [
                    {"nic": f.nic, "ip": f.ip, "netmask": f.netmask, "broadcast": f.broadcast,
                     "label": f.label} for f in self.config.fips],
                    str(self.cgroup.path) if self.cgroup is not None else "")
        else:
            self.deadman.disarm(self)
            if self.registry is not None:
                self.registry.remove(key)
            if not self.state.holding:
                self.valid_until_ns = 0

    def _groups(self) -> list[int]:
        """The process groups the service runs in, as far as known: the one `script start`
        ran in and the pidfile's process's when it leads one."""
        groups = [self._start_group] if self._start_group else []
        watch = self._process_watch
        if watch is not None and not watch.dead:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(watch.pid) == watch.pid:
                    groups.append(watch.pid)
        return groups

    def _check_owned(self, step: str) -> None:
        """Before an irreversible step: the hold must still be safe for a while."""
        if self.deadman is None or not self.valid_until_ns:
            return
        now = boot_ns()
        if self.valid_until_ns - now < self.deadman.margin_ns:  # a renewal the loop has not
            self.valid_until(self.deadman.lease_on_file())      # taken yet is on file
        left_ns = self.valid_until_ns - now
        if left_ns < self.deadman.margin_ns:
            raise OwnershipExpired(f"not done: {step} would come {-left_ns / 1e6:.0f} ms after "
                                   f"the lock's ownership deadline" if left_ns < 0 else
                                   f"not done: {step}: the lock's ownership ends in "
                                   f"{left_ns / 1e6:.0f} ms with no renewal")

    def stop_now(self) -> list[str]:
        """The deadman's stop, from its thread: SIGKILL of the service's process groups, then
        its floating IPs removed (the urgent stop that follows runs `script stop`). It fires
        once per deadline: until a renewal, the loop's state changes do not arm it again."""
        self._fired_until_ns = self.valid_until_ns
        done = []
        if self.cgroup is not None and (killed := self.cgroup.kill()):
            done.append(f"killed {killed} processes of its cgroup")
        if self._process_watch is not None and self._process_watch.kill():
            done.append(f"killed process {self._process_watch.pid} ({self.config.pidfile})")
        if self._start_group and kill_group(self._start_group):
            done.append(f"killed process group {self._start_group} (script start)")
        for fip in reversed(self.config.fips):
            try:
                self.resources.remove_fip_now(fip)
                done.append(f"removed {fip.ip}")
            except RESOURCE_ERRORS as error:
                done.append(f"{fip.ip} not removed: {error}")
        return done

    def expired(self, detail: str) -> None:
        """From the deadman's thread: the hold's deadline passed (see `policy.Expired`)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.post, policy.Expired(detail))

    # -- work
    async def attach(self) -> None:
        """Open the lock session now (daemon start): a hold kept across a restart of this
        daemon is adopted (`Adopted`) before anything else is asked."""
        if self.session is None:
            self.session = self._session_factory(self)
        await self.session.attach()

    async def _do_start(self, token: int, adopt: bool = False, unmanaged: bool = False) -> None:
        c = self.config
        began = time.monotonic()
        if unmanaged:  # maintenance: whatever runs here is taken as it is
            self.post(policy.StartDone(True, "adopted as it is"))
            return
        try:
            for store in c.stores:
                if not (adopt and await self.resources.mounted(store)):
                    self._check_owned(f"mount {store.mountpoint}")
                    await _finish_then_cancel(self.resources.mount(store))
            for fip in c.fips:
                if adopt and await self.resources.fip_present(fip):
                    continue
                await self._wait_address_free(fip)
                self._check_owned(f"add {fip.ip}")
                await self.resources.add_fip(fip)
                self._announcing.add(asyncio.create_task(self._announce(fip)))
            if adopt:
                status = await self.runner.status(token)
                if status.ok:
                    self.last_start_ms = (time.monotonic() - began) * 1000
                    self.post(policy.StartDone(True, "adopted: already running"))
                    return
            if c.fips:
                logger.info("service %s: floating IPs up %.1f ms after the grant (%s)", self.name,
                            (time.monotonic() - (self._granted_at or began)) * 1000,
                            ", ".join(f"{f.cidr} {f.label}" for f in c.fips))
            self._check_owned("script start")
            if self.cgroup is not None and (stale := self.cgroup.kill()):
                logger.warning("service %s: %d processes of an earlier run were left in its "
                               "cgroup: killed before the start", self.name, stale)
            result = await self.runner.start(token)
        except OwnershipExpired as error:
            self.post(policy.Expired(str(error)))
            return
        except AddressTaken as error:
            self.post(policy.StartDone(False, str(error), address_taken=True))
            return
        except RESOURCE_ERRORS as error:
            self.post(policy.StartDone(False, str(error)))
            return
        if result.pid:
            self._start_group = result.pid
            self._guard_ownership()  # the backstop learns the group
        self.last_start_ms = (time.monotonic() - began) * 1000
        self.post(policy.StartDone(result.ok, result.reason))

    async def _wait_address_free(self, fip: FloatingIp) -> None:
        """Duplicate address detection: while another host answers ARP for the floating IP (a
        node frozen or cut off with its copy still up: its kernel answers), wait, probing every
        DAD_RETRY_S, holding the lock, at most start_timeout; then the lock is given back and
        asked for again (AddressTaken: not a failure of this node)."""
        claimant = await self.resources.answered_by(fip)
        if claimant is None:
            return
        logger.warning("service %s: %s already answers for %s on %s: waiting until it is free "
                       "before adding it", self.name, claimant, fip.ip, fip.nic)
        deadline = time.monotonic() + self.config.start_timeout
        while claimant is not None:
            if time.monotonic() >= deadline:
                raise AddressTaken(
                    f"{fip.ip} not added: {claimant} still answers for it on {fip.nic} after "
                    f"{self.config.start_timeout} s (another host holds it)")
            await asyncio.sleep(DAD_RETRY_S)
            self._check_owned(f"add {fip.ip}")
            claimant = await self.resources.answered_by(fip)
        logger.info("service %s: %s is free now", self.name, fip.ip)

    async def _announce(self, fip: FloatingIp) -> None:
        try:
            self._check_owned(f"gratuitous ARP for {fip.ip}")
            await self.resources.announce(fip)
        except (OwnershipExpired, *RESOURCE_ERRORS) as error:
            logger.warning("service %s: gratuitous ARP for %s failed: %s", self.name, fip.ip,
                           error)
        finally:
            self._announcing.discard(asyncio.current_task())

    async def _remove_fips(self, errors: list[str]) -> None:
        for fip in reversed(self.config.fips):
            try:
                await self.resources.remove_fip(fip)
            except RESOURCE_ERRORS as error:
                errors.append(str(error))

    async def _do_stop(self, urgent: bool) -> None:
        c = self.config
        errors: list[str] = []
        if urgent:
            # another node may be granted the lock within milliseconds: the main process (and
            # its group) dies first, the floating IPs go, then the script cleans up
            if self._process_watch is not None and self._process_watch.kill():
                logger.warning("service %s: lock gone: killed process %d (%s)", self.name,
                               self._process_watch.pid, c.pidfile)
            if self._start_group and kill_group(self._start_group):
                logger.warning("service %s: lock gone: killed process group %d (what script "
                               "start left running)", self.name, self._start_group)
            if self.cgroup is not None and (killed := self.cgroup.kill()):
                logger.warning("service %s: lock gone: killed the %d processes of its cgroup",
                               self.name, killed)
            await self._remove_fips(errors)
        self._start_group = 0
        result = await self.runner.stop(self.state.token)
        if not result.ok:
            errors.append(result.reason)
        if self.cgroup is not None and (killed := self.cgroup.kill()):
            logger.warning("service %s: script stop left %d processes running in the service's "
                           "cgroup: killed", self.name, killed)
        if self.cgroup is not None:
            self.cgroup.remove()
        if not urgent:
            await self._remove_fips(errors)
        for store in reversed(c.stores):
            try:
                await asyncio.wait_for(self.resources.unmount(store, c.umount),
                                       c.release_timeout)
            except TimeoutError:
                errors.append(f"unmount {store.mountpoint}: not done in {c.release_timeout} s")
            except RESOURCE_ERRORS as error:
                errors.append(str(error))
        self._close_process_watch()
        self.post(policy.StopDone(not errors, "; ".join(errors) or result.reason))

    async def _do_check(self, run: int, delay: float) -> None:
        await asyncio.sleep(delay)
        result = await self.runner.status(self.state.token)
        ok, reason = result.ok, result.reason
        if ok and self.config.pidfile and self._process_watch is None:
            try:
                self._watch_process(run)
            except PidfileError as error:
                ok, reason = False, f"pidfile: {error}"
        if ok:
            try:
                for fip in self.config.fips:
                    if not await self.resources.fip_present(fip):
                        ok, reason = False, f"floating IP {fip.cidr} is not on {fip.nic}"
                        break
                for store in self.config.stores if ok else ():
                    if not await self.resources.mounted(store):
                        ok, reason = False, f"{store.device} is not mounted on {store.mountpoint}"
                        break
            except RESOURCE_ERRORS as error:
                ok, reason = False, str(error)
        self.post(policy.CheckDone(run, ok, reason, self.uptime_s))

    # -- watches of a run: the main process (pidfile) and the user heartbeat (pulses)
    @property
    def uptime_s(self) -> float:
        """How long the current run has been up (0 outside a run)."""
        return time.monotonic() - self._running_since if self._running_since else 0.0

    def _begin_run_watches(self) -> None:
        self._end_run_watches()
        self._close_process_watch()
        self._running_since = time.monotonic()
        if self.config.pidfile:
            self._watch_task = asyncio.create_task(self._find_process(self.state.run))

    def _end_run_watches(self) -> None:
        """The run is over: no more pulses or pidfile search. The process watch stays open
        until the stop is done (an urgent stop kills the process through it)."""
        self._running_since = 0.0
        self.pulse_deadline = 0.0
        for task in (self._watch_task, self._pulse_task):
            if task is not None and not task.done():
                task.cancel()
        self._watch_task = self._pulse_task = None

    def _close_process_watch(self) -> None:
        if self._process_watch is not None:
            self._process_watch.close()
            self._process_watch = None

    async def _find_process(self, run: int) -> None:
        """Watch the pidfile's process; a start script may write the file a little after it
        returns, so look for a while (the status checks keep looking after that)."""
        deadline = time.monotonic() + PIDFILE_WAIT_S
        while True:
            try:
                self._watch_process(run)
                return
            except PidfileError as error:
                if time.monotonic() >= deadline:
                    logger.warning("service %s: %s (looked for %g s; the status checks look "
                                   "again)", self.name, error, PIDFILE_WAIT_S)
                    return
            await asyncio.sleep(PIDFILE_POLL_S)

    def _watch_process(self, run: int) -> None:
        watch = ProcessWatch.from_pidfile(self.config.pidfile)
        self._process_watch = watch
        self._guard_ownership()  # the backstop learns its group
        logger.info("service %s: watching process %d (%s)", self.name, watch.pid,
                    self.config.pidfile)
        watch.add_callback(lambda pid: self.post(policy.Failed(
            run, f"process {pid} ({self.config.pidfile}) died", self.uptime_s)))

    def pulse(self) -> float:
        """A user heartbeat: (re)arm the pulse timer; returns the new deadline (monotonic).
        Raises LookupError when the service does not run here, ValueError when it has no
        pulse_timeout_ms."""
        if not self.config.pulse_timeout_ms:
            raise ValueError(f"{self.name} has pulse_timeout_ms 0 (user heartbeat off)")
        if self.state.phase is not policy.Phase.RUNNING:
            raise LookupError(f"{self.name} does not run on domain {self.domain} "
                              f"({self.state.state_name} here)")
        self.pulse_deadline = time.monotonic() + self.config.pulse_timeout_ms / 1000
        if self._pulse_task is None or self._pulse_task.done():
            self._pulse_task = asyncio.create_task(self._pulse_timer(self.state.run))
        return self.pulse_deadline

    async def _pulse_timer(self, run: int) -> None:
        while True:
            left = self.pulse_deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(left)
        self.post(policy.Failed(run, f"no user heartbeat (pulse) for "
                                     f"{self.config.pulse_timeout_ms} ms", self.uptime_s))

    # -- views
    def snapshot(self) -> dict:
        s = self.state
        return {"type": self.config.type, "slot": self.config.slot, "name": self.config.name,
                "domain": self.domain, "state": s.state_name, "since_unix_ns": self.since_unix_ns,
                "reason": s.reason, "holds_lock": s.holding,
                "fencing_token": s.token if s.holding else 0,
                "failed_checks": s.failed_checks, "fail_count": s.fail_count,
                "unmanaged": s.unmanaged, "last_start_ms": round(self.last_start_ms or 0)}


def by_key(supervisors: Iterable[ServiceSupervisor]) -> list[ServiceSupervisor]:
    return sorted(supervisors, key=lambda s: (TYPE_INDEX[s.config.type], s.config.slot))
