"""The emon core: samples every probe at its interval, keeps a short history, feeds live watchers,
the bus publisher and the watermark engine. No gRPC here (see server.py), no psutil (probes.py).

Each probe has its own task, scheduled on a fixed grid (start + k * interval): a slow sample
delays only its own probe and skips the ticks it overran, never piling up. A failed sample is
counted and skipped; its error is logged when it differs from the previous one, and recovery is
logged once.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Sequence

from .probes import Probe, ProbeError
from .watermarks import Crossing, WatermarkEngine, WatermarkSpec

WATCH_QUEUE_LIMIT = 4096  # samples a slow Watch client may fall behind before it is cut off


@dataclass(frozen=True)
class Sample:
    probe: str
    value: float
    unit: str
    time_unix_ns: int


@dataclass
class ProbeRuntime:
    probe: Probe
    history: collections.deque[Sample]
    current: Sample | None = None
    errors: int = 0
    last_error: str = ""
    failing: int = 0  # consecutive failed samples
    task: asyncio.Task | None = None


class Watcher:
    """One Watch stream: the samples of the probes it asked for, in order, bounded."""

    def __init__(self, probes: frozenset[str] | None) -> None:
        self.probes = probes
        self.items: collections.deque[Sample] = collections.deque()
        self.event = asyncio.Event()
        self.end: str | None = None  # "stopping" or "overflow"

    def wants(self, probe: str) -> bool:
        return self.probes is None or probe in self.probes

    def push(self, sample: Sample) -> None:
        if self.end is not None:
            return
        if len(self.items) >= WATCH_QUEUE_LIMIT:
            self.finish("overflow")
            return
        self.items.append(sample)
        self.event.set()

    def finish(self, reason: str) -> None:
        if self.end is None:
            self.end = reason
        self.event.set()

    async def next(self) -> Sample | None:
        """The next sample, or None when the stream must end (see `end`)."""
        while not self.items:
            if self.end is not None:
                return None
            self.event.clear()
            await self.event.wait()
        if self.end == "overflow":
            return None
        return self.items.popleft()


@dataclass
class EmonCore:
    probes: Sequence[Probe]
    specs: Iterable[WatermarkSpec] = ()
    history_size: int = 300
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("skyge.emon"))
    #: called with each sample (the bus publisher's offer)
    on_sample: Callable[[Sample], None] | None = None
    #: called with each watermark crossing and the probe's unit (the action runner)
    on_crossing: Callable[[Crossing, str], None] | None = None
    #: called after a reload changed the watermarks (refuse_new may change)
    on_reconfigured: Callable[[], None] | None = None
    clock: Callable[[], int] = time.time_ns

    def __post_init__(self) -> None:
        self.engine = WatermarkEngine.of(self.specs)
        self.runtimes: dict[str, ProbeRuntime] = {
            p.name: ProbeRuntime(p, collections.deque(maxlen=self.history_size))
            for p in self.probes}
        self.watchers: set[Watcher] = set()
        self.samples = 0
        self.probe_errors = 0
        self.running = False

    # ---- life

    def start(self) -> None:
        self.running = True
        for runtime in self.runtimes.values():
            self._start_probe(runtime)

    def _start_probe(self, runtime: ProbeRuntime) -> None:
        runtime.task = asyncio.get_running_loop().create_task(
            self._loop(runtime), name=f"probe-{runtime.probe.name}")

    async def stop(self) -> None:
        self.running = False
        for watcher in list(self.watchers):
            watcher.finish("stopping")
        tasks = [r.task for r in self.runtimes.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runtime in self.runtimes.values():
            await runtime.probe.close()

    def healthy(self) -> bool:
        """False if a probe task died (a bug: probe errors are caught)."""
        return all(r.task is None or not r.task.done() for r in self.runtimes.values()) \
            or not self.running

    async def reconfigure(self, probes: Sequence[Probe], specs: Iterable[WatermarkSpec]) -> None:
        """Apply a reload: changed or removed probes restart or stop; history of kept ones stays."""
        new = {p.name: p for p in probes}
        stopping = []
        for name, runtime in list(self.runtimes.items()):
            replacement = new.get(name)
            if replacement is not None and replacement.definition() == runtime.probe.definition():
                new[name] = runtime.probe  # unchanged: keep the running one
                continue
            del self.runtimes[name]
            if runtime.task is not None:
                runtime.task.cancel()
                stopping.append(runtime)
            if replacement is not None and replacement.unit == runtime.probe.unit:
                self.runtimes[name] = ProbeRuntime(replacement, runtime.history)
        await asyncio.gather(*(r.task for r in stopping if r.task), return_exceptions=True)
        for runtime in stopping:
            await runtime.probe.close()
        for name, probe in new.items():
            if name not in self.runtimes:
                self.runtimes[name] = ProbeRuntime(probe,
                                                   collections.deque(maxlen=self.history_size))
            runtime = self.runtimes[name]
            if self.running and (runtime.task is None or runtime.task.done()):
                self._start_probe(runtime)
        self.engine.replace(specs)
        if self.on_reconfigured is not None:
            self.on_reconfigured()

    # ---- sampling

    async def _loop(self, runtime: ProbeRuntime) -> None:
        loop = asyncio.get_running_loop()
        interval = runtime.probe.interval_ms / 1000
        due = loop.time()
        while True:
            taken_at = self.clock()
            try:
                value = await runtime.probe.read()
            except ProbeError as exc:
                self._failed(runtime, str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.debug("probe %s failed", runtime.probe.name, exc_info=True)
                self._failed(runtime, f"{type(exc).__name__}: {exc}")
            else:
                self.record(runtime, value, taken_at)
            due += interval
            now = loop.time()
            if due <= now:  # overran: skip the missed ticks, stay on the grid
                due += ((now - due) // interval + 1) * interval
            await asyncio.sleep(due - now)

    def _failed(self, runtime: ProbeRuntime, error: str) -> None:
        runtime.errors += 1
        runtime.failing += 1
        self.probe_errors += 1
        if error != runtime.last_error:
            self.logger.warning("probe %s: sample skipped: %s", runtime.probe.name, error)
        runtime.last_error = error

    def record(self, runtime: ProbeRuntime, value: float, time_unix_ns: int) -> Sample:
        """Store one sample and hand it to watchers, the publisher and the watermarks."""
        probe = runtime.probe
        if runtime.failing:
            self.logger.info("probe %s: sampling again after %d failed samples", probe.name,
                             runtime.failing)
            runtime.failing = 0
        sample = Sample(probe.name, value, probe.unit, time_unix_ns)
        runtime.current = sample
        runtime.history.append(sample)
        self.samples += 1
        for watcher in list(self.watchers):
            if watcher.wants(probe.name):
                watcher.push(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        for crossing in self.engine.observe(probe.name, value, time_unix_ns):
            if self.on_crossing is not None:
                self.on_crossing(crossing, probe.unit)
        return sample

    # ---- queries

    def names(self) -> list[str]:
        return sorted(self.runtimes)

    def unknown(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n not in self.runtimes]

    def current(self, names: Sequence[str] = ()) -> list[Sample]:
        chosen = list(names) or self.names()
        return [s for s in (self.runtimes[n].current for n in chosen) if s is not None]

    def history(self, name: str, limit: int = 0) -> list[Sample]:
        samples = list(self.runtimes[name].history)
        return samples[-limit:] if limit else samples

    def watch(self, names: Sequence[str] = ()) -> tuple[Watcher, list[Sample]]:
        """Register a watcher and return it with the latest samples, atomically (no gap)."""
        watcher = Watcher(frozenset(names) if names else None)
        if not self.running:
            watcher.finish("stopping")
        self.watchers.add(watcher)
        return watcher, self.current(names)

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
