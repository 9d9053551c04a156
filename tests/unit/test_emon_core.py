"""The emon core and its helpers in-process: sampling, history, watchers, bad probes, the bus
publisher against a fake bus daemon, scripts, and the HA calls against a fake HA daemon."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc

from skyge.services.common.paths import NodePaths
from skyge.services.emon.actions import ActionRunner, HaLink, run_script
from skyge.services.emon.core import EmonCore
from skyge.services.emon.probes import Probe, ProbeError
from skyge.services.emon.publisher import BusPublisher
from skyge.services.emon.watermarks import Action, Direction, WatermarkSpec
from skyge.v1 import bus_pb2, bus_pb2_grpc, ha_pb2, ha_pb2_grpc


class ScriptedProbe(Probe):
    """Returns the values of a list in turn (an Exception item raises it), then repeats the last."""

    def __init__(self, name, values, interval_ms=20, unit="u"):
        super().__init__(name, unit, interval_ms)
        self.values = list(values)

    async def read(self):
        item = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(item, Exception):
            raise item
        return float(item)


def wm(probe, threshold, action=Action.SCRIPT, script="", direction="above", hysteresis=1.0,
       timeout=5.0):
    return WatermarkSpec(probe, f"wm_{threshold}", float(threshold), Direction(direction), action,
                         script, hysteresis, 1, timeout)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# ---- core

def test_core_samples_keeps_history_and_feeds_watchers_and_crossings():
    async def scenario():
        crossings, published = [], []
        core = EmonCore([ScriptedProbe("a", [1, 2, 3, 50, 60, 1]), ScriptedProbe("b", [7])],
                        [wm("a", 10)], history_size=4,
                        on_sample=published.append,
                        on_crossing=lambda c, unit: crossings.append((c.fired, c.value, unit)))
        core.start()
        watcher, latest = core.watch(["a"])
        await until(lambda: core.runtimes["a"].history and core.runtimes["a"].current.value == 1
                    and len(crossings) == 2)
        seen = []
        while watcher.items:
            seen.append(await watcher.next())
        await core.stop()
        assert crossings == [(True, 50.0, "u"), (False, 1.0, "u")]  # fired once, re-armed once
        assert len(core.history("a")) == 4 and core.history("a", 2)[-1].value == 1
        assert [s.value for s in core.current(["b"])] == [7.0]
        assert {s.probe for s in published} == {"a", "b"}
        assert latest == []  # registered before the first sample: every sample of "a", in order
        assert [s.value for s in seen[:6]] == [1, 2, 3, 50, 60, 1]
        assert {s.probe for s in seen} == {"a"}
        assert watcher.end == "stopping" and await watcher.next() is None
        assert core.unknown(["a", "zz"]) == ["zz"]
    asyncio.run(scenario())


def test_bad_samples_are_skipped_counted_and_logged_once(caplog):
    async def scenario():
        core = EmonCore([ScriptedProbe("a", [ProbeError("printed 'x', not a number")] * 5 + [4])],
                        logger=logging.getLogger("test.emon"))
        core.start()
        await until(lambda: core.runtimes["a"].current is not None)
        await core.stop()
        runtime = core.runtimes["a"]
        assert runtime.errors == 5 and core.probe_errors == 5 and core.healthy()
        assert runtime.last_error == "printed 'x', not a number"
        assert next(s.value for s in core.history("a")) == 4
    with caplog.at_level(logging.INFO, logger="test.emon"):
        asyncio.run(scenario())
    skipped = [r for r in caplog.records if "sample skipped" in r.getMessage()]
    assert len(skipped) == 1
    assert any("sampling again after 5 failed samples" in r.getMessage() for r in caplog.records)


def test_unexpected_exception_in_a_probe_does_not_kill_sampling():
    async def scenario():
        core = EmonCore([ScriptedProbe("a", [ZeroDivisionError("bug"), 3])])
        core.start()
        await until(lambda: core.runtimes["a"].current is not None)
        assert core.healthy()
        await core.stop()
        assert core.runtimes["a"].last_error == "ZeroDivisionError: bug"
    asyncio.run(scenario())


def test_reconfigure_keeps_unchanged_probes_and_watermark_state():
    async def scenario():
        keep, drop = ScriptedProbe("keep", [100]), ScriptedProbe("drop", [1])
        core = EmonCore([keep, drop], [wm("keep", 10)])
        core.start()
        await until(lambda: core.runtimes["keep"].current is not None)
        await core.reconfigure([keep, ScriptedProbe("new", [5])], [wm("keep", 10)])
        assert core.names() == ["keep", "new"]
        assert core.runtimes["keep"].history  # history kept
        (_spec, state), = core.engine.items()
        assert state.armed is False and state.fired_count == 1  # not fired again by a reload
        await until(lambda: core.runtimes["new"].current is not None)
        await core.stop()
    asyncio.run(scenario())


# ---- bus publisher against a fake bus daemon

class FakeBus(bus_pb2_grpc.BusServicer):
    def __init__(self):
        self.buses = {"cpu_load.emon.skyge.com"}
        self.messages = []

    async def Publish(self, request, context):
        if request.name not in self.buses:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no bus {request.name}")
        self.messages.extend((request.name, json.loads(m.data), m.content_type)
                             for m in request.messages)
        return bus_pb2.PublishAck(first_sequence=1, count=len(request.messages))

    async def CreateBus(self, request, context):
        self.buses.add(request.name)
        return bus_pb2.BusInfo(domain=1, name=request.name)


async def serve(tmp_path, name, add, servicer):
    server = grpc.aio.server()
    add(servicer, server)
    server.add_insecure_port(f"unix:{tmp_path / name}")
    await server.start()
    return server


def test_publisher_never_blocks_counts_outage_and_recovers(tmp_path, caplog):
    async def scenario():
        publisher = BusPublisher(tmp_path / "bus.sock", logging.getLogger("test.pub"))
        publisher.start()
        for i in range(300):  # bus daemon down: offers return at once, the queue is bounded
            publisher.offer("cpu_load", float(i), "percent", i)
        await until(lambda: publisher.failures >= 2)
        assert publisher.dropped == 300 - 256 and not publisher.reachable
        bus = FakeBus()
        server = await serve(tmp_path, "bus.sock", bus_pb2_grpc.add_BusServicer_to_server, bus)
        publisher.offer("plugin_x", 1.0, "jobs", 999)  # a plug-in's bus is created on first use
        await until(lambda: publisher.reachable and publisher.idle, timeout=15)
        await publisher.stop()
        await server.stop(None)
        return bus, publisher

    with caplog.at_level(logging.INFO, logger="test.pub"):
        bus, publisher = asyncio.run(scenario())
    cpu = [m for name, m, _ in bus.messages if name == "cpu_load.emon.skyge.com"]
    # FIFO and the newest kept: 44 dropped while down (45 if the plug-in's sample met a full queue)
    assert publisher.dropped in (44, 45)
    assert [m["value"] for m in cpu] == [float(i) for i in range(publisher.dropped, 300)]
    assert cpu[-1] == {"probe": "cpu_load", "value": 299.0, "unit": "percent", "time_unix_ns": 299}
    assert ("plugin_x.emon.skyge.com", {"probe": "plugin_x", "value": 1.0, "unit": "jobs",
                                        "time_unix_ns": 999}, "application/json") in bus.messages
    assert publisher.published == 301 - publisher.dropped
    warnings = [r for r in caplog.records if "cannot publish" in r.getMessage()]
    assert len(warnings) == 1  # logged once, then counted
    assert any(f"publishing samples on the bus again ({publisher.dropped} dropped" in r.getMessage()
               for r in caplog.records)


# ---- scripts

def test_script_gets_env_and_its_exit_status_and_output_tail_are_logged(tmp_path, caplog):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho \"$SKYGE_EMON_PROBE $SKYGE_EMON_WATERMARK "
                      "$SKYGE_EMON_VALUE $SKYGE_EMON_DIRECTION\"\nseq 1 5000\necho bye >&2\n"
                      "exit 3\n")
    script.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="test.script"):
        status, result = asyncio.run(run_script(wm("cpu_load", 90, script=str(script)), 95.5,
                                                "percent", tmp_path,
                                                logging.getLogger("test.script")))
    assert status == 3 and result.startswith("script exited 3 in ")
    (record,) = [r for r in caplog.records if str(script) in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.endswith("4999 | 5000 | bye") and "cpu_load wm_90" not in message  # a tail
    assert len(message) < 2600


def test_script_timeout_kills_it(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho started\nexec sleep 30\n")
    script.chmod(0o755)
    started = time.monotonic()
    status, result = asyncio.run(run_script(wm("cpu_load", 90, script=str(script), timeout=0.3),
                                            95, "percent", tmp_path, logging.getLogger("t")))
    assert time.monotonic() - started < 5
    assert status == -15 and result == "script timed out after 0.3 s (killed by signal 15)"


# ---- HA actions against a fake HA daemon

class FakeHa(ha_pb2_grpc.HaServicer):
    def __init__(self):
        self.commands = []

    async def Status(self, request, context):
        S = ha_pb2.ServiceStatus
        return ha_pb2.StatusResponse(services=[
            S(type=ha_pb2.TAKEOVER_FIFO, slot=1, name="mysql", state=ha_pb2.SERVICE_RUNNING,
              active_domain=2),
            S(type=ha_pb2.TAKEOVER_STACK, slot=7, name="web", state=ha_pb2.SERVICE_RUNNING,
              active_domain=2),
            S(type=ha_pb2.TAKEOVER_FIFO, slot=2, name="other", state=ha_pb2.SERVICE_RUNNING,
              active_domain=3)])

    async def Command(self, request, context):
        self.commands.append((request.domain, request.type, request.slot, request.action))
        if request.slot == 7:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no waiter")
        return ha_pb2.CommandReply(message=f"switched slot {request.slot}")


def _runner(tmp_path, engine_specs=()):
    from skyge.services.emon.watermarks import WatermarkEngine
    engine = WatermarkEngine.of(engine_specs)
    paths = NodePaths.at(tmp_path)
    paths.run.mkdir(parents=True, exist_ok=True)
    ha = HaLink(paths, logging.getLogger("test.ha"), configured_domain=2)
    return engine, ActionRunner(paths, logging.getLogger("test.ha"), ha,
                                state_of=lambda s: engine.states.get(s.key),
                                refusing=engine.refusing_new)


def test_switch_asks_ha_to_switch_each_service_running_here(tmp_path):
    async def scenario():
        fake = FakeHa()
        (tmp_path / "run" / "skyge").mkdir(parents=True)
        server = await serve(tmp_path / "run" / "skyge", "ha.sock",
                             ha_pb2_grpc.add_HaServicer_to_server, fake)
        spec = wm("cpu_load", 95, Action.SWITCH)
        engine, runner = _runner(tmp_path, [spec])
        for crossing in engine.observe("cpu_load", 99, 1):
            runner.dispatch(crossing, "percent")
        await until(lambda: engine.states[spec.key].last_result)
        await runner.close()
        await server.stop(None)
        return fake, engine.states[spec.key].last_result

    fake, result = asyncio.run(scenario())
    assert sorted(fake.commands) == [(2, ha_pb2.TAKEOVER_FIFO, 1, ha_pb2.ACTION_SWITCH),
                                     (2, ha_pb2.TAKEOVER_STACK, 7, ha_pb2.ACTION_SWITCH)]
    assert result == ("mysql: switched slot 1; web: Ha.Command failed: FAILED_PRECONDITION: "
                      "no waiter")


def test_switch_against_an_ha_daemon_without_it_says_unimplemented(tmp_path, caplog):
    async def scenario():
        (tmp_path / "run" / "skyge").mkdir(parents=True)
        server = await serve(tmp_path / "run" / "skyge", "ha.sock",
                             ha_pb2_grpc.add_HaServicer_to_server, ha_pb2_grpc.HaServicer())
        spec = wm("cpu_load", 95, Action.SWITCH)
        engine, runner = _runner(tmp_path, [spec])
        for crossing in engine.observe("cpu_load", 99, 1):
            runner.dispatch(crossing, "percent")
        await until(lambda: engine.states[spec.key].last_result)
        await runner.close()
        await server.stop(None)
        return engine.states[spec.key].last_result

    with caplog.at_level(logging.INFO, logger="test.ha"):
        result = asyncio.run(scenario())
    assert result == "the HA daemon does not implement Ha.Status yet (UNIMPLEMENTED)"
    assert any(r.levelno == logging.ERROR and "UNIMPLEMENTED" in r.getMessage()
               for r in caplog.records)


def test_refuse_new_retries_while_the_ha_daemon_is_unreachable(tmp_path, caplog):
    async def scenario():
        spec = wm("mem_load", 90, Action.REFUSE_NEW)
        engine, runner = _runner(tmp_path, [spec])
        for crossing in engine.observe("mem_load", 95, 1):
            runner.dispatch(crossing, "percent")
        await until(lambda: engine.states[spec.key].last_result)
        assert [s.name for s in engine.refusing_new()] == ["wm_90"]
        await runner.close()
        return engine.states[spec.key].last_result

    with caplog.at_level(logging.INFO, logger="test.ha"):
        result = asyncio.run(scenario())
    assert "HA daemon not reachable" in result  # no HA daemon in this test
