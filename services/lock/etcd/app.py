"""skyge-lock with `backend = "etcd"`: the engine (engine.py) over an etcd client, the lease
file for HA's deadman, and fencing: a node gone from the membership for `fence_after_ms` is
fenced by the lowest-numbered node present, which then revokes its etcd lease, so its locks
pass on at once rather than when the lease expires.

Refused for two-node clusters (lock.cfg with reference IPs, a witness, or expected_nodes 1 or
2) and for an etcd of two members: a majority-based engine cannot let one of two sides go on,
which is what the seed's two-node rule is for; the built-in authority does that.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc

from skyge.services.common.atomic import write_atomic
from skyge.services.common.config import ConfigError
from skyge.services.common.membership import MembershipFollower
from skyge.services.common.runner import DaemonApp, DaemonContext, StartupError
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_pb2_grpc

from ..daemon import MEMBERSHIP_WAIT_S, FileStore, heartbeat_netid
from ..peer import run_fence
from ..server import SessionItem, end_streams
from .client import EtcdClient, EtcdError, EtcdTls
from .engine import EtcdLocks, EtcdTiming
from .keys import Layout
from .server import EtcdLockServicer

__all__ = ["TWO_NODES", "EtcdLockApp"]

logger = logging.getLogger("skyge.lock")
T = TypeVar("T")
TWO_NODES = ("backend = \"etcd\" needs three or more nodes: etcd grants only with a majority, "
             "and of two nodes cut apart neither has one, so neither could run the services; "
             "two-node clusters use the built-in authority (backend = \"builtin\") with its "
             "two-node rule (reference IPs, a witness or a fence command)")
#: a lock daemon starting while etcd does not answer tries this long, then exits with an error
START_TIMEOUT_S = 10.0
START_RETRY_S = 0.2
FENCE_RETRY_S = 1.0


class EtcdLockApp(DaemonApp):
    service_names = ("skyge.v1.Lock",)

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        config = ctx.config
        if config["reference_ips"] or getattr(ctx.args, "ips", None) or config["witness"] \
                or config["expected_nodes"] in (1, 2):
            raise ConfigError(TWO_NODES, key="backend")
        self.endpoints = config["etcd_endpoints"].split(",")
        tls = None
        if config["etcd_ca"]:
            tls = EtcdTls(Path(config["etcd_ca"]), Path(config["etcd_cert"]) if
                          config["etcd_cert"] else None,
                          Path(config["etcd_key"]) if config["etcd_key"] else None)
            for key in ("etcd_ca", "etcd_cert", "etcd_key"):
                if config[key] and not Path(config[key]).is_file():
                    raise ConfigError(f"no such file: {config[key]}", key=key)
        elif config["etcd_cert"] or config["etcd_key"]:
            raise ConfigError("a client certificate needs etcd_ca (TLS to etcd)", key="etcd_ca")
        self.tls = tls
        self.timing = EtcdTiming(lease_ttl_s=config["etcd_lease_ttl"])
        self.fence_command = config["fence_command"]
        self.fence_timeout = config["fence_timeout"]
        self.fence_after_s = config["fence_after_ms"] / 1000
        self.store = FileStore(ctx.paths.lib)
        self.instance = self.store.next_instance()
        self.follower = MembershipFollower(ctx.paths, listeners=[self])
        self.client: EtcdClient | None = None
        self.engine: EtcdLocks | None = None
        self.queues: dict[int, asyncio.Queue[SessionItem]] = {}
        self.watchers: dict[int, asyncio.Queue[lp.LeaderEvent | None]] = {}
        self.stream_gone = asyncio.Event()  # see server.end_streams
        self.domain = 0
        self.netid = 0
        self._session_counter = 0
        self._watcher_counter = 0
        self._known: set[int] = set()  # every node seen in the membership
        self._absent: dict[int, asyncio.Task[None]] = {}  # gone node -> its fence, under way
        self._lease_written = -1
        self._write_lease(0)

    # -- runner hooks ---------------------------------------------------------------------------
    def register(self, server: grpc.aio.Server) -> None:
        lock_pb2_grpc.add_LockServicer_to_server(EtcdLockServicer(self), server)

    async def start(self) -> None:
        self.follower.start()
        if not await self.follower.wait_known(MEMBERSHIP_WAIT_S):
            raise StartupError("the heartbeat daemon did not answer: the etcd backend needs "
                               "this node's domain and netid (is skyge-heartbeat running?)")
        try:
            self.netid = await heartbeat_netid(self.ctx.paths)
        except grpc.aio.AioRpcError as error:
            raise StartupError(f"heartbeat GetIdentity failed: {error.code().name}") from None
        self.domain = self.follower.local_domain
        self.client = client = EtcdClient(self.endpoints, self.tls)
        where = ", ".join(self.endpoints)
        try:
            members = (await self._when_etcd_answers(client.members, where)).members
            if len(members) == 2:
                raise StartupError(f"the etcd at {where} has two members: it stops granting "
                                   f"when either fails; run one or three or more members")
            if len(members) == 1:
                logger.warning("etcd at %s has one member: the locks stop when it does", where)
            previous = self.store.load().get("etcd_lease", 0)
            if previous:  # the last instance's holds: it is gone, they pass on now
                with contextlib.suppress(EtcdError):
                    await client.lease_revoke(previous)
            engine = EtcdLocks(client, Layout.of(self.ctx.config["etcd_prefix"], self.netid),
                               self.domain, self.netid, self.timing, emit=self._emit,
                               emit_leader=self._emit_leader, wall_ns=time.time_ns,
                               on_lease=self._write_lease)
            await self._when_etcd_answers(engine.start, where)
        except StartupError:
            await client.close()
            raise
        self.engine = engine  # sessions are served from here on
        self.on_view(self.follower)  # a node that left while this daemon started is fenced too
        self.store.save({"etcd_lease": self.engine.lease_id})
        logger.log(25, "node %d.%d, instance %d: locks in etcd at %s (%d members), lease TTL "
                   "%d s, fence %s", self.netid, self.domain, self.instance, where, len(members),
                   self.timing.lease_ttl_s,
                   repr(self.fence_command) if self.fence_command else "none")

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop(told=lambda: end_streams(self))
        await end_streams(self, 0)
        for task in self._absent.values():
            task.cancel()
        await asyncio.gather(*self._absent.values(), return_exceptions=True)
        await self.follower.stop()
        if self.client is not None:
            await self.client.close()

    @staticmethod
    async def _when_etcd_answers(call: Callable[[], Awaitable[T]], where: str) -> T:
        """`call` once etcd answers it, trying for START_TIMEOUT_S (a member may be in an
        election or catching up); then StartupError naming the endpoints."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return await call()
            except EtcdError as error:
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"etcd is not reachable at {where} (lock.cfg etcd_endpoints) after "
                        f"{START_TIMEOUT_S:g} s: {error}; start etcd, or use backend = "
                        f"\"builtin\"") from None
            await asyncio.sleep(START_RETRY_S)

    # -- what the engine produces ---------------------------------------------------------------
    def _emit(self, session: int, event: lp.SessionEvent) -> None:
        queue = self.queues.get(session)
        if queue is not None:
            queue.put_nowait(event)

    def _emit_leader(self, watcher: int, event: lp.LeaderEvent) -> None:
        queue = self.watchers.get(watcher)
        if queue is not None:
            queue.put_nowait(event)

    def _write_lease(self, until_ns: int) -> None:
        """Until when this node's holds are safe (0: none is), for HA's deadman."""
        if until_ns != self._lease_written:
            self._lease_written = until_ns
            write_atomic(self.ctx.paths.lease_file, str(until_ns), durable=False)

    # -- sessions and queries (EtcdHost) --------------------------------------------------------
    def new_session_id(self) -> int:
        self._session_counter += 1
        return (self.domain << 56) | ((self.instance & 0xFFFFFF) << 32) | \
            (self._session_counter & 0xFFFFFFFF)

    def new_watcher_id(self) -> int:
        self._watcher_counter += 1
        return self._watcher_counter

    async def authority_info(self) -> lp.AuthorityInfo:
        assert self.client is not None and self.engine is not None
        info = lp.AuthorityInfo(has_quorum=self.engine.lease_valid(),
                                member_domains=sorted(self.follower.peers))
        try:
            status = await self.client.status()
            members = (await self.client.members()).members
        except EtcdError as error:
            info.quorum_rule = f"etcd: not reachable ({error})"
            return info
        leader = next((m.name or f"{m.ID:x}" for m in members if status.leader == m.ID), "none")
        info.term = status.raftTerm
        info.expected_votes = len(members)
        info.quorum_rule = (f"etcd: majority {len(members) // 2 + 1} of {len(members)} members, "
                            f"leader {leader}")
        return info

    # -- fencing --------------------------------------------------------------------------------
    def on_view(self, follower: MembershipFollower) -> None:
        """Every node ever seen that is missing now gets a fence task (which waits
        fence_after_ms first); one that comes back before is spared."""
        present = set(follower.peers)
        for domain in list(self._absent):
            if domain in present:
                self._absent.pop(domain).cancel()
        if self.fence_command and self.engine is not None:
            for domain in self._known - present:
                if domain not in self._absent:
                    self._absent[domain] = asyncio.create_task(
                        self._fence_when_gone(domain), name=f"lock-fence-{domain}")
        self._known |= present

    def on_lost(self, follower: MembershipFollower) -> None:
        """The local heartbeat daemon is gone: no view, so nobody is judged absent."""

    async def _fence_when_gone(self, domain: int) -> None:
        """`domain` left the membership: after fence_after_ms, the lowest node present fences
        it and revokes its lease (if it still has one), retrying until the fence succeeds."""
        await asyncio.sleep(self.fence_after_s)
        assert self.client is not None and self.engine is not None
        while True:
            if min(self.follower.peers, default=self.domain) != self.domain:
                return  # a lower node does it
            layout = self.engine.layout
            try:
                lease = (await self.client.range(layout.node(domain))).kvs
            except EtcdError as error:
                logger.warning("fence of node %d: cannot read its lease: %s", domain, error)
                await asyncio.sleep(FENCE_RETRY_S)
                continue
            if not lease:
                return  # its lease ended already: nothing of it is left to pass on
            logger.info("fencing node %d: running %r", domain, self.fence_command)
            result = await run_fence(self.fence_command, domain, self.fence_timeout)
            if result.ok:
                lease_id = int(lease[0].value)
                with contextlib.suppress(EtcdError):
                    await self.client.lease_revoke(lease_id)
                logger.log(25, "node %d fenced (%s); its etcd lease %x revoked", domain,
                           result.summary, lease_id)
                return
            logger.error("fence of node %d FAILED: %r %s; its locks pass on when its etcd "
                         "lease expires; trying again in %g s", domain, self.fence_command,
                         result.summary, FENCE_RETRY_S)
            await asyncio.sleep(FENCE_RETRY_S)
