"""skyge-ha as a daemon: config keys, the services of this node, the app the runner drives.

ha.cfg (libconfig, every key optional)::

    config_dir = "/etc/skygeha_8";  # folder holding slots/ (default: ROOT/etc/skyge/ha)
    domain = 0;                     # this node's domain; 0 = heartbeat.cfg's, then the membership's
    reference_ips = "192.168.1.1:192.168.1.254";  # the seed's -i (also on the command line)
    isolation_script = "/opt/skygeha_8/scripts/sk_ha_ck_network_isolation.sh";
    isolation_timeout = 60;         # s the isolation script may run
    reboot_command = "systemctl reboot --force --force";  # force_reboot (sh -c)

At start every ``slots/{random,fifo,stack}/N/service.cfg`` is loaded; a bad file is logged with
its file, line, option and reason and skipped (the others load). A service starts competing for
its lock at once when the last start/stop command for it on this node was `start` (kept in
ROOT/var/lib/skyge/ha/intents.json, so a restarted daemon carries on) or, with no command yet,
when it has ``onstart = yes``.

Isolation (`isolation.py`): when this node sees no peer any more and reaches no reference IP, it
stops every service it runs (floating IPs first) and, if it ran any when its peers were lost,
runs the isolation script (no arguments; env SKYGE_DOMAIN, SKYGE_SERVICES = their names).
A service with ``force_reboot`` whose stop fails makes the node run `reboot_command`.

Every state change of a service is logged (NOTICE: service, type/slot, domain, old -> new state,
reason; the log goes to the console, syslog and the HA log bus ``log.ha.skyge.com`` as `-t` says)
and published as JSON on this node's ``state.service.ha.skyge.com`` bus, never blocking: records
queue (bounded) while the bus daemon is down.

On SIGTERM the daemon stops every service it runs and releases its locks (the next waiter takes
over), then leaves; in maintenance (`skyge ha maintenance on`, kept in
ROOT/var/lib/skyge/ha/maintenance) it leaves them running, holding their locks, and the next
daemon adopts them, so the daemon can be restarted or upgraded without moving anything.
"""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from skyge.services.common.atomic import write_atomic
from skyge.services.common.commands import run_command
from skyge.services.common.config import Field, integer, string
from skyge.services.common.logsetup import NOTICE
from skyge.services.common.membership import MembershipFollower, PeerChannels
from skyge.services.common.publisher import LocalBusPublisher
from skyge.services.common.reference import (add_reference_ips_argument, reference_ips_field,
                                             reference_ips_from)
from skyge.services.common.runner import DaemonApp, DaemonContext, DaemonSpec
from skyge.services.ha import policy
from skyge.services.ha.deadman import Deadman, Registry, spawn_backstop
from skyge.services.ha.isolation import IsolationMonitor
from skyge.services.ha.resources.cgroup import Cgroups
from skyge.services.ha.server import HaPeerServicer, HaServicer
from skyge.services.ha.service_config import (ServiceConfig, ha_config_dir, load_service,
                                              load_services)
from skyge.services.ha.supervisor import (Change, GrpcLockSession, ServiceSupervisor,
                                          SystemResources, by_key, lock_channel, lock_of,
                                          session_label)
from skyge.v1 import emon_pb2, emon_pb2_grpc, ha_pb2_grpc

STATE_BUS = "state.service.ha.skyge.com"
#: how long the daemon waits at start for its domain from the membership (when no config says)
DOMAIN_WAIT_S = 10.0

DEFAULT_REBOOT = "systemctl reboot --force --force"
#: how long the reboot command may take before the daemon says the node did not reboot
REBOOT_TIMEOUT_S = 60.0
#: how long the daemon asks emon, at start, whether new services are refused
EMON_TIMEOUT_S = 1.0
INTENTS_FILE = "intents.json"
#: present while this node is in maintenance (its content: when it began, for people)
MAINTENANCE_FILE = "maintenance"
#: SCHED_FIFO priority of the deadman thread: above the lock daemon's loop (5) and the
#: heartbeat thread (10), since it is what keeps a service from outliving its lock
DEADMAN_PRIORITY = 15
#: the commands that set what this node wants of a service (kept across restarts)
INTENT_OF = {"start": "start", "stop": "stop", "release": "stop", "stopall": "stop"}

FIELDS = (
    Field("config_dir", string(r"(/.*)?", "an absolute path, or empty"), default="",
          help="folder holding slots/ (empty: ROOT/etc/skyge/ha); /etc/skygeha_8 works"),
    Field("domain", integer(0, 64), default=0,
          help="this node's domain (0: from heartbeat.cfg, else the membership)"),
    reference_ips_field('isolation: "IP:IP" as the seed\'s -i; a node that lost every peer and '
                        'reaches none of them is isolated'),
    Field("isolation_script", string(r"(/.*)?", "an absolute path, or empty"), default="",
          help="run when this node is isolated while it ran services, after stopping them "
               "(the seed's sk_ha_ck_network_isolation.sh); empty: none"),
    Field("isolation_timeout", integer(1, 3600), default=60,
          help="s the isolation script may run"),
    Field("reboot_command", string(), default=DEFAULT_REBOOT,
          help="run (sh -c) when a service with force_reboot fails to stop"),
    Field("dad_timeout_ms", integer(0, 1000), default=20,
          help="before adding a floating IP, an ARP probe waits this long for another host "
               "that still answers for it (then the IP is not added: the node waits, "
               "probing, up to start_timeout, then gives the lock back and queues again); "
               "0 = no probe. It adds this much to every takeover"),
)


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
        self.channels = PeerChannels(self.follower, "ha", ctx.tls)
        self.lock_channel: grpc.aio.Channel | None = None
        #: every state change, as JSON, to the state bus (queued while the bus daemon is away)
        self.state_bus = LocalBusPublisher(ctx.paths.socket("bus"), name="ha-state-bus")
        #: called (no arguments) after every state change or membership change: watchers
        self.listeners: list[Callable[[], None]] = []
        self.stopping = False
        self._loaded = False
        self._deferred = False  # no domain at start: load on the first membership view
        config = ctx.config
        self.isolation = IsolationMonitor(reference_ips_from(ctx.args, config), self._isolated)
        self.isolation_script = config["isolation_script"]
        self.isolation_timeout = float(config["isolation_timeout"])
        self.reboot_command = config["reboot_command"]
        self.resources = SystemResources(dad_timeout_s=config["dad_timeout_ms"] / 1000)
        self._rebooting = False
        #: services active here when the last peer was lost (for the isolation script)
        self._ran_when_alone: list[str] = []
        self.refusing_new = False
        self.refuse_reason = ""
        self.intents_path = ctx.paths.lib / "ha" / INTENTS_FILE
        self.maintenance_path = ctx.paths.lib / "ha" / MAINTENANCE_FILE
        self.maintenance = self.maintenance_path.exists()
        #: set while not in maintenance: services to start at daemon start wait for it
        self.managed = asyncio.Event()
        #: the daemon-start bring-ups (adopt, then start), cancelled when the daemon stops
        self._bring_ups: set[asyncio.Task[None]] = set()
        #: removed services closing their session once their Release is answered (awaited by
        #: `stop`)
        self._closing: set[asyncio.Task[None]] = set()
        self.deadman = Deadman(ctx.paths.lease_file, realtime_priority=DEADMAN_PRIORITY)
        self.registry = Registry(ctx.paths.deadman_file)
        #: each service's own cgroup, so that services outlive this daemon (resources/cgroup.py)
        self.cgroups = Cgroups.find(ctx.paths.root)
        if self.cgroups is None:
            ctx.logger.warning("no writable cgroup v2 hierarchy: services run in this daemon's "
                               "cgroup, so stopping the daemon with its cgroup stops them too")
        self.backstop: subprocess.Popen[bytes] | None = None
        self.intents: dict[str, str] = {}
        self.servicer = HaServicer(self)
        self.peer_servicer = HaPeerServicer(self)

    def register(self, server: grpc.aio.Server) -> None:
        ha_pb2_grpc.add_HaServicer_to_server(self.servicer, server)
        ha_pb2_grpc.add_HaPeerServicer_to_server(self.peer_servicer, server)

    # -- life
    async def start(self) -> None:
        self.deadman.start()
        self.backstop = spawn_backstop(self.paths, self.paths.log / "skyge-ha-deadman.log")
        self.intents = self._read_intents()
        if self.maintenance:
            self.logger.log(NOTICE, "this node is in maintenance (%s): services are adopted as "
                            "they are; nothing is started, stopped or moved here until "
                            "`skyge ha maintenance off`", self.maintenance_path)
        else:
            self.managed.set()
        self.refusing_new, self.refuse_reason = await self._emon_refusing()
        if self.refusing_new:
            self.logger.log(NOTICE, "new services refused here (emon: %s)", self.refuse_reason)
        self.lock_channel = lock_channel(self.paths.socket("lock"))
        self.follower.listeners.append(self)
        self.follower.start()
        if not self.domain and await self.follower.wait_known(DOMAIN_WAIT_S):
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
            intent = self.intents.get(_intent_key(config))
            start = intent == "start" or (intent is None and config.onstart)
            task = asyncio.create_task(self._bring_up(supervisor,
                                                      intent or "onstart" if start else ""))
            self._bring_ups.add(task)
            task.add_done_callback(self._bring_ups.discard)

    async def _bring_up(self, supervisor: ServiceSupervisor, start_because: str) -> None:
        """Adopt the service's lock if it was kept across a restart of this daemon, then start
        competing for it if the node was told to (or onstart), once not in maintenance."""
        await supervisor.attach()
        if start_because and not self.managed.is_set():
            self.logger.log(NOTICE, "service %s: %s once maintenance ends", supervisor.name,
                            start_because)
            await self.managed.wait()
        if not start_because or self.intents.get(_intent_key(supervisor.config)) == "stop":
            return  # (a stop command may have come meanwhile, e.g. a StopAll)
        refused, _ = await supervisor.command("start")
        if refused:
            self.logger.warning("service %s: %s: %s", supervisor.name, start_because, refused)

    # -- what this node wants of each service, kept across restarts
    def _read_intents(self) -> dict[str, str]:
        try:
            data = json.loads(self.intents_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            self.logger.error("%s is unreadable (%s): services start as onstart says",
                              self.intents_path, error)
            return {}
        return {k: v for k, v in data.items() if v in ("start", "stop")} \
            if isinstance(data, dict) else {}

    def record_intent(self, config: ServiceConfig, action: str) -> None:
        """Remember the last start/stop-like command for a service (forgotten on remove)."""
        key = _intent_key(config)
        intent = INTENT_OF.get(action)
        if action == "remove":
            changed = self.intents.pop(key, None) is not None
        elif intent is not None and self.intents.get(key) != intent:
            self.intents[key] = intent
            changed = True
        else:
            changed = False
        if changed:
            try:
                write_atomic(self.intents_path, json.dumps(self.intents, sort_keys=True))
            except OSError as error:
                self.logger.error("cannot save %s: %s (a restarted daemon starts services as "
                                  "onstart says)", self.intents_path, error)

    # -- emon: refusal of new services
    async def _emon_refusing(self) -> tuple[bool, str]:
        """Whether emon's refuse_new watermarks are fired now (False when emon is not running)."""
        socket = self.paths.socket("emon")
        if not socket.exists():
            return False, ""
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            try:
                reply = await emon_pb2_grpc.EmonStub(channel).ListWatermarks(
                    emon_pb2.ListWatermarksRequest(), timeout=EMON_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                return False, ""
        fired = [f"{w.probe} {w.name}" for w in reply.watermarks
                 if w.action == emon_pb2.WATERMARK_REFUSE_NEW and not w.armed]
        return reply.refusing_new, ", ".join(fired)

    async def set_refuse_new(self, refuse: bool, reason: str) -> int:
        """Refuse new services here (or accept them again); returns how many waiting services
        leave (or rejoin) their lock queue."""
        changed = refuse != self.refusing_new
        self.refusing_new, self.refuse_reason = refuse, reason
        if not changed:
            return 0
        self.logger.log(NOTICE, "new services %s here%s", "refused" if refuse else "accepted again",
                        f" ({reason})" if reason else "")
        affected = 0
        for supervisor in list(self.services.values()):
            affected += supervisor.state.phase is policy.Phase.WAITING
            supervisor.post(policy.Refuse(refuse, reason))
        return affected

    # -- maintenance: nothing started, stopped or moved here
    async def set_maintenance(self, on: bool) -> None:
        """Enter or leave maintenance (kept on disk, so a restarted daemon stays in it)."""
        if on == self.maintenance:
            return
        try:
            if on:
                write_atomic(self.maintenance_path, f"since {time.strftime('%FT%T%z')}\n")
            else:
                self.maintenance_path.unlink(missing_ok=True)
        except OSError as error:
            self.logger.error("cannot %s %s: %s (maintenance %s only until this daemon stops)",
                              "write" if on else "remove", self.maintenance_path, error,
                              "on" if on else "off")
        self.maintenance = on
        self.logger.log(NOTICE, "maintenance %s: %s", "on" if on else "off",
                        "services here are left as they are (no checks, starts, stops or moves; "
                        "a lost lock still stops them)" if on else
                        "services here are managed again (running ones checked now)")
        for supervisor in list(self.services.values()):
            supervisor.post(policy.Maintenance(on))
        if on:
            self.managed.clear()
        else:
            self.managed.set()
        self._notify()

    # -- faults: isolation, force_reboot
    async def _isolated(self, detail: str) -> None:
        active = [s for s in self.services.values() if policy.active(s.state)]
        ran = sorted({*self._ran_when_alone, *(s.config.name for s in active)})
        for supervisor in list(self.services.values()):
            supervisor.post(policy.Isolated(detail))
        await asyncio.gather(*(
            s.wait_until(_stopped_here(s), s.config.stop_timeout + s.config.release_timeout)
            for s in active))
        if not ran:
            self.logger.log(NOTICE, "isolated, but no service ran here: no isolation script")
            return
        self.logger.log(NOTICE, "isolated: stopped %s", ", ".join(ran))
        if not self.isolation_script:
            return
        result = await run_command([self.isolation_script], timeout_s=self.isolation_timeout,
                                   env={"SKYGE_DOMAIN": str(self.domain),
                                        "SKYGE_SERVICES": " ".join(ran)})
        self.logger.log(NOTICE if result.ok else logging.ERROR,
                        "isolation script %s %s; output: %s", self.isolation_script,
                        result.summary, result.output or "(none)")

    async def _reboot(self, reason: str) -> None:
        if self._rebooting:
            return
        self._rebooting = True
        self.logger.critical("force_reboot: rebooting this node with %r (%s)",
                             self.reboot_command, reason)
        result = await run_command(["/bin/sh", "-c", self.reboot_command],
                                   timeout_s=REBOOT_TIMEOUT_S)
        self.logger.critical("the node did not reboot: %r %s; output: %s", self.reboot_command,
                             result.summary, result.output or "(none)")
        self._rebooting = False

    def _add(self, config: ServiceConfig) -> ServiceSupervisor:
        supervisor = ServiceSupervisor(
            config, domain=self.domain, session_factory=self._session, resources=self.resources,
            log_dir=self.paths.log / "ha", on_change=self._changed, on_forget=self._forget,
            on_reboot=self._reboot, deadman=self.deadman, registry=self.registry,
            cgroups=self.cgroups)
        self.services[config.key] = supervisor
        supervisor.start()
        if self.maintenance:
            supervisor.post(policy.Maintenance(True))
        if self.refusing_new:
            supervisor.post(policy.Refuse(True, self.refuse_reason))
        self.logger.log(NOTICE, "service %s added on domain %d (%s)", supervisor.name,
                        self.domain, config.path)
        self._notify()
        return supervisor

    def _session(self, supervisor: ServiceSupervisor) -> GrpcLockSession:
        assert self.lock_channel is not None
        slot, lock = lock_of(supervisor.config)
        return GrpcLockSession(
            self.lock_channel, session_label(supervisor.config), slot, lock, supervisor.post,
            held_by_command=lambda: self.intents.get(_intent_key(supervisor.config)) == "stop",
            on_valid_until=supervisor.valid_until)

    def _forget(self, supervisor: ServiceSupervisor) -> None:
        if self.services.get(supervisor.key) is supervisor:
            del self.services[supervisor.key]
        self.logger.log(NOTICE, "service %s removed from domain %d", supervisor.name, self.domain)
        task = asyncio.create_task(self._close_later(supervisor))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
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
        self.state_bus.offer(STATE_BUS, json.dumps(record, sort_keys=True).encode())
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                self.logger.exception("status listener failed")

    # membership listener
    def on_view(self, follower: MembershipFollower) -> None:
        if self._deferred and not self._loaded and follower.local_domain and not self.stopping:
            self.domain = follower.local_domain
            self._load_all()
        if self.domain and follower.local_domain and follower.local_domain != self.domain:
            self.logger.warning("the membership says this node is domain %d, the config %d",
                                follower.local_domain, self.domain)
        if follower.known:
            peers = sum(1 for peer in follower.peers.values() if not peer.local)
            if not peers and not self.isolation.alone:
                self._ran_when_alone = [s.config.name for s in self.services.values()
                                        if policy.active(s.state)]
            self.isolation.update(peers)
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
        if self.maintenance:
            return  # (Ha.StopAll refuses while a member is in maintenance)
        action = "unqueue" if waiting_only else "stopall"
        for supervisor in self.services.values():
            self.record_intent(supervisor.config, "stopall")
        await asyncio.gather(*(s.command(action) for s in list(self.services.values())))

    async def stop(self) -> None:
        self.stopping = True
        self._notify()
        for task in list(self._bring_ups):
            task.cancel()
        await asyncio.gather(*self._bring_ups, return_exceptions=True)
        running = [s for s in self.services.values() if policy.active(s.state)]
        if running and self.maintenance:
            self.logger.log(NOTICE, "maintenance: leaving %d service(s) running, holding their "
                            "locks, for the next skyge-ha to adopt: %s", len(running),
                            ", ".join(s.name for s in running))
        elif running:
            self.logger.log(NOTICE, "stopping %d service(s) before leaving: %s", len(running),
                            ", ".join(s.name for s in running))
        if not self.maintenance:
            await asyncio.gather(*(s.command("stopall") for s in list(self.services.values())),
                                 return_exceptions=True)
        await asyncio.gather(*(s.close() for s in list(self.services.values())),
                             *self._closing, return_exceptions=True)
        await self.isolation.close()
        await asyncio.to_thread(self.deadman.close)
        if self.backstop is not None and not (running and self.maintenance):
            self.backstop.terminate()  # every service is stopped: nothing left to guard
            await asyncio.to_thread(self.backstop.wait)
        await self.follower.stop()
        await self.channels.close()
        if self.lock_channel is not None:
            await self.lock_channel.close(None)
        await asyncio.to_thread(self.state_bus.close)

    def sorted_services(self) -> list[ServiceSupervisor]:
        return by_key(self.services.values())

    def members(self) -> list[int]:
        """Domains in the membership (this node at least)."""
        domains = set(self.follower.peers) if self.follower.known else set()
        if self.domain:
            domains.add(self.domain)
        return sorted(domains)


def _intent_key(config: ServiceConfig) -> str:
    return f"{config.type}/{config.slot}"


def _stopped_here(supervisor: ServiceSupervisor) -> Callable[[], bool]:
    """Whether `supervisor`'s service neither starts, runs nor stops here any more."""
    return lambda: supervisor.state.phase not in policy.ACTIVE_PHASES


def build(ctx: DaemonContext) -> HaApp:
    return HaApp(ctx)


SPEC = DaemonSpec(
    name="ha",
    description="skyge ha daemon: user services run where their lock is held, with floating IPs "
                "and shared disks (the seed's Skyge HA)",
    build=build,
    config_fields=FIELDS,
    add_arguments=lambda parser: add_reference_ips_argument(
        parser, "an isolated node stops what it runs"),
)
