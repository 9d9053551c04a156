"""skyge-emon as a daemon: config keys, the app the runner drives, the spec.

emon.cfg (libconfig, every key optional):

    interval_ms = 1000;                     # time between two samples of a probe
    history = 300;                          # samples kept per probe (GetHistory)
    publish = "yes";                        # publish samples on PROBE.emon.skyge.com
    ecs_dir = "/etc/skyge/emon/ecs";        # watermark folders PROBE/service.cfg (under the root)
    probes_dir = "/etc/skyge/emon/probes";  # plug-in probe folders NAME/probe.cfg (under the root)
    ha_timeout = 900;                       # s to wait for the HA daemon to switch a service
    domain = 0;                             # this node's domain; 0 = heartbeat.cfg's, then
                                            # the heartbeat daemon's (used by `switch`)

`ecs_dir = "/etc/skygeha_8/ecs";` reads the seed's ECS folders as they are. A bad plug-in or
watermark file stops the daemon at start (exit 2, naming file, line, key and reason); a bad file
at Reload is refused and the running configuration kept.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from skyge.services.common.config import Field, boolean, integer, string
from skyge.services.common.runner import (DaemonApp, DaemonContext, DaemonSpec, StartupError,
                                          heartbeat_addresses)
from skyge.v1 import emon_pb2_grpc

from .actions import ActionRunner, HaLink
from .core import EmonCore, Sample
from .metrics import METRICS_PORT, MetricsServer
from .probes import Probe, builtin_probes, load_plugins
from .publisher import BusPublisher
from .server import SERVICE, EmonServicer
from .watermarks import WatermarkSpec, load_ecs_dir

_ABSOLUTE = string(r"/.*", "an absolute path")

FIELDS = (
    Field("interval_ms", integer(100, 3_600_000), default=1000,
          help="time between two samples of a probe, ms"),
    Field("history", integer(1, 100_000), default=300, help="samples kept per probe"),
    Field("publish", boolean, default=True, help="publish samples on the emon buses"),
    Field("ecs_dir", _ABSOLUTE, default="/etc/skyge/emon/ecs",
          help="watermark folders PROBE/service.cfg, under the node root"),
    Field("probes_dir", _ABSOLUTE, default="/etc/skyge/emon/probes",
          help="plug-in probe folders NAME/probe.cfg, under the node root"),
    Field("ha_timeout", integer(1, 86400), default=900,
          help="s to wait for the HA daemon to switch one service"),
    Field("domain", integer(0, 64), default=0,
          help="this node's domain (0: heartbeat.cfg's, else the heartbeat daemon's)"),
    Field("metrics_listen", string(r"none|.+:\d{1,5}", 'HOST:PORT or "none"'), default="",
          help=f"the node's Prometheus scrape target (default: port {METRICS_PORT} on the "
               f"addresses of heartbeat.cfg's NICs, none without them; HTTPS with client "
               f"certificates when the node has TLS files)"),
)


class EmonApp(DaemonApp):
    service_names = (SERVICE,)

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.logger = ctx.logger
        config = ctx.config
        self.interval_ms: int = config["interval_ms"]
        self.ecs_dir: Path = ctx.paths.under(config["ecs_dir"])
        self.probes_dir: Path = ctx.paths.under(config["probes_dir"])
        self.builtins = builtin_probes(ctx.paths.root, self.interval_ms)
        probes, specs = self.load()  # ConfigError here: the runner exits 2 naming the file
        self.publisher = (BusPublisher(ctx.paths.socket("bus"), self.logger)
                          if config["publish"] else None)
        self.core = EmonCore(probes, specs, history_size=config["history"], logger=self.logger,
                             on_sample=self._on_sample)
        self.actions = ActionRunner(
            ctx.paths, self.logger,
            HaLink(ctx.paths, self.logger, configured_domain=config["domain"],
                   command_timeout_s=config["ha_timeout"]),
            state_of=lambda spec: self.core.engine.states.get(spec.key),
            refusing=self.core.engine.refusing_new)
        self.core.on_crossing = self.actions.dispatch
        self.core.on_reconfigured = self._reconfigured
        self.metrics = self._metrics_server(config["metrics_listen"])

    def _metrics_server(self, listen: str) -> MetricsServer | None:
        """The scrape target: `metrics_listen`, else the heartbeat paths' addresses; none on a
        node without heartbeat.cfg (not a cluster node yet: nothing to expose everywhere)."""
        if listen == "none":
            return None
        addresses = [listen] if listen else [f"{a}:{METRICS_PORT}"
                                             for a in heartbeat_addresses(self.ctx.paths)]
        if not addresses:
            self.logger.info("no heartbeat path addresses: no Prometheus metrics (set "
                             "metrics_listen)")
            return None
        return MetricsServer(self.ctx.paths, addresses, self.ctx.tls is not None)

    def load(self) -> tuple[list[Probe], list[WatermarkSpec]]:
        """The probes (built-ins + plug-ins) and watermarks as the files say now."""
        plugins = load_plugins(self.probes_dir, self.interval_ms)
        probes: list[Probe] = [*self.builtins, *plugins]
        specs = load_ecs_dir(self.ecs_dir, {p.name: p.unit for p in probes})
        return probes, specs

    async def reload(self, config: dict[str, Any] | None = None) -> None:
        """SIGHUP or the Reload RPC: probes and watermarks from their files again."""
        probes, specs = self.load()
        await self.core.reconfigure(probes, specs)
        self._describe("reloaded")

    def _reconfigured(self) -> None:
        # watermarks were replaced: a fired refuse_new may be gone (or kept)
        self.actions.update_refuse()

    def _on_sample(self, sample: Sample) -> None:
        if self.publisher is not None:
            self.publisher.offer(sample.probe, sample.value, sample.unit, sample.time_unix_ns)

    def _describe(self, what: str) -> None:
        plugins = [p.name for p in (r.probe for r in self.core.runtimes.values()) if not p.builtin]
        self.logger.info("%s: probes %s (plug-ins: %s), every %d ms; %d watermarks%s", what,
                         ", ".join(self.core.names()), ", ".join(plugins) or "none",
                         self.interval_ms, len(self.core.engine.specs),
                         "".join(f"; {spec.describe()}" for spec, _ in self.core.engine.items()))

    def register(self, server: grpc.aio.Server) -> None:
        servicer = EmonServicer(self.core, self.actions, self.publisher, self.reload,
                                self.ctx.started_unix_ns)
        emon_pb2_grpc.add_EmonServicer_to_server(servicer, server)

    async def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()
        self.core.start()
        self._describe("sampling")
        if self.metrics is not None:
            try:
                self.metrics.start()
            except OSError as error:
                where = ", ".join(self.metrics.addresses)
                raise StartupError(f"metrics_listen: cannot serve {where}: "
                                   f"{error.strerror or error}") from None
            self.logger.info("Prometheus metrics on %s (%s)", ", ".join(self.metrics.addresses),
                             "HTTPS, client certificates of the cluster CA" if self.metrics.tls
                             else "HTTP")

    async def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        await self.core.stop()
        await self.actions.close()
        if self.publisher is not None:
            await self.publisher.stop()

    def healthy(self) -> bool:
        return self.core.healthy()


def build(ctx: DaemonContext) -> EmonApp:
    return EmonApp(ctx)


SPEC = DaemonSpec(
    name="emon",
    description="skyge emon daemon: CPU, memory and disk probes (plus plug-ins) published on the "
                "emon buses, with watermarks that run scripts or switch HA services away (the "
                "seed's emon and sk_dynamic_ecs)",
    build=build,
    config_fields=FIELDS,
)
