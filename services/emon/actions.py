"""What a fired watermark does: run its script, switch this node's HA services away, refuse new
ones.

Every action runs as its own task: sampling never waits for a script or for the HA daemon.

Scripts run without a shell, in their own process group, with the environment of the daemon plus
SKYGE_EMON_PROBE, SKYGE_EMON_WATERMARK, SKYGE_EMON_VALUE, SKYGE_EMON_THRESHOLD,
SKYGE_EMON_DIRECTION, SKYGE_EMON_UNIT and SKYGE_ROOT. A script running longer than its timeout
gets SIGTERM, then SIGKILL 2 s later. Its exit status and the last lines of its output (stdout
and stderr, see `skyge.services.common.commands`) are logged.

The HA side (the seed's sk_dynamic_ecs) goes through the local HA daemon's Unix socket:
- switch: Ha.Status, then Ha.Command(ACTION_SWITCH) for each service whose active_domain is this
  node (this node's domain from emon.cfg `domain`, heartbeat.cfg, or the heartbeat daemon);
- refuse_new: Ha.SetRefuseNew(refuse, reason), sent again (every RETRY_S) until the HA daemon has
  acknowledged the current state.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any
from collections.abc import Callable

import grpc

from skyge.services.common.commands import run_command
from skyge.services.common.config import ConfigError, parse_config
from skyge.services.common.paths import NodePaths
from skyge.v1 import ha_pb2, ha_pb2_grpc, heartbeat_pb2, heartbeat_pb2_grpc

from .watermarks import Action, Crossing, WatermarkSpec, WatermarkState

RETRY_S = 5.0
LOCAL_RPC_TIMEOUT_S = 5.0


async def run_script(spec: WatermarkSpec, value: float, unit: str, root: Path,
                     logger: logging.Logger) -> tuple[int, str]:
    """Run a watermark's script; returns (exit status or -signal, one-line result). Never raises."""
    env = dict(SKYGE_EMON_PROBE=spec.probe, SKYGE_EMON_WATERMARK=spec.name,
               SKYGE_EMON_VALUE=f"{value:g}", SKYGE_EMON_THRESHOLD=f"{spec.threshold:g}",
               SKYGE_EMON_DIRECTION=spec.direction.value, SKYGE_EMON_UNIT=unit,
               SKYGE_ROOT=str(root))
    result = await run_command([spec.script], timeout_s=spec.script_timeout_s, env=env)
    if not result.started:
        logger.error("watermark %s/%s: %s", spec.probe, spec.name, result.summary)
        return 127, result.summary
    level = logging.INFO if result.ok else logging.WARNING
    logger.log(level, "watermark %s/%s: %s %s; output: %s", spec.probe, spec.name, spec.script,
               result.summary, result.output or "(none)")
    return result.status, f"script {result.summary}"


class HaLink:
    """Calls to the local HA (and heartbeat) daemons over their Unix sockets."""

    def __init__(self, paths: NodePaths, logger: logging.Logger, *, configured_domain: int = 0,
                 command_timeout_s: float = 900.0) -> None:
        self.paths, self.logger = paths, logger
        self.configured_domain = configured_domain
        self.command_timeout_s = command_timeout_s
        self._channel: grpc.aio.Channel | None = None

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(f"unix:{self.paths.socket('ha')}")
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def local_domain(self) -> int:
        """This node's domain: emon.cfg, then heartbeat.cfg, then the heartbeat daemon."""
        if self.configured_domain:
            return self.configured_domain
        path = self.paths.config_file("heartbeat")
        try:
            for setting in parse_config(path.read_text(), str(path)):
                if setting.key == "domain" and isinstance(setting.value, int):
                    return setting.value
        except (OSError, UnicodeDecodeError, ConfigError):
            pass
        async with grpc.aio.insecure_channel(f"unix:{self.paths.socket('heartbeat')}") as ch:
            identity = await heartbeat_pb2_grpc.HeartbeatStub(ch).GetIdentity(
                heartbeat_pb2.GetIdentityRequest(), timeout=LOCAL_RPC_TIMEOUT_S)
        return identity.node.domain

    def describe(self, error: grpc.aio.AioRpcError, rpc: str) -> str:
        code = error.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return f"the HA daemon does not implement Ha.{rpc} yet (UNIMPLEMENTED)"
        if code == grpc.StatusCode.UNAVAILABLE:
            return f"HA daemon not reachable at {self.paths.socket('ha')} ({error.details()})"
        return f"Ha.{rpc} failed: {code.name}: {error.details()}"

    async def switch_away(self, spec: WatermarkSpec) -> tuple[bool, str]:
        """Switch every HA service running on this node to its next waiter. (all ok, outcome)."""
        stub = ha_pb2_grpc.HaStub(self.channel())
        try:
            status = await stub.Status(ha_pb2.StatusRequest(), timeout=LOCAL_RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return False, self.describe(error, "Status")
        try:
            domain = await self.local_domain()
        except grpc.aio.AioRpcError as error:
            return False, f"cannot tell this node's domain (heartbeat daemon: {error.code().name})"
        mine = [s for s in status.services if s.active_domain == domain and s.state in (
            ha_pb2.SERVICE_STARTING, ha_pb2.SERVICE_RUNNING)]
        if not mine:
            return True, f"no HA service runs on domain {domain}: nothing to switch"

        async def switch(service: Any) -> tuple[bool, str]:
            request = ha_pb2.CommandRequest(domain=domain, type=service.type, slot=service.slot,
                                            action=ha_pb2.ACTION_SWITCH)
            try:
                reply = await stub.Command(request, timeout=self.command_timeout_s)
            except grpc.aio.AioRpcError as error:
                return False, f"{service.name}: {self.describe(error, 'Command')}"
            return True, f"{service.name}: {reply.message or 'switched'}"

        outcomes = await asyncio.gather(*(switch(s) for s in mine))
        return all(ok for ok, _ in outcomes), "; ".join(text for _, text in outcomes)

    async def set_refuse_new(self, refuse: bool, reason: str) -> tuple[bool, bool, str]:
        """Tell the HA daemon to refuse (or accept again) new services. (done, ok, outcome):
        not done = worth retrying (HA down); done but not ok = retrying will not help."""
        stub = ha_pb2_grpc.HaStub(self.channel())
        try:
            await stub.SetRefuseNew(ha_pb2.SetRefuseNewRequest(refuse=refuse, reason=reason[:256]),
                                    timeout=LOCAL_RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            final = error.code() in (grpc.StatusCode.UNIMPLEMENTED,
                                     grpc.StatusCode.INVALID_ARGUMENT)
            return final, False, self.describe(error, "SetRefuseNew")
        return True, True, ("HA refuses new services" if refuse
                            else "HA accepts new services again")


class ActionRunner:
    """Turns crossings into actions (tasks) and records their outcome in the watermark state."""

    def __init__(self, paths: NodePaths, logger: logging.Logger, ha: HaLink,
                 state_of: Callable[[WatermarkSpec], WatermarkState | None],
                 refusing: Callable[[], list[WatermarkSpec]]) -> None:
        self.paths, self.logger, self.ha = paths, logger, ha
        self.state_of, self.refusing = state_of, refusing
        self.tasks: set[asyncio.Task] = set()
        self.running_scripts: set[tuple[str, str]] = set()
        self.scripts_run = 0
        self.fired = 0
        self._refuse_wanted: tuple[bool, str] = (False, "")
        self._refuse_sent: bool | None = False  # HA accepts by default
        self._refuse_wake = asyncio.Event()
        self._refuse_task: asyncio.Task | None = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.logger.error("watermark action failed: %r", task.exception())

    def _record(self, spec: WatermarkSpec, result: str, status: int | None = None) -> None:
        state = self.state_of(spec)
        if state is not None:
            state.last_result = result
            if status is not None:
                state.last_exit_status = status

    def dispatch(self, crossing: Crossing, unit: str) -> None:
        spec = crossing.spec
        if not crossing.fired:
            self.logger.info("watermark %s re-armed at %g %s", spec.describe(), crossing.value,
                             unit)
            if spec.action is Action.REFUSE_NEW:
                self.update_refuse()
            return
        self.fired += 1
        self.logger.log(25, "watermark %s fired at %g %s", spec.describe(), crossing.value, unit)
        if spec.action is Action.SCRIPT:
            if spec.key in self.running_scripts:
                self.logger.warning("watermark %s/%s: its script still runs from the last firing; "
                                    "not started again", spec.probe, spec.name)
                self._record(spec, "not run: the previous run had not finished")
                return
            self._spawn(self._script(spec, crossing.value, unit))
        elif spec.action is Action.SWITCH:
            self._spawn(self._switch(spec))
        else:
            self.update_refuse()

    async def _script(self, spec: WatermarkSpec, value: float, unit: str) -> None:
        self.running_scripts.add(spec.key)
        try:
            status, result = await run_script(spec, value, unit, self.paths.root, self.logger)
        finally:
            self.running_scripts.discard(spec.key)
        self.scripts_run += 1
        self._record(spec, result, status)

    async def _switch(self, spec: WatermarkSpec) -> None:
        self.logger.log(25, "watermark %s/%s: switching this node's HA services to the next node",
                        spec.probe, spec.name)
        ok, result = await self.ha.switch_away(spec)
        self.logger.log(25 if ok else logging.ERROR, "watermark %s/%s switch: %s",
                        spec.probe, spec.name, result)
        self._record(spec, result)

    # ---- refuse_new: one desired state, pushed to HA until acknowledged

    def update_refuse(self) -> None:
        fired = self.refusing()
        reason = ", ".join(f"emon {s.probe}/{s.name} {s.direction.value} {s.threshold:g}"
                           for s in fired)
        self._refuse_wanted = (bool(fired), reason)
        self._refuse_wake.set()
        if self._refuse_task is None:
            self._refuse_task = asyncio.get_running_loop().create_task(self._push_refuse())

    async def _push_refuse(self) -> None:
        told_failure: str | None = None
        while True:
            await self._refuse_wake.wait()
            self._refuse_wake.clear()
            refuse, reason = self._refuse_wanted
            if refuse == self._refuse_sent:
                continue
            done, ok, outcome = await self.ha.set_refuse_new(refuse, reason)
            for spec in self.refusing() if refuse else []:
                self._record(spec, outcome)
            if done:
                self._refuse_sent = refuse
                self.logger.log(25 if ok else logging.ERROR, "refuse_new %s (%s): %s",
                                "on" if refuse else "off",
                                reason or "no refuse_new watermark fired", outcome)
                told_failure = None
                continue
            if outcome != told_failure:
                self.logger.error("refuse_new %s: %s; retrying every %g s",
                                  "on" if refuse else "off", outcome, RETRY_S)
                told_failure = outcome
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refuse_wake.wait(), RETRY_S)
            self._refuse_wake.set()

    async def close(self) -> None:
        tasks = [*self.tasks, *([self._refuse_task] if self._refuse_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.ha.close()
