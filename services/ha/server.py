"""The Ha and HaPeer gRPC servicers: thin, over `HaApp` (daemon.py) and its supervisors.

Any node answers for the whole cluster:

- ``Query`` / ``Command`` naming another domain are forwarded to that domain's HA daemon (over
  `PeerChannels`: every heartbeat path, up paths first); UNAVAILABLE when it is not a member.
- ``Status`` merges two sources: the lock table (the local lock daemon's ListLocks of the three HA
  slots: who holds each service's lock, who waits and in which order) and every member's own view
  of its services (``HaPeer.NodeStatus``: state, since, reason, failure counts). The holder is
  where the service runs; its waiters, in lock order, are the takeover order. When the lock
  daemon does not answer, the nodes' own views stand in (waiters then in domain order).
- ``WatchStatus``: a snapshot, then the services whose status changed, recomputed at once on a
  local change or a membership change and at least every `WATCH_POLL_S`.
- ``StopAll``: phase 1 every member leaves the lock queues (so nothing is taken over), phase 2
  every member stops what it runs and releases the locks.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol, TypeVar

import grpc

from skyge.services.common.config import ConfigError
from skyge.services.common.membership import PeerChannels
from skyge.services.common.text import excerpt
from skyge.services.ha import policy
from skyge.services.ha.service_config import TYPE_INDEX, TYPES, ServiceConfig
from skyge.services.ha.supervisor import LOCK_SLOTS, ServiceSupervisor, parse_label
from skyge.v1 import ha_pb2 as pb, ha_pb2_grpc, lock_pb2, lock_pb2_grpc

__all__ = ["WATCH_POLL_S", "HaNode", "HaPeerServicer", "HaServicer"]

WATCH_POLL_S = 0.5
PEER_TIMEOUT_S = 2.0
LOCK_TIMEOUT_S = 2.0

TYPE_PB = {"random": pb.TAKEOVER_RANDOM, "fifo": pb.TAKEOVER_FIFO, "stack": pb.TAKEOVER_STACK}
PB_TYPE = {v: k for k, v in TYPE_PB.items()}
STATE_PB = {"stopped": pb.SERVICE_STOPPED, "waiting": pb.SERVICE_WAITING,
            "starting": pb.SERVICE_STARTING, "running": pb.SERVICE_RUNNING,
            "stopping": pb.SERVICE_STOPPING, "released": pb.SERVICE_RELEASED,
            "failed": pb.SERVICE_FAILED}
ACTIONS = {pb.ACTION_ADD: "add", pb.ACTION_START: "start", pb.ACTION_STOP: "stop",
           pb.ACTION_RELEASE: "release", pb.ACTION_REMOVE: "remove", pb.ACTION_SWITCH: "switch"}
Key = tuple[str, int]
Stub = TypeVar("Stub")
Context = grpc.aio.ServicerContext


class HaNode(Protocol):
    """What the servicers need of the HA daemon of this node (`daemon.HaApp`, which builds them):
    its services and commands on them, the membership, the local lock daemon's channel."""

    @property
    def domain(self) -> int: ...
    @property
    def services(self) -> Mapping[Key, ServiceSupervisor]: ...
    @property
    def maintenance(self) -> bool: ...
    @property
    def refusing_new(self) -> bool: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def lock_channel(self) -> grpc.aio.Channel | None: ...
    @property
    def channels(self) -> PeerChannels:
        """Channels to the peers' HA daemons."""
    @property
    def listeners(self) -> list[Callable[[], None]]:
        """Called after every state or membership change (WatchStatus adds itself)."""
    @property
    def logger(self) -> logging.Logger: ...

    def sorted_services(self) -> list[ServiceSupervisor]: ...
    def members(self) -> list[int]: ...
    def add(self, type: str, slot: int) -> tuple[ServiceSupervisor, bool]: ...
    def record_intent(self, config: ServiceConfig, action: str) -> None: ...
    async def stop_local(self, waiting_only: bool) -> None: ...
    async def set_refuse_new(self, refuse: bool, reason: str) -> int: ...
    async def set_maintenance(self, on: bool) -> None: ...


def config_pb(config: ServiceConfig, domain: int) -> pb.ServiceConfig:
    return pb.ServiceConfig(
        type=TYPE_PB[config.type], slot=config.slot, name=config.name, desc=config.desc,
        script=config.script,
        fips=[pb.FloatingIp(nic=f.nic, ip=f.ip, netmask=f.netmask, broadcast=f.broadcast,
                            label=f.label) for f in config.fips],
        stores=[pb.Store(array_ip=s.array_ip, device=s.device, mountpoint=s.mountpoint,
                         mode=s.mode, user=s.user, group=s.group) for s in config.stores],
        start_timeout_s=config.start_timeout, stop_timeout_s=config.stop_timeout,
        release_timeout_s=config.release_timeout, onstart=config.onstart,
        check_interval_s=config.check_interval, check_failures=config.check_failures,
        force_load=config.force_load, force_reboot=config.force_reboot,
        pulse_timeout_ms=config.pulse_timeout_ms, pidfile=config.pidfile, domain=domain,
        config_path=config.path, restarts=config.restarts,
        failure_backoff_s=config.failure_backoff,
        failure_backoff_max_s=config.failure_backoff_max,
        failure_timeout_s=config.failure_timeout)


def node_status_pb(supervisor: ServiceSupervisor) -> pb.NodeServiceStatus:
    snap = supervisor.snapshot()
    return pb.NodeServiceStatus(
        domain=snap["domain"], state=STATE_PB[snap["state"]], since_unix_ns=snap["since_unix_ns"],
        reason=snap["reason"], holds_lock=snap["holds_lock"], fencing_token=snap["fencing_token"],
        failed_checks=snap["failed_checks"], fail_count=snap["fail_count"],
        unmanaged=snap["unmanaged"], last_start_ms=snap["last_start_ms"])


def local_service_pb(supervisor: ServiceSupervisor) -> pb.LocalService:
    return pb.LocalService(config=config_pb(supervisor.config, supervisor.domain),
                           status=node_status_pb(supervisor))


def _sort_key(key: Key) -> tuple[int, int]:
    return TYPE_INDEX[key[0]], key[1]


def merge_status(nodes: dict[int, list[pb.LocalService]],
                 locks: dict[Key, lock_pb2.LockState] | None,
                 only: Key | None = None) -> list[pb.ServiceStatus]:
    """The cluster-wide status of every service from the members' views and the lock table."""
    per_key: dict[Key, dict[int, pb.LocalService]] = {}
    for domain, services in nodes.items():
        for local in services:
            key = (PB_TYPE[local.config.type], local.config.slot)
            per_key.setdefault(key, {})[domain] = local
    if locks:
        for key, held in locks.items():  # a held lock of a node whose HA did not answer
            holders = [*([held.holder] if held.HasField("holder") else []), *held.waiters]
            if any(parse_label(h.label) == key for h in holders):
                per_key.setdefault(key, {})
    result = []
    for key in sorted(per_key, key=_sort_key):
        if only is not None and key != only:
            continue
        views = per_key[key]
        statuses = {d: v.status for d, v in views.items()}
        name = next((v.config.name for v in views.values()), "")
        holder, waiting, lock_token = 0, [], 0
        lock = locks.get(key) if locks is not None else None
        if lock is not None:
            if lock.HasField("holder") and parse_label(lock.holder.label) == key:
                holder, lock_token = lock.holder.node.domain, lock.holder.fencing_token
                if not name:
                    name = lock.holder.label.partition(":")[2].partition(":")[2]
            waiting = [w.node.domain for w in lock.waiters if parse_label(w.label) == key]
        elif locks is None:  # no lock table: the nodes' own views
            holder = next((d for d, s in sorted(statuses.items()) if s.holds_lock), 0)
            waiting = [d for d, s in sorted(statuses.items()) if s.state == pb.SERVICE_WAITING]
        out = pb.ServiceStatus(type=TYPE_PB[key[0]], slot=key[1], name=name,
                               active_domain=holder, waiting_domains=waiting,
                               fail_count=sum(s.fail_count for s in statuses.values()),
                               nodes=[statuses[d] for d in sorted(statuses)])
        if holder:
            mine = statuses.get(holder)
            if mine is None:
                out.state, out.reason = pb.SERVICE_RUNNING, (
                    f"domain {holder} holds the lock (its HA daemon did not answer)")
                out.fencing_token = lock_token
            else:
                state = mine.state
                if state in (pb.SERVICE_WAITING, pb.SERVICE_RELEASED):
                    state = pb.SERVICE_STARTING  # granted, not seen by its supervisor yet
                out.state, out.reason, out.since_unix_ns = state, mine.reason, mine.since_unix_ns
                out.fencing_token = mine.fencing_token or lock_token
                out.failed_checks = mine.failed_checks
        else:
            latest = max(statuses.values(), key=lambda s: s.since_unix_ns, default=None)
            states = {s.state for s in statuses.values()}
            if waiting:
                out.state = pb.SERVICE_WAITING
            elif pb.SERVICE_FAILED in states:
                out.state = pb.SERVICE_FAILED
                latest = max((s for s in statuses.values() if s.state == pb.SERVICE_FAILED),
                             key=lambda s: s.since_unix_ns)
            elif pb.SERVICE_STOPPING in states:  # lost or released its lock, still stopping
                out.state = pb.SERVICE_STOPPING
                latest = max((s for s in statuses.values() if s.state == pb.SERVICE_STOPPING),
                             key=lambda s: s.since_unix_ns)
                out.active_domain = latest.domain
            elif states and states <= {pb.SERVICE_RELEASED}:
                out.state = pb.SERVICE_RELEASED
            else:
                out.state = pb.SERVICE_STOPPED
            if latest is not None:
                out.since_unix_ns, out.reason = latest.since_unix_ns, (
                    f"on {latest.domain}: {latest.reason}")
        result.append(out)
    return result


class HaServicer(ha_pb2_grpc.HaServicer):
    def __init__(self, app: HaNode) -> None:
        self.app = app

    # -- helpers
    @property
    def domain(self) -> int:
        return self.app.domain

    async def _not_ready(self, context: Context) -> None:
        if not self.app.domain:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "this node's domain is not known yet (no membership)")

    def _peer_stub(self, domain: int, stub_class: Callable[[grpc.aio.Channel], Stub]
                   ) -> Stub | None:
        channel = self.app.channels.channel(domain)
        return stub_class(channel) if channel is not None else None

    async def _forward(self, domain: int, rpc: str, request: Any, context: Context) -> Any:
        """`request` answered by `domain`'s HA daemon (its `rpc`), with its status on error."""
        stub = self._peer_stub(domain, ha_pb2_grpc.HaStub)
        if stub is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"domain {domain} is not a member of the cluster (or its HA "
                                f"daemon is not announced)")
        remaining = context.time_remaining()
        try:
            return await getattr(stub, rpc)(request, timeout=remaining)
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), f"domain {domain}: {error.details()}")

    async def node_views(self) -> tuple[dict[int, list[pb.LocalService]], list[int]]:
        """Every member's services and their state there, and the members in maintenance
        (members that do not answer are left out)."""
        views = {self.domain: [local_service_pb(s) for s in self.app.sorted_services()]}
        maintenance = {self.domain} if self.app.maintenance else set()

        async def ask(domain: int) -> None:
            stub = self._peer_stub(domain, ha_pb2_grpc.HaPeerStub)
            if stub is None:
                return
            try:
                reply = await stub.NodeStatus(pb.NodeStatusRequest(), timeout=PEER_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                return
            views[domain] = list(reply.services)
            if reply.maintenance:
                maintenance.add(domain)

        await asyncio.gather(*(ask(d) for d in self.app.members() if d != self.domain))
        return views, sorted(maintenance)

    async def lock_table(self) -> dict[Key, lock_pb2.LockState] | None:
        """The locks of the HA slots as the lock daemon sees them, or None if it cannot say."""
        if self.app.lock_channel is None:
            return None
        stub = lock_pb2_grpc.LockStub(self.app.lock_channel)
        by_slot = {slot: kind for kind, slot in LOCK_SLOTS.items()}
        try:
            replies = await asyncio.gather(*(
                stub.ListLocks(lock_pb2.ListLocksRequest(slot=slot), timeout=LOCK_TIMEOUT_S)
                for slot in by_slot))
        except grpc.aio.AioRpcError:
            return None
        table = {}
        for reply in replies:
            for lock in reply.locks:
                if lock.slot in by_slot and lock.lock <= 1023:
                    table[(by_slot[lock.slot], lock.lock)] = lock
        return table

    async def cluster_status(self, only: Key | None = None) -> list[pb.ServiceStatus]:
        return (await self._cluster(only))[0]

    async def _cluster(self, only: Key | None = None) -> tuple[list[pb.ServiceStatus], list[int]]:
        """Every service's cluster-wide status, and the members in maintenance."""
        (views, maintenance), locks = await asyncio.gather(self.node_views(), self.lock_table())
        return merge_status(views, locks, only), maintenance

    async def status_of(self, key: Key, name: str = "") -> pb.ServiceStatus:
        found = await self.cluster_status(only=key)
        if found:
            return found[0]
        return pb.ServiceStatus(type=TYPE_PB[key[0]], slot=key[1], name=name,
                                state=pb.SERVICE_STOPPED, since_unix_ns=time.time_ns(),
                                reason="not added on any member")

    # -- RPCs
    async def Query(self, request: pb.QueryRequest, context: Context) -> pb.QueryResponse:
        await self._not_ready(context)
        if request.domain > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"domain: must be from 0 to 64, got {request.domain}")
        if request.domain not in (0, self.domain):
            return await self._forward(request.domain, "Query", request, context)
        return pb.QueryResponse(services=[config_pb(s.config, self.domain)
                                          for s in self.app.sorted_services()])

    async def warnings(self) -> list[str]:
        """Cluster-wide warnings for `ha status`: the lock daemon's word on protection."""
        if self.app.lock_channel is None:
            return []
        try:
            info = await lock_pb2_grpc.LockStub(self.app.lock_channel).GetAuthority(
                lock_pb2.GetAuthorityRequest(), timeout=LOCK_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return []
        return [info.unprotected] if info.unprotected else []

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        await self._not_ready(context)
        (services, maintenance), warnings = await asyncio.gather(self._cluster(), self.warnings())
        return pb.StatusResponse(services=services, warnings=warnings,
                                 maintenance_domains=maintenance)

    async def WatchStatus(self, request: pb.WatchStatusRequest,
                          context: Context) -> AsyncIterator[pb.StatusEvent]:
        await self._not_ready(context)
        trigger = asyncio.Event()
        self.app.listeners.append(trigger.set)
        try:
            current = {(PB_TYPE[s.type], s.slot): s for s in await self.cluster_status()}
            yield pb.StatusEvent(time_unix_ns=time.time_ns(), snapshot=pb.StatusSnapshot(
                services=list(current.values())))
            while not self.app.stopping:
                try:
                    await asyncio.wait_for(trigger.wait(), WATCH_POLL_S)
                    await asyncio.sleep(0.02)  # let a burst of changes settle
                except TimeoutError:
                    pass
                trigger.clear()
                if self.app.stopping:
                    break
                now = {(PB_TYPE[s.type], s.slot): s for s in await self.cluster_status()}
                stamp = time.time_ns()
                for key in sorted(now, key=_sort_key):
                    if current.get(key) != now[key]:
                        yield pb.StatusEvent(time_unix_ns=stamp, changed=now[key])
                for key in sorted(set(current) - set(now), key=_sort_key):
                    yield pb.StatusEvent(time_unix_ns=stamp, removed=current[key])
                current = now
        finally:
            with contextlib.suppress(ValueError):
                self.app.listeners.remove(trigger.set)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "skyge-ha is stopping")

    async def Command(self, request: pb.CommandRequest, context: Context) -> pb.CommandReply:
        await self._not_ready(context)
        if request.type not in PB_TYPE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"type: must be random, fifo or stack ({', '.join(TYPES)})")
        if request.slot > 1023:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"slot: must be from 0 to 1023, got {request.slot}")
        if request.action not in ACTIONS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "action: must be add, start, stop, release, remove or switch")
        if request.domain > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"domain: must be from 0 to 64, got {request.domain}")
        key: Key = (PB_TYPE[request.type], request.slot)
        action = ACTIONS[request.action]
        domain = request.domain or self.domain
        if action == "switch" and request.domain == 0:
            locks = await self.lock_table()
            lock = locks.get(key) if locks else None
            if locks is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "the lock daemon does not answer: cannot tell where it runs")
            if lock is None or not lock.HasField("holder") or \
                    parse_label(lock.holder.label) != key:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"{key[0]}/{key[1]} runs nowhere: nothing to switch")
            domain = lock.holder.node.domain
        if domain != self.domain:
            forwarded = pb.CommandRequest()
            forwarded.CopyFrom(request)
            forwarded.domain = domain
            return await self._forward(domain, "Command", forwarded, context)
        return await self._local_command(key, action, context)

    async def _local_command(self, key: Key, action: str, context: Context) -> pb.CommandReply:
        where = f"{key[0]}/{key[1]}"
        if action == "add":
            try:
                added, new = self.app.add(*key)
            except ConfigError as error:
                code = (grpc.StatusCode.NOT_FOUND if error.reason.startswith("file not found")
                        else grpc.StatusCode.INVALID_ARGUMENT)
                await context.abort(code, str(error))
            except RuntimeError as error:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            message = (f"{added.config.name} ({where}) {'added' if new else 'reloaded'} "
                       f"on {self.domain}")
            if added.config.onstart:
                refused, started = await added.command("start")
                message += f"; onstart: {refused or started}"
            return pb.CommandReply(status=await self.status_of(key, added.config.name),
                                   message=message)
        supervisor = self.app.services.get(key)
        if supervisor is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no service {where} is added on domain {self.domain} "
                                f"(add it first: -a add)")
        if self.app.maintenance:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{supervisor.name} on {self.domain}: "
                                f"{policy.MAINTENANCE_REFUSAL}")
        if action == "switch":
            locks = await self.lock_table()
            if locks is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "the lock daemon does not answer: cannot tell who waits")
            lock = locks.get(key)
            others = [w for w in (lock.waiters if lock else [])
                      if parse_label(w.label) == key and w.node.domain != self.domain]
            if supervisor.state.phase.value in ("starting", "running", "held") and not others:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"{supervisor.name}: no other node waits for it: nothing "
                                    f"to switch to")
        refused, message = await supervisor.command(action)
        if not refused:
            self.app.record_intent(supervisor.config, action)
        if refused:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{supervisor.name} on {self.domain}: {refused}")
        return pb.CommandReply(status=await self.status_of(key, supervisor.config.name),
                               message=f"{supervisor.config.name} ({where}) on {self.domain}: "
                                       f"{message}")

    async def StopAll(self, request: pb.StopAllRequest, context: Context) -> pb.StopAllResponse:
        await self._not_ready(context)
        _, maintenance = await self.node_views()
        if maintenance:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"domain(s) {', '.join(map(str, maintenance))} in maintenance: "
                                f"nothing is stopped there until `skyge ha maintenance off`")
        for waiting_only in (True, False):
            await self._everywhere(pb.StopLocalRequest(waiting_only=waiting_only))
        return pb.StopAllResponse(services=await self.cluster_status())

    async def _everywhere(self, request: pb.StopLocalRequest) -> None:
        async def one(domain: int) -> None:
            if domain == self.domain:
                await self.app.stop_local(request.waiting_only)
                return
            stub = self._peer_stub(domain, ha_pb2_grpc.HaPeerStub)
            if stub is not None:
                try:
                    await stub.StopLocal(request)
                except grpc.aio.AioRpcError as error:
                    self.app.logger.warning("stopall: domain %d: %s", domain, error.details())

        await asyncio.gather(*(one(d) for d in self.app.members()))

    async def Pulse(self, request: pb.PulseRequest, context: Context) -> pb.PulseResponse:
        if request.type != pb.TAKEOVER_ORDER_UNSPECIFIED:
            if request.type not in PB_TYPE:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"type: must be unset (name the service) or random, fifo "
                                    f"or stack, got {request.type}")
            if request.slot > 1023:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"slot: must be from 0 to 1023, got {request.slot}")
            key: Key = (PB_TYPE[request.type], request.slot)
            supervisor = self.app.services.get(key)
            what = f"type/slot: no service {key[0]}/{key[1]}"
        else:
            if not request.name:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "name: required when type is unset (name the service by "
                                    "type + slot or by name)")
            supervisor = next((s for s in self.app.services.values()
                               if s.config.name == request.name), None)
            what = f"name: no service named {excerpt(request.name)}"
        if supervisor is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"{what} is added on domain {self.domain}")
        try:
            deadline = supervisor.pulse()
        except (LookupError, ValueError) as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        left_ns = int((deadline - time.monotonic()) * 1e9)
        return pb.PulseResponse(pulse_timeout_ms=supervisor.config.pulse_timeout_ms,
                                deadline_unix_ns=time.time_ns() + left_ns)

    async def SetRefuseNew(self, request: pb.SetRefuseNewRequest,
                           context: Context) -> pb.SetRefuseNewResponse:
        if len(request.reason) > 256:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"reason: at most 256 characters, got {len(request.reason)}")
        affected = await self.app.set_refuse_new(request.refuse, request.reason)
        return pb.SetRefuseNewResponse(refusing=self.app.refusing_new,
                                       services_affected=affected)

    async def SetMaintenance(self, request: pb.SetMaintenanceRequest,
                             context: Context) -> pb.SetMaintenanceResponse:
        await self._not_ready(context)
        if request.domain > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"domain: must be from 0 to 64, got {request.domain}")
        if request.all_members and request.domain:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "domain: must be 0 with all_members (every member)")
        if request.domain not in (0, self.domain) and request.domain not in self.app.members():
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"domain {request.domain} is not a member of the cluster")
        targets = self.app.members() if request.all_members else [request.domain or self.domain]
        failed: list[str] = []

        async def one(domain: int) -> None:
            if domain == self.domain:
                await self.app.set_maintenance(request.on)
                return
            stub = self._peer_stub(domain, ha_pb2_grpc.HaPeerStub)
            if stub is None:
                failed.append(f"{domain} (no address)")
                return
            try:
                await stub.SetLocalMaintenance(pb.SetLocalMaintenanceRequest(on=request.on),
                                               timeout=PEER_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                failed.append(f"{domain} ({error.details()})")

        await asyncio.gather(*(one(d) for d in targets))
        if failed:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"maintenance {'on' if request.on else 'off'} not set on "
                                f"domain {', '.join(sorted(failed))}; the others are set")
        _, maintenance = await self.node_views()
        return pb.SetMaintenanceResponse(maintenance_domains=maintenance)


class HaPeerServicer(ha_pb2_grpc.HaPeerServicer):
    def __init__(self, app: HaNode) -> None:
        self.app = app

    async def NodeStatus(self, request: pb.NodeStatusRequest,
                         context: Context) -> pb.NodeStatusResponse:
        return pb.NodeStatusResponse(domain=self.app.domain, services=[
            local_service_pb(s) for s in self.app.sorted_services()],
            maintenance=self.app.maintenance)

    async def SetLocalMaintenance(self, request: pb.SetLocalMaintenanceRequest,
                                  context: Context) -> pb.SetLocalMaintenanceResponse:
        await self.app.set_maintenance(request.on)
        return pb.SetLocalMaintenanceResponse(maintenance=self.app.maintenance)

    async def StopLocal(self, request: pb.StopLocalRequest,
                        context: Context) -> pb.StopLocalResponse:
        if self.app.maintenance:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"domain {self.app.domain} is in maintenance")
        await self.app.stop_local(request.waiting_only)
        return pb.StopLocalResponse(services=[local_service_pb(s)
                                              for s in self.app.sorted_services()])
