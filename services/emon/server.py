"""The Emon gRPC servicer: proto <-> core, nothing else.

Unknown probe names answer NOT_FOUND naming them and the known ones; bad fields INVALID_ARGUMENT
naming the field and its range. Watch streams start with the latest sample of each probe asked
for (taken atomically with the registration), then carry every new one; they end with
UNAVAILABLE when the daemon stops and RESOURCE_EXHAUSTED if the client falls too far behind.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc

from skyge.services.common.config import ConfigError
from skyge.services.common.text import excerpts
from skyge.v1 import emon_pb2 as pb, emon_pb2_grpc

from .actions import ActionRunner
from .core import WATCH_QUEUE_LIMIT, EmonCore, Sample
from .publisher import BusPublisher
from .watermarks import Action, Direction, WatermarkSpec, WatermarkState

SERVICE = "skyge.v1.Emon"
HISTORY_LIMIT_MAX = 100_000
_DIRECTIONS = {Direction.ABOVE: pb.DIRECTION_ABOVE, Direction.BELOW: pb.DIRECTION_BELOW,
               Direction.EQUAL: pb.DIRECTION_EQUAL}
_ACTIONS = {Action.SCRIPT: pb.WATERMARK_SCRIPT, Action.SWITCH: pb.WATERMARK_SWITCH,
            Action.REFUSE_NEW: pb.WATERMARK_REFUSE_NEW}


def sample_pb(sample: Sample) -> pb.Sample:
    return pb.Sample(probe=sample.probe, value=sample.value, unit=sample.unit,
                     time_unix_ns=sample.time_unix_ns)


def watermark_pb(spec: WatermarkSpec, state: WatermarkState) -> pb.Watermark:
    return pb.Watermark(
        probe=spec.probe, name=spec.name, threshold=spec.threshold,
        direction=_DIRECTIONS[spec.direction], action=_ACTIONS[spec.action], script=spec.script,
        armed=state.armed, last_fired_unix_ns=state.last_fired_unix_ns,
        last_exit_status=state.last_exit_status, hysteresis=spec.hysteresis, sustain=spec.sustain,
        fired_count=state.fired_count, config_file=spec.path, config_line=spec.line,
        last_result=state.last_result)


class EmonServicer(emon_pb2_grpc.EmonServicer):
    """Over the daemon's parts (`daemon.EmonApp` builds it): the sampling core, the action
    runner, the bus publisher (None when not publishing) and the reload of the config files."""

    def __init__(self, core: EmonCore, actions: ActionRunner, publisher: BusPublisher | None,
                 reload: Callable[[], Awaitable[None]], started_unix_ns: int) -> None:
        self.core, self.actions, self.publisher = core, actions, publisher
        self._reload = reload
        self.started_unix_ns = started_unix_ns

    async def _check_names(self, names: Sequence[str], context: grpc.aio.ServicerContext) -> None:
        unknown = self.core.unknown(names)
        if unknown:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"probe: no probe named {excerpts(unknown)} on this node "
                                f"(probes: {', '.join(self.core.names())})")

    def _probes(self) -> list[pb.Probe]:
        result = []
        for name in self.core.names():
            runtime = self.core.runtimes[name]
            p = runtime.probe
            result.append(pb.Probe(name=p.name, unit=p.unit, builtin=p.builtin, source=p.source,
                                   interval_ms=p.interval_ms, desc=p.desc, errors=runtime.errors,
                                   last_error=runtime.last_error))
        return result

    def _watermarks(self, probe: str | None = None) -> list[pb.Watermark]:
        return [watermark_pb(spec, state) for spec, state in self.core.engine.items(probe)]

    async def ListProbes(self, request: pb.ListProbesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListProbesResponse:
        return pb.ListProbesResponse(probes=self._probes())

    async def GetCurrent(self, request: pb.GetCurrentRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetCurrentResponse:
        await self._check_names(request.probes, context)
        return pb.GetCurrentResponse(samples=[sample_pb(s) for s in
                                              self.core.current(list(request.probes))])

    async def GetHistory(self, request: pb.GetHistoryRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetHistoryResponse:
        if not request.probe:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"probe: required (one of {', '.join(self.core.names())})")
        if request.limit > HISTORY_LIMIT_MAX:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"limit: must be from 0 to "
                                f"{HISTORY_LIMIT_MAX}, got {request.limit}")
        await self._check_names([request.probe], context)
        return pb.GetHistoryResponse(samples=[sample_pb(s) for s in
                                              self.core.history(request.probe, request.limit)])

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Sample]:
        await self._check_names(request.probes, context)
        watcher, latest = self.core.watch(list(request.probes))
        try:
            for sample in latest:
                yield sample_pb(sample)
            while (new := await watcher.next()) is not None:
                yield sample_pb(new)
            if watcher.end == "overflow":
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"the client fell {WATCH_QUEUE_LIMIT} samples behind; "
                                    f"watch again")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the emon daemon is stopping")
        finally:
            self.core.unwatch(watcher)

    async def ListWatermarks(self, request: pb.ListWatermarksRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListWatermarksResponse:
        if request.probe:
            await self._check_names([request.probe], context)
        return pb.ListWatermarksResponse(watermarks=self._watermarks(request.probe or None),
                                         refusing_new=bool(self.core.engine.refusing_new()))

    async def Reload(self, request: pb.ReloadRequest,
                     context: grpc.aio.ServicerContext) -> pb.ReloadResponse:
        try:
            await self._reload()
        except ConfigError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{exc} (the running configuration is kept)")
        return pb.ReloadResponse(probes=self._probes(), watermarks=self._watermarks())

    async def GetStats(self, request: pb.GetEmonStatsRequest,
                       context: grpc.aio.ServicerContext) -> pb.EmonStats:
        publisher, actions = self.publisher, self.actions
        cpu = time.process_time()
        return pb.EmonStats(
            samples=self.core.samples, probe_errors=self.core.probe_errors,
            published=publisher.published if publisher else 0,
            publish_failures=publisher.failures if publisher else 0,
            publish_dropped=publisher.dropped if publisher else 0,
            bus_reachable=publisher.reachable if publisher else False,
            watermarks_fired=actions.fired, scripts_run=actions.scripts_run, cpu_seconds=cpu,
            started_unix_ns=self.started_unix_ns, publishing=publisher is not None)
