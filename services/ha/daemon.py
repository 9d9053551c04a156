"""skyge-ha as a daemon: config keys, the services of this node, the app the runner drives.

ha.cfg (libconfig, every key optional)::

    config_dir = "/etc/skygeha_8";  # folder holding slots/ (default: ROOT/etc/skyge/ha)
    domain = 0;                     # this node's domain; 0 = heartbeat.cfg's, then the membership's

At start every ``slots/{random,fifo,stack}/N/service.cfg`` is loaded; a bad file is logged with
its file, line, option and reason and skipped (the others load); services with ``onstart = yes``
start at once (they queue on their lock; the first node to get it runs them).

Every state change of a service is logged (NOTICE: service, type/slot, domain, old -> new state,
reason; the log goes to the console, syslog and the HA log bus ``log.ha.skyge.com`` as `-t` says)
and published as JSON on this node's ``state.service.ha.skyge.com`` bus, never blocking: records
queue (bounded) while the bus daemon is down.

On SIGTERM the daemon stops every service it runs and releases its locks (the next waiter takes
over), then leaves.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Callable

import grpc

from skyge.services.common.config import Field, integer, string
from skyge.services.common.logsetup import NOTICE, BusLogHandler
from skyge.services.common.membership import MembershipFollower, PeerChannels
from skyge.services.common.runner import DaemonApp, DaemonContext, DaemonSpec
from skyge.services.ha.service_config import (ServiceConfig, ha_config_dir, load_service,
                                              load_services)
from skyge.services.ha.supervisor import (Change, GrpcLockSession, ServiceSupervisor, by_key,
                                          lock_channel, lock_of, session_label)

STATE_BUS = "state.service.ha.skyge.com"
#: how long the daemon waits at start for its domain from the membership (when no config says)
DOMAIN_WAIT_S = 10.0
#: gRPC options of the channels to peers' HA daemons
PEER_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
)

FIELDS = (
    Field("config_dir", string(r"(/.*)?", "an absolute path, or empty"), default="",
          help="folder holding slots/ (empty: ROOT/etc/skyge/ha); /etc/skygeha_8 works"),
    Field("domain", integer(0, 64), default=0,
          help="this node's domain (0: from heartbeat.cfg, else the membership)"),
)


class _StateBusHandler(BusLogHandler):
    """Ships state-change records (their `msg` is a dict) to the state bus as JSON."""

    def record_data(self, record: logging.LogRecord) -> bytes:
        return json.dumps(record.msg, sort_keys=True).encode()


class HaApp(DaemonApp):
    service_names = ("skyge.v1.Ha", "skyge.v1.HaPeer")

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.logger = ctx.logger
        self.paths = ctx.paths
        folder = ctx.config.get("config_dir") or ""
        self.config_dir = Path(ctx.paths.under(folder)) if folder else ha_config_dir(ctx.paths)
        self.domain = ctx.configured_domain()
        self.services: dict[tuple[str, int], ServiceSupervisor] = {}
        self.follower = MembershipFollower(ctx.paths)
        self.channels = PeerChannels(
            self.follower, "ha",
            make_channel=lambda target: grpc.aio.insecure_channel(target,
                                                                  options=PEER_CHANNEL_OPTIONS))
        self.lock_channel: grpc.aio.Channel | None = None
        self.state_logger = logging.getLogger("skyge.ha.state")
        self.state_logger.propagate = False
        self.state_logger.setLevel(logging.INFO)
        self._state_handler = _StateBusHandler("ha", ctx.paths.socket("bus"), bus=STATE_BUS)
        self.state_logger.addHandler(self._state_handler)
        #: called (no arguments) after every state change or membership change: watchers
        self.listeners: list[Callable[[], None]] = []
        self.stopping = False
        self._loaded = False
        self._deferred = False  # no domain at start: load on the first membership view
        from skyge.services.ha.server import HaPeerServicer, HaServicer
        self.servicer = HaServicer(self)
        self.peer_servicer = HaPeerServicer(self)

    def register(self, server: grpc.aio.Server) -> None:
        from skyge.v1 import ha_pb2_grpc
        ha_pb2_grpc.add_HaServicer_to_server(self.servicer, server)
        ha_pb2_grpc.add_HaPeerServicer_to_server(self.peer_servicer, server)

    # -- life
    async def start(self) -> None:
        self.lock_channel = lock_channel(self.paths.socket("lock"))
        self.follower.listeners.append(self)
        self.follower.start()
        if not self.domain:
            if await self.follower.wait_known(DOMAIN_WAIT_S):
                self.domain = self.follower.local_domain
        if not self.domain:
            self.logger.error("this node's domain is unknown (no domain in ha.cfg or "
                              "heartbeat.cfg, and no membership yet): services are loaded once "
                              "the membership names this node")
            self._deferred = True
            return
        self._load_all()

    def _load_all(self) -> None:
        self._loaded = True
        services, errors = load_services(self.config_dir)
        for error in errors:
            self.logger.error("service.cfg refused: %s", error)
        self.logger.info("domain %d: %d service(s) loaded from %s%s", self.domain, len(services),
                         self.config_dir, f", {len(errors)} refused" if errors else "")
        for config in services:
            supervisor = self._add(config)
            if config.onstart:
                asyncio.create_task(self._onstart(supervisor))

    async def _onstart(self, supervisor: ServiceSupervisor) -> None:
        refused, message = await supervisor.command("start")
        if refused:
            self.logger.warning("service %s: onstart: %s", supervisor.name, refused)

    def _add(self, config: ServiceConfig) -> ServiceSupervisor:
        supervisor = ServiceSupervisor(
            config, domain=self.domain, session_factory=self._session,
            log_dir=self.paths.log / "ha", on_change=self._changed, on_forget=self._forget)
        self.services[config.key] = supervisor
        supervisor.start()
        self.logger.log(NOTICE, "service %s added on domain %d (%s)", supervisor.name,
                        self.domain, config.path)
        self._notify()
        return supervisor

    def _session(self, supervisor: ServiceSupervisor) -> GrpcLockSession:
        assert self.lock_channel is not None
        slot, lock = lock_of(supervisor.config)
        return GrpcLockSession(self.lock_channel, session_label(supervisor.config), slot, lock,
                               supervisor.post)

    def _forget(self, supervisor: ServiceSupervisor) -> None:
        if self.services.get(supervisor.key) is supervisor:
            del self.services[supervisor.key]
        self.logger.log(NOTICE, "service %s removed from domain %d", supervisor.name, self.domain)
        asyncio.create_task(self._close_later(supervisor))
        self._notify()

    async def _close_later(self, supervisor: ServiceSupervisor) -> None:
        await supervisor.wait_settled(2.0)  # its Release is answered first
        await asyncio.sleep(0.1)
        await supervisor.close()

    def _changed(self, change: Change) -> None:
        sup = change.supervisor
        level = logging.WARNING if change.state == "failed" else NOTICE
        self.logger.log(level, "service %s on domain %d: %s -> %s: %s", sup.name, self.domain,
                        change.previous, change.state, change.reason)
        record = dict(sup.snapshot(), previous=change.previous, time_unix_ns=time.time_ns())
        self.state_logger.info(record)
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001
                self.logger.exception("status listener failed")

    # membership listener
    def on_view(self, follower: MembershipFollower) -> None:
        if self._deferred and not self._loaded and follower.local_domain and not self.stopping:
            self.domain = follower.local_domain
            self._load_all()
        if self.domain and follower.local_domain and follower.local_domain != self.domain:
            self.logger.warning("the membership says this node is domain %d, the config %d",
                                follower.local_domain, self.domain)
        self._notify()

    def on_lost(self, follower: MembershipFollower) -> None:
        self._notify()

    # -- commands on this node
    def add(self, type: str, slot: int) -> tuple[ServiceSupervisor, bool]:
        """Load slots/TYPE/SLOT/service.cfg; (supervisor, True if newly added). Raises
        ConfigError, or RuntimeError when it is added and busy here."""
        existing = self.services.get((type, slot))
        others = [s.config for k, s in self.services.items() if k != (type, slot)]
        config = load_service(self.config_dir, type, slot, others)
        if existing is not None:
            if existing.state.state_name not in ("stopped", "released", "failed") or \
                    existing.state.holding:
                raise RuntimeError(f"{existing.name} is already added and "
                                   f"{existing.state.state_name} here: stop or release it "
                                   f"before adding it again")
            existing.reload(config)
            self.logger.log(NOTICE, "service %s reloaded on domain %d (%s)", existing.name,
                            self.domain, config.path)
            return existing, False
        return self._add(config), True

    async def stop_local(self, waiting_only: bool) -> None:
        action = "unqueue" if waiting_only else "stopall"
        await asyncio.gather(*(s.command(action) for s in list(self.services.values())))

    async def stop(self) -> None:
        self.stopping = True
        self._notify()
        running = [s for s in self.services.values()
                   if s.state.holding or s.state.phase.value in ("starting", "running",
                                                                 "stopping")]
        if running:
            self.logger.log(NOTICE, "stopping %d service(s) before leaving: %s", len(running),
                            ", ".join(s.name for s in running))
        await asyncio.gather(*(s.command("stopall") for s in list(self.services.values())),
                             return_exceptions=True)
        await asyncio.gather(*(s.close() for s in list(self.services.values())),
                             return_exceptions=True)
        await self.follower.stop()
        await self.channels.close()
        if self.lock_channel is not None:
            await self.lock_channel.close()
        self.state_logger.removeHandler(self._state_handler)
        await asyncio.to_thread(self._state_handler.close)

    def sorted_services(self) -> list[ServiceSupervisor]:
        return by_key(self.services.values())

    def members(self) -> list[int]:
        """Domains in the membership (this node at least)."""
        domains = set(self.follower.peers) if self.follower.known else set()
        if self.domain:
            domains.add(self.domain)
        return sorted(domains)


def build(ctx: DaemonContext) -> HaApp:
    return HaApp(ctx)


SPEC = DaemonSpec(
    name="ha",
    description="skyge ha daemon: user services run where their lock is held, with floating IPs "
                "and shared disks (the seed's Skyge HA)",
    build=build,
    config_fields=FIELDS,
)
