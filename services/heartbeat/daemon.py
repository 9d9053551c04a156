"""skyge-heartbeat as the runner sees it: the spec, and the app tying core, transport and gRPC.

`build` reads heartbeat.cfg (the seed's keys), checks every NIC exists in this node's network
namespace, reads their addresses and MACs, persists the next incarnation, and makes the core.
`HeartbeatApp` owns the lock shared by the heartbeat thread and the servicer, numbers the core's
events, logs them (dmesg-style texts at NOTICE) and fans them out to the watch streams, all on the
asyncio loop, so neither logging nor a slow client ever delays the heartbeat thread.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from skyge.services.common.atomic import write_atomic
from skyge.services.common.config import ConfigError
from skyge.services.common.keys import ClusterKeys, key_path, load_keys
from skyge.services.common.logsetup import NOTICE
from skyge.services.common.paths import TCP_PORTS, NodePaths
from skyge.services.common.runner import DaemonApp, DaemonContext, DaemonSpec, StartupError
from skyge.v1 import heartbeat_pb2_grpc

from . import config as hbconfig
from .core import (DomainConflict, Event, HeartbeatConfig, HeartbeatCore, LeaveReason, LinkDown,
                   LinkUp, MemberJoined, MemberLeft, PathConfig)
from .names import NamePublished, NameWithdrawn
from .nics import NicInfo, read_nics
from .server import Emitted, HeartbeatServicer, Watcher
from .transport import UdpTransport
from .wire import next_incarnation

__all__ = ["SPEC", "HeartbeatApp", "NicInfo", "persist_incarnation", "read_nics"]

INCARNATION_FILE = "heartbeat.incarnation"
#: the heartbeat thread must have turned within this long for the daemon to report healthy
HEALTHY_TURN_NS = 5_000_000_000

T = TypeVar("T")


def persist_incarnation(lib: Path, now_unix_ns: int, logger: logging.Logger) -> int:
    """The incarnation for this start: above the persisted one, and persisted before use."""
    path = lib / INCARNATION_FILE
    previous = None
    try:
        previous = int(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable %s (%s): the incarnation comes from the clock only",
                       path, error)
    incarnation = next_incarnation(now_unix_ns, previous)
    lib.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, f"{incarnation}\n")  # fsynced, and its folder: on disk before use
    return incarnation


class HeartbeatApp(DaemonApp):
    service_names = ("skyge.v1.Heartbeat",)

    def __init__(self, ctx: DaemonContext, settings: hbconfig.Settings, core: HeartbeatCore,
                 nics: dict[int, NicInfo]) -> None:
        self.ctx, self.settings, self.core, self.nics = ctx, settings, core, nics
        self.logger = ctx.logger
        self.lock = threading.Lock()
        self.started_unix_ns = ctx.started_unix_ns
        self.seq = 0  # number of the latest event emitted (under lock)
        self.watchers: set[Watcher] = set()
        try:  # build() runs on the daemon's loop: RPCs may come before start()
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        broadcast = {path: info.broadcast or "255.255.255.255" for path, info in nics.items()}
        self.transport = UdpTransport(core, self.lock, {p: i.name for p, i in nics.items()},
                                      settings.port, broadcast, self._emit, self.logger,
                                      realtime_priority=settings.realtime_priority)

    # ---- runner hooks

    def register(self, server: Any) -> None:
        heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(HeartbeatServicer(self), server)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self.transport.open()
        except OSError as error:
            raise StartupError(f"cannot open the heartbeat socket on UDP port "
                               f"{self.settings.port}: {error.strerror or error}") from None
        # Everything loaded so far (grpc, protobuf, the modules) lives as long as the process:
        # keep it out of the collector's generations, so collections stay short and cheap.
        gc.freeze()
        self.transport.start()
        paths = ", ".join(f"path {p} {i.name} ({', '.join(i.addresses) or 'no address'})"
                          for p, i in sorted(self.nics.items()))
        self.logger.log(NOTICE, "node <%s> incarnation %d: %s, UDP port %d, %s detector, "
                        "%s, %s", self.core.local, self.core.incarnation, paths,
                        self.settings.port, self.settings.detector,
                        "signed datagrams" if self.core.config.key else
                        "UNSIGNED datagrams (no key_file)",
                        "real-time thread" if self.settings.realtime_priority else "normal thread")

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.transport.stop)
        for watcher in list(self.watchers):
            self._close_watcher(watcher)

    async def reload(self, config: dict[str, Any]) -> None:
        """SIGHUP: read the cluster keys again (a key rotation); nothing else changes."""
        keys = cluster_keys(config, self.ctx.paths, self.ctx.config_path, self.logger)
        with self.lock:
            self.core.rekey(keys.current, keys.other)
        self.logger.log(NOTICE, "cluster keys reloaded: signing with %s, accepting %d key(s)",
                        config.get("key_file") or "no key", len(keys.accepted))

    def healthy(self) -> bool:
        return (self.transport.alive()
                and time.monotonic_ns() - self.transport.last_turn_ns < HEALTHY_TURN_NS)

    # ---- events: numbered under the lock, handled on the asyncio loop

    def unix_ns(self, monotonic_ns: int) -> int:
        return monotonic_ns + time.time_ns() - time.monotonic_ns()

    def _emit(self, events: list[Event]) -> None:
        """Called with `self.lock` held (heartbeat thread, or a servicer call)."""
        core = self.core
        view = core.view_id - sum(isinstance(e, (MemberJoined, MemberLeft)) for e in events)
        offset = time.time_ns() - time.monotonic_ns()
        batch = []
        for event in events:
            self.seq += 1
            paths_up: frozenset[int] = frozenset()
            if isinstance(event, (MemberJoined, MemberLeft)):
                view = event.view_id
            if isinstance(event, MemberJoined):
                paths_up = frozenset(link.path for link in core.links()
                                     if link.peer == event.member.node and link.up)
            batch.append(Emitted(self.seq, event, event.at_ns + offset, view, paths_up))
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._dispatch, batch)

    def _dispatch(self, batch: list[Emitted]) -> None:
        for item in batch:
            self._log(item.event)
            for watcher in list(self.watchers):
                if item.seq <= watcher.after_seq or watcher.overflowed:
                    continue
                if not _wants(watcher, item.event):
                    continue
                try:
                    watcher.queue.put_nowait(item)
                except asyncio.QueueFull:
                    watcher.overflowed = True
                    self._close_watcher(watcher)

    def _log(self, event: Event) -> None:
        log = self.logger.log
        if isinstance(event, (LinkUp, LinkDown, MemberJoined)):
            log(NOTICE, "%s", event.text)
        elif isinstance(event, MemberLeft):
            log(logging.WARNING if event.reason is LeaveReason.FAILED else NOTICE, "%s",
                event.text)
        elif isinstance(event, DomainConflict):
            log(logging.ERROR, "%s", event.text)
        else:
            log(logging.INFO, "%s", event.text)

    def watch(self, kind: str, snapshot: Callable[[], T],
              type_filter: int | None = None) -> tuple[Watcher, T]:
        """Register a watcher and take its snapshot atomically (nothing missed, nothing twice).

        Runs on the loop thread: events numbered after the snapshot are dispatched (on this same
        loop) only after the watcher is registered."""
        with self.lock:
            data = snapshot()
            watcher = Watcher(kind, self.seq, type_filter)
        self.watchers.add(watcher)
        return watcher, data

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def _close_watcher(self, watcher: Watcher) -> None:
        """End a stream: None wakes its reader, which then ends it (overflowed or stopping)."""
        self.watchers.discard(watcher)
        try:
            watcher.queue.put_nowait(None)
        except asyncio.QueueFull:
            while not watcher.queue.empty():
                watcher.queue.get_nowait()
            watcher.queue.put_nowait(None)

    def changed(self, events: list[Event]) -> None:
        """After a servicer call changed the core (lock held): emit and wake the thread."""
        if events:
            self._emit(events)
        self.transport.wake()


def _wants(watcher: Watcher, event: Event) -> bool:
    if watcher.kind == "membership":
        return isinstance(event, (LinkUp, LinkDown, MemberJoined, MemberLeft))
    if isinstance(event, (NamePublished, NameWithdrawn)):
        return watcher.type_filter is None or event.publication.type == watcher.type_filter
    return False


def _grpc_ports(ctx: DaemonContext) -> dict[str, int]:
    ports = {name: port for name, port in TCP_PORTS.items() if name != "heartbeat"}
    listen = ctx.args.listen or ctx.config.get("listen") or f":{TCP_PORTS['heartbeat']}"
    if listen != "none":
        ports["heartbeat"] = int(listen.rpartition(":")[2])
    return ports


def cluster_keys(config: dict[str, Any], paths: NodePaths, config_path: Path | None,
                 logger: logging.Logger) -> ClusterKeys:
    """heartbeat.cfg's keys (ConfigError when there is none and not `insecure`)."""
    keys = load_keys(paths, config.get("key_file"), config.get("accept_key_file"),
                     insecure=config["insecure"], config_path=config_path)
    if keys.current is None:
        logger.warning("insecure = yes and no key_file: datagrams are unsigned; anyone on the "
                       "heartbeat networks can join the cluster or speak for a node")
    for setting in ("key_file", "accept_key_file"):
        if config.get(setting) and key_path(config[setting], paths).stat().st_mode & 0o077:
            logger.warning("cluster key %s is readable by group or others: chmod 600 it",
                           key_path(config[setting], paths))
    return keys


def build(ctx: DaemonContext) -> HeartbeatApp:
    config_path = Path(ctx.args.config) if ctx.args.config else ctx.paths.config_file("heartbeat")
    settings = hbconfig.settings_from(ctx.config, config_path, ctx.paths)
    available = read_nics()
    hbconfig.check_nics(settings.nics, available, config_path)
    keys = cluster_keys(ctx.config, ctx.paths, config_path, ctx.logger)
    nics = {path: available[nic] for path, nic in settings.nics.items()}
    paths = {path: PathConfig(info.name, info.addresses, tuple(settings.peers.get(path, ())))
             for path, info in nics.items()}
    try:
        core_config = HeartbeatConfig(settings.netid, settings.domain, paths, keys.current,
                                      _grpc_ports(ctx), settings.timing, keys.other)
    except ValueError as error:
        raise ConfigError(str(error), path=str(config_path)) from None
    incarnation = persist_incarnation(ctx.paths.lib, time.time_ns(), ctx.logger)
    core = HeartbeatCore(core_config, incarnation, time.monotonic_ns())
    return HeartbeatApp(ctx, settings, core, nics)


SPEC = DaemonSpec(
    name="heartbeat",
    description="skyge heartbeat daemon: membership over UDP on every heartbeat NIC, link state, "
                "the cluster name table (the seed's jiluos)",
    build=build,
    config_fields=hbconfig.FIELDS,
)
