"""skyge-bus as a daemon: config keys, the app the runner drives, the spec.

bus.cfg (libconfig, every key optional):

    max_retained_bytes = 67108864;  # bytes one bus keeps at most (besides retain_messages)
    collect_logs = "all";           # log collection: "all" members, "local" node, or "none"
    log_max_bytes = 10485760;       # size of a collected log file before it rotates
    log_backups = 5;                # rotated copies kept (domain-N.log.1 ..)
    domain = 0;                     # this node's domain; 0 = heartbeat.cfg's, then the membership's
"""
from __future__ import annotations

import asyncio

import grpc

from skyge.services.bus.collector import LogCollector
from skyge.services.bus.core import RETAINED_BYTES_DEFAULT, BusCore, BusStore, SequenceStore
from skyge.services.bus.server import SERVICE, BusServer
from skyge.services.common.config import Field, choice, integer
from skyge.services.common.membership import MembershipFollower, PeerChannels
from skyge.services.common.runner import DaemonApp, DaemonContext, DaemonSpec

FIELDS = (
    Field("max_retained_bytes", integer(1 << 20, 1 << 32), default=RETAINED_BYTES_DEFAULT,
          help="bytes of messages one bus retains at most"),
    Field("collect_logs", choice("all", "local", "none"), default="all",
          help="collect the log buses of all members, of this node only, or none"),
    Field("log_max_bytes", integer(4096, 1 << 32), default=10 << 20,
          help="size of a collected log file before it rotates"),
    Field("log_backups", integer(0, 100), default=5, help="rotated log files kept"),
    Field("domain", integer(0, 64), default=0,
          help="this node's domain (0: from heartbeat.cfg, else the membership)"),
)


class BusApp(DaemonApp):
    service_names = (SERVICE,)

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.logger = ctx.logger
        self.configured_domain = ctx.configured_domain()
        self.core = BusCore(BusStore(ctx.paths.etc / "bus"), SequenceStore(ctx.paths.lib / "bus"),
                            max_retained_bytes=ctx.config["max_retained_bytes"],
                            domain=self.domain)
        self.follower = MembershipFollower(ctx.paths)
        self.channels = PeerChannels(self.follower, "bus", ctx.tls)
        self.server = BusServer(self.core, self.follower, self.channels, self.domain)
        self.follower.listeners.append(self.server)
        self.collector: LogCollector | None = None
        if ctx.config["collect_logs"] != "none":
            self.collector = LogCollector(self.follower, ctx.paths.socket("bus"),
                                          ctx.paths.log / "cluster", ctx.config["collect_logs"],
                                          ctx.config["log_max_bytes"], ctx.config["log_backups"],
                                          local_domain=self.domain,
                                          state_file=ctx.paths.lib / "bus" / "collector.json")
        self._announced = False

    def domain(self) -> int:
        return self.follower.local_domain or self.configured_domain

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((self.server.handler(),))

    async def start(self) -> None:
        self.core.load()
        _, created = self.core.init(())
        self.logger.info("%d buses (%d standard ones created now): %s", len(self.core.buses),
                         len(created), ", ".join(sorted(self.core.buses)))
        self.follower.listeners.append(self)
        self.follower.start()
        if self.collector is not None:
            self.collector.start()

    def on_view(self, follower: MembershipFollower) -> None:
        if not self._announced:
            self._announced = True
            if self.configured_domain and follower.local_domain != self.configured_domain:
                self.logger.warning("the membership says this node is domain %d, the config %d",
                                    follower.local_domain, self.configured_domain)
            self.logger.info("membership known: this node is domain %d, members %s",
                             follower.local_domain, sorted(follower.peers))

    def on_lost(self, follower: MembershipFollower) -> None:
        self._announced = False

    async def stop(self) -> None:
        message = f"the bus daemon of domain {self.domain()} is stopping"
        self.core.close_all("UNAVAILABLE", message)
        await self.server.stop()
        if self.collector is not None:
            await self.collector.stop()
        await self.follower.stop()
        await asyncio.sleep(0.05)  # let the streams send their status
        await self.channels.close()


def build(ctx: DaemonContext) -> BusApp:
    return BusApp(ctx)


SPEC = DaemonSpec(
    name="bus",
    description="skyge bus daemon: named message buses across the cluster, ordered and bounded, "
                "with log collection (the seed's messagebus and youchai)",
    build=build,
    config_fields=FIELDS,
)
