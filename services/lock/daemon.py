"""skyge-lock as the runner sees it: config, and the app tying Node, Links, the protocol thread,
membership, fences and the two-node rule together (the gRPC servicers are in server.py).

Two threads share the `Node` under `LockApp.lock`. The protocol thread (transport.py) owns the
UDP socket's reading and the timers: datagrams in, ticks when due, then a flush that sends what
the node produced and hands session events, fence requests and log lines to the asyncio loop.
The asyncio loop runs the gRPC servicers, the membership follower, fences and the two-node rule:
each changes the node under the lock and asks for a flush (`flush_soon`), which the loop runs
itself once the requests at hand are in (so a burst of requests still leaves in few datagrams):
a client's request costs no switch to the protocol thread and back, which is woken only when the
change brought its next wake-up forward (a timeout, a retransmission).

Every flush, on either thread, first writes the lease file when it is due, then takes what the
node produced into one queue (`_handback`, in the order taken under the lock), which only the
loop empties, in order: so a session's events keep their order whichever thread took them, and
a Granted or Renewed reaches a client only after the file was written by the flush that took it.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from skyge.services.common.atomic import write_atomic
from skyge.services.common.clock import boot_ns
from skyge.services.common.config import (ConfigError, Field, choice, integer, parse_config,
                                          string)
from skyge.services.common.keys import ClusterKeys, load_keys
from skyge.services.common.membership import MembershipFollower, PeerChannels
from skyge.services.common.paths import TCP_PORTS, NodePaths
from skyge.services.common.reference import (add_reference_ips_argument, ping_any,
                                             reference_ips_field, reference_ips_from)
from skyge.services.common.runner import DaemonApp, DaemonContext
from skyge.v1 import common_pb2, heartbeat_pb2, heartbeat_pb2_grpc
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_pb2_grpc
from skyge.v1 import lock_peer_pb2 as pp
from skyge.v1 import lock_peer_pb2_grpc

from .links import Links
from .peer import PeerSocket, run_fence
from .protocol import MS, Node, Outputs, Timing
from .transport import ProtocolThread
from .server import (STREAMS_END_S, TWO_NODES_UNPROTECTED, LockPeerServicer, LockServicer,
                     SessionItem, end_streams)
from .witness import Witness

__all__ = ["FIELDS", "FileStore", "LockApp", "add_arguments", "build"]

STATE_FILE = "lock.state"
LONE_CHECK_S = 0.2
LONE_VALID_NS = 1000 * MS
MEMBERSHIP_WAIT_S = 5.0

logger = logging.getLogger("skyge.lock")


FIELDS = (
    Field("expected_nodes", integer(0, 64), default=0,
          help="nodes the quorum is computed over; 0 = learned (largest membership seen)"),
    reference_ips_field('two-node rule: reference IPs, "IP:IP" as the seed\'s -i'),
    Field("fence_command", string(), default="",
          help="command (sh -c, env SKYGE_FENCE_DOMAIN=N) that must succeed for a lost node "
               "before anything it may have held is granted again (and before a lone node "
               "of two takes over)"),
    Field("fence_timeout", integer(1, 600), default=60,
          help="seconds the fence command may run before it is killed and counts as failed"),
    Field("fence_after_ms", integer(1, 600_000), default=250,
          help="with a fence command: a node out of the membership this long is fenced, and "
               "its locks pass on once the fence succeeded rather than at its lease end, ms; a "
               "node paused longer than this is powered off"),
    Field("fence_priority_delay_ms", integer(0, 600_000), default=0,
          help="two nodes cut apart, both fencing each other: a node that holds no lock waits "
               "this long before it fences the other, so the side that runs the services wins "
               "the race (Pacemaker's priority-fencing-delay); it also delays the takeover "
               "after a crash of the node that held them, ms"),
    Field("witness", string(r"\S+:\d{1,5}", 'HOST:PORT, e.g. "192.168.1.1:7415"'), default="",
          help="two-node rule: the skyge-witness on a third machine that gives its vote to one "
               "node at a time; when set, a lone node acts alone only with the witness's vote "
               "(reference IPs are not asked)"),
    Field("witness_priority_delay_ms", integer(0, 60_000), default=300,
          help="a lone node that holds no lock asks the witness only after this, so the side "
               "that runs the services keeps the vote, ms"),
    Field("key_file", string(), default="",
          help="cluster key for signed datagrams (default: heartbeat.cfg's key_file)"),
    Field("accept_key_file", string(), default="",
          help="a second key accepted during a rotation, never used to sign (default: "
               "heartbeat.cfg's)"),
    Field("peer_port", integer(1, 65535), default=TCP_PORTS["lock"],
          help="UDP port of the lock peer protocol, the same on every node"),
    Field("beat_ms", integer(1, 1000), default=20,
          help="candidate round interval, ms (an established authority rounds every 50 ms, or "
               "an eighth of the vote lease if shorter, but never more often than this)"),
    Field("vote_lease_ms", integer(2, 60_000), default=400,
          help="vote promise, ms: an authority stalled for less than this minus one of its "
               "rounds keeps its term; a crashed authority is replaced after it"),
    Field("hold_lease_ms", integer(3, 120_000), default=600,
          help="member hold lease, ms: a node whose lock daemon is stalled for less than this "
               "keeps its locks; a crashed node's locks pass on after it (without a fence)"),
    Field("authority_grace_ms", integer(1, 60_000), default=50,
          help="the authority's own locks after its lease, ms"),
    Field("takeover_guard_ms", integer(0, 60_000), default=25,
          help="a lost node's locks pass on this long after its lease ran out, ms: time for "
               "its holders (told Lost before) to kill what they run"),
    Field("realtime_priority", integer(0, 99), default=5,
          help="SCHED_RR priority of the protocol thread, 0 for none (the heartbeat thread's "
               "default is 10: keep this below it)"),
    Field("backend", choice("builtin", "etcd"), default="builtin",
          help="what grants the locks: the built-in authority (any cluster size, the only "
               "choice for two nodes) or an etcd cluster (three or more nodes; the fields "
               "etcd_* below)"),
    Field("etcd_endpoints", string(r"[^\s,]+(,[^\s,]+)*", '"HOST:PORT,HOST:PORT..."'),
          default="127.0.0.1:2379",
          help="backend etcd: client URLs of the etcd members, without scheme"),
    Field("etcd_prefix", string(r"/[A-Za-z0-9._/-]*", 'a key path such as "/skyge"'),
          default="/skyge",
          help="backend etcd: keys live under PREFIX/NETID/, so clusters may share an etcd"),
    Field("etcd_lease_ttl", integer(1, 60), default=2,
          help="backend etcd: the lease of a node's holds, s: a node whose lock daemon (or "
               "link to etcd) is stalled this long loses its locks; a crashed node's locks "
               "pass on after it (at once once fenced, with a fence command)"),
    Field("etcd_ca", string(), default="",
          help="backend etcd: CA certificate (PEM) for TLS to etcd; empty for plain TCP"),
    Field("etcd_cert", string(), default="",
          help="backend etcd: client certificate (PEM) when etcd asks for one"),
    Field("etcd_key", string(), default="",
          help="backend etcd: the client certificate's key (PEM)"),
)


def add_arguments(parser: Any) -> None:
    add_reference_ips_argument(parser, "two-node rule")


class FileStore:
    """The node's persistent lock state (lock.state, JSON), written atomically and fsynced."""

    def __init__(self, lib: Path) -> None:
        self.path = lib / STATE_FILE
        self._extra: dict[str, int] = {}

    def load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read the lock state: {error}; move it away to start "
                              f"afresh (fencing tokens restart from the peers' floors)",
                              path=str(self.path)) from None
        self._extra = {k: int(v) for k, v in data.items()}
        return dict(self._extra)

    def save(self, state: dict[str, int]) -> None:
        self._extra.update(state)
        write_atomic(self.path, json.dumps(self._extra, sort_keys=True))

    def next_instance(self) -> int:
        """This start's daemon instance: above every earlier one, persisted before use."""
        state = self.load()
        instance = max(int(state.get("instance", 0)) + 1, 1)
        self.save({"instance": instance})
        return instance


async def heartbeat_netid(paths: NodePaths) -> int:
    """The cluster's netid, as the node's heartbeat daemon says."""
    async with grpc.aio.insecure_channel(f"unix:{paths.socket('heartbeat')}") as channel:
        identity = await heartbeat_pb2_grpc.HeartbeatStub(channel).GetIdentity(
            heartbeat_pb2.GetIdentityRequest(), timeout=5)
    return identity.node.netid


def cluster_keys(paths: NodePaths, config: dict[str, Any],
                 config_path: Path | None) -> ClusterKeys:
    """lock.cfg's keys, else heartbeat.cfg's (the usual case: one key for both protocols);
    ConfigError when there is none and lock.cfg does not say `insecure = yes`."""
    key_file, other = config.get("key_file") or "", config.get("accept_key_file") or ""
    if not key_file:
        heartbeat_cfg = paths.config_file("heartbeat")
        try:
            settings = {s.key: s.value for s in parse_config(heartbeat_cfg.read_text(),
                                                              str(heartbeat_cfg))}
        except (OSError, UnicodeDecodeError, ConfigError):
            settings = {}
        key_file = settings.get("key_file") if isinstance(settings.get("key_file"), str) else ""
        other = (settings.get("accept_key_file")
                 if isinstance(settings.get("accept_key_file"), str) else "")
    return load_keys(paths, key_file, other, insecure=config["insecure"],
                     config_path=config_path)


class LockApp(DaemonApp):
    service_names = ("skyge.v1.Lock", "skyge.v1.LockPeer")

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        config = ctx.config
        try:
            self.timing = Timing(beat_ns=config["beat_ms"] * MS,
                                 idle_beat_ns=min(Timing.idle_beat_ns,
                                                  config["hold_lease_ms"] * MS // 2),
                                 vote_lease_ns=config["vote_lease_ms"] * MS,
                                 hold_lease_ns=config["hold_lease_ms"] * MS,
                                 authority_grace_ns=config["authority_grace_ms"] * MS,
                                 early_ns=min(Timing.early_ns,
                                              config["authority_grace_ms"] * MS // 2),
                                 takeover_guard_ns=config["takeover_guard_ms"] * MS,
                                 fence_after_ns=config["fence_after_ms"] * MS)
        except ValueError as error:
            raise ConfigError(f"lease timing: {error}", key="hold_lease_ms") from None
        self.reference_ips = reference_ips_from(ctx.args, config)
        self.fence_command = config["fence_command"]
        self.fence_timeout = config["fence_timeout"]
        self.fence_priority_delay_s = config["fence_priority_delay_ms"] / 1000
        self.witness = Witness(config["witness"], self.timing.switch_ns,
                               config["witness_priority_delay_ms"] / 1000, ctx.tls) \
            if config["witness"] else None
        self.expected_nodes = config["expected_nodes"]
        self.port = config["peer_port"]
        self.keys = cluster_keys(ctx.paths, config, ctx.config_path)
        self.store = FileStore(ctx.paths.lib)
        self.instance = self.store.next_instance()
        self.follower = MembershipFollower(ctx.paths, listeners=[self])
        self.channels = PeerChannels(self.follower, "lock", ctx.tls)
        #: the node, its links and the socket's address book are shared by the protocol thread
        #: and the asyncio loop: either touches them only while holding this lock
        self.lock = threading.RLock()
        self.node: Node | None = None
        self.links: Links | None = None
        self.sock: PeerSocket | None = None
        self.protocol: ProtocolThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.netid = 0
        self.session_counter = 0
        self.watcher_counter = 0
        #: what flushes took from the node (on either thread, under the lock), in that order;
        #: only the loop takes from it (`_drain`), in order
        self._handback: collections.deque[Outputs] = collections.deque()
        self._drain_scheduled = False  # the protocol thread asked the loop for a `_drain`
        self._flush_scheduled = False  # a `_flush_on_loop` is scheduled (the loop's own)
        #: the protocol thread's next wake-up as its last turn computed it (under the lock);
        #: a loop flush that brings it forward wakes the thread
        self._thread_wake_at: int | None = None
        #: the streams of the sessions and of the leader watchers (Campaign, Observe), by id
        self.queues: dict[int, asyncio.Queue[SessionItem]] = {}
        self.watchers: dict[int, asyncio.Queue[lp.LeaderEvent | None]] = {}
        self.stream_gone = asyncio.Event()  # see server.end_streams
        self._left = False  # the last beat is out (clean stop): nothing runs or leaves any more
        self._tasks: list[asyncio.Task[Any]] = []
        self._node_tasks: set[asyncio.Task[None]] = set()  # _make_node runs (see on_view)
        self.node_ready = asyncio.Event()  # set once `node` is made
        self._lone_event = asyncio.Event()
        self.lone_peer = 0
        self._unseen_peer_logged = False
        self._fences: dict[int, asyncio.Task[bool]] = {}  # node -> its fence under way
        self.wall_offset = time.time_ns() - boot_ns()
        #: the lease end last written for the HA deadman; a new daemon instance holds nothing
        #: (the authority drops an earlier instance's holds at once), so it starts at 0
        self._lease_written = -1
        self._write_lease(0)

    # -- runner hooks ---------------------------------------------------------------------------
    def register(self, server: grpc.aio.Server) -> None:
        lock_pb2_grpc.add_LockServicer_to_server(LockServicer(self), server)
        lock_peer_pb2_grpc.add_LockPeerServicer_to_server(LockPeerServicer(self), server)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock = PeerSocket(self.keys.current, other_key=self.keys.other,
                               fresh_ns=3 * max(self.timing.idle_beat_ns, self.timing.beat_ns))
        try:
            self.sock.bind(self.port)
        except OSError as error:
            from skyge.services.common.runner import StartupError
            raise StartupError(f"cannot bind UDP port {self.port}: {error}") from None
        self.protocol = ProtocolThread(self.sock, self.lock, on_datagrams=self._on_datagrams,
                                       turn=self._turn,
                                       realtime_priority=self.ctx.config["realtime_priority"],
                                       logger=logger)
        self.protocol.start()
        self.follower.start()
        self._tasks.append(asyncio.create_task(self._lone_loop(), name="lock-two-node"))
        if await self.follower.wait_known(MEMBERSHIP_WAIT_S):
            await self._make_node()
        else:
            logger.warning("heartbeat daemon not reachable yet: no locks until it is")
        # what start-up made (modules, gRPC) lives on: out of the collector's sight, a full
        # collection soon after does not stall the loop for ~10 ms while leases run
        gc.freeze()

    async def reload(self, config: dict[str, Any]) -> None:
        """SIGHUP: read the cluster keys again (a key rotation); nothing else changes."""
        self.keys = cluster_keys(self.ctx.paths, config, self.ctx.config_path)
        with self.lock:
            if self.sock is not None:
                self.sock.key, self.sock.other_key = self.keys.current, self.keys.other
        logger.info("cluster keys reloaded: accepting %d key(s)", len(self.keys.accepted))

    async def stop(self) -> None:
        await self._leave()
        if self.protocol is not None:
            await asyncio.to_thread(self.protocol.stop)
        for task in [*self._tasks, *self._node_tasks, *self._fences.values()]:
            task.cancel()
        await self.follower.stop()
        await self.channels.close()
        if self.witness is not None:
            await self.witness.close()
        if self.sock is not None:
            self.sock.close()

    async def _leave(self) -> None:
        """A clean stop: the sessions lose everything (told at once) and their streams end;
        when they held locks, `early_ns` + the takeover guard after their streams carried the
        Lost out (what a lease end gives them; counted from then, so that a stall of this process
        before the writes does not eat the warning), the last beat tells the peers this daemon
        is gone, so a successor takes over without waiting for its leases. Streams that do not
        end within STREAMS_END_S get no such shortcut: no last beat, the peers wait for the
        leases. Then the protocol thread's turns do nothing: no datagram leaves any more."""
        node = self.node
        if node is not None and self.sock is not None:
            with self.lock:
                held = node.stop_sessions(boot_ns())
                self._flush(boot_ns())
            self._drain()
            # after those events; nothing held: nothing to warn of, no need to wait
            told = await end_streams(self, STREAMS_END_S if held else 0)
            if held and told:
                await asyncio.sleep(self.timing.leave_warning_ns / 1e9)
            elif held:
                logger.warning("sessions still had their streams open %.1f s after being told "
                               "to stop: no leaving beat, peers wait for the leases",
                               STREAMS_END_S)
            with self.lock:
                if told or not held:
                    node.leave(boot_ns())
                    self._flush(boot_ns())
                self._left = True
            self._drain()
        self._left = True

    # -- node -----------------------------------------------------------------------------------
    async def _make_node(self) -> None:
        if self.node is not None or not self.follower.local_domain:
            return
        try:
            self.netid = await heartbeat_netid(self.ctx.paths)
        except grpc.aio.AioRpcError as error:
            logger.warning("heartbeat GetIdentity failed: %s", error.code().name)
            return
        if self.node is not None:
            return
        now = boot_ns()
        node = Node(self.follower.local_domain, self.instance, netid=self.netid,
                    timing=self.timing, store=self.store, expected_nodes=self.expected_nodes,
                    now_ns=now, wall_ns=self.wall_ns)
        node.lone_possible = bool(self.reference_ips or self.witness)
        node.lone_by_witness = self.witness is not None
        node.fencing = bool(self.fence_command)
        with self.lock:
            self.node = node
            self.links = Links(node, rto_ns=max(15 * MS, 3 * self.timing.beat_ns))
        self.node_ready.set()
        logger.log(25, "node %d.%d, instance %d, expected nodes %s, reference IPs %s, fence %s, "
                   "witness %s", self.netid, self.node.domain, self.instance,
                   self.expected_nodes or f"learned ({self.node.expected()})",
                   ", ".join(self.reference_ips) or "none",
                   repr(self.fence_command) if self.fence_command else "none",
                   self.witness.address if self.witness else "none")
        if self.node.expected() == 2 and not self.protected:
            logger.warning("%s", TWO_NODES_UNPROTECTED)
        self._apply_view(now)

    def wall_ns(self) -> int:
        return boot_ns() + self.wall_offset

    @property
    def protected(self) -> bool:
        """Two nodes cut apart cannot both act alone: a fence or a witness decides."""
        return bool(self.fence_command or self.witness)

    def _apply_view(self, now: int) -> None:
        node, sock = self.node, self.sock
        if node is None or sock is None:
            return
        with self.lock:
            if not self.follower.known:
                node.on_view(None, now)
            else:
                view = set(self.follower.peers)
                for domain, peer in self.follower.peers.items():
                    if not peer.local:
                        sock.set_peer(domain, peer.addresses, self.port)
                sock.forget_missing(view)
                others = view - {node.domain}
                if others:
                    self.lone_peer = min(others)
                node.on_view(view, now)
        self.flush_soon()

    # membership listener
    def on_view(self, follower: MembershipFollower) -> None:
        if self.node is None:
            task = asyncio.create_task(self._make_node(), name="lock-make-node")
            self._node_tasks.add(task)
            task.add_done_callback(self._node_tasks.discard)
            return
        self._apply_view(boot_ns())

    def on_lost(self, follower: MembershipFollower) -> None:
        if self.node is not None:
            self._apply_view(boot_ns())

    # -- the protocol thread's side (under the lock) --------------------------------------------
    def _on_datagrams(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        links, sock = self.links, self.sock
        if links is None or sock is None or self._left:
            return
        now = boot_ns()
        for payload, addr in datagrams:
            try:
                datagram = pp.PeerDatagram.FromString(payload)
            except Exception:
                sock.stats["bad_mac"] += 1
                continue
            if datagram.netid == self.netid and datagram.to_domain == links.node.domain:
                sock.learn(datagram.from_domain, addr, now)
            links.receive(datagram, now)

    def _turn(self) -> int | None:
        """Tick when due, flush; the next wake-up (None: no node yet, or the daemon left)."""
        node, links = self.node, self.links
        if node is None or links is None or self._left:
            self._thread_wake_at = None
            return None
        now = boot_ns()
        if node.next_wakeup() <= now:
            node.tick(now)
        self._flush(now, thread=True)
        self._thread_wake_at = wake = self._next_wakeup(node, links)
        return wake

    @staticmethod
    def _next_wakeup(node: Node, links: Links) -> int:
        wake = node.next_wakeup()
        deadline = links.deadline()
        return wake if deadline is None else min(wake, deadline)

    def _flush(self, now: int, *, thread: bool = False) -> None:
        """(Under the lock, on either thread.) `_take`, then send the datagrams."""
        if self._take(now, thread=thread):
            self._send(now)

    def _take(self, now: int, *, thread: bool = False) -> bool:
        """(Under the lock, on either thread.) Write the lease file for the HA deadman when due,
        then queue what the node produced for the loop (`_handback`; from the protocol thread
        the loop is asked to `_drain` it, the loop's own caller drains it after the lock).
        False when there is nothing to do (no node yet, or the daemon left)."""
        node, loop = self.node, self._loop
        if node is None or loop is None or self._left:
            return False
        if node.lone_check_due(now):
            loop.call_soon_threadsafe(self._lone_event.set)
        # the file first: a Granted or Renewed taken below reaches its client (on the loop, after
        # this) only once the file says as much (within the half idle beat it may lag)
        safe_until = node.member.lease_until if node.member.connected else 0
        if (safe_until == 0) != (self._lease_written == 0) or \
                abs(safe_until - self._lease_written) >= self.timing.idle_beat_ns // 2:
            self._write_lease(safe_until)
        produced = node.take_outputs()
        if produced.events or produced.leader_events or produced.fence_requests or produced.log:
            self._handback.append(produced)
            if thread and not self._drain_scheduled:
                self._drain_scheduled = True  # one hand-off for every batch until it runs
                loop.call_soon_threadsafe(self._drain)
        return True

    def _send(self, now: int) -> None:
        """(Under the lock, on either thread.) The datagrams out (with retransmissions and
        owed acknowledgements)."""
        links, sock = self.links, self.sock
        if links is None or sock is None or self._left:
            return
        for out in links.flush(now):
            sock.send(out.domain, out.datagram.SerializeToString(), out.all_paths, now)

    # -- the asyncio loop's side ------------------------------------------------------------------
    def flush_soon(self) -> None:
        """The node changed (on the loop): flush once the loop's current callbacks ran, so
        that the requests of one loop turn leave together."""
        if not self._flush_scheduled and not self._left and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_on_loop)

    def _flush_on_loop(self) -> None:
        """Flush on the loop: datagrams out, events delivered, with no hand-off to the protocol
        thread, which is woken only when its next wake-up came forward (or it has none yet)."""
        self._flush_scheduled = False
        node, links, protocol = self.node, self.links, self.protocol
        if node is None or links is None or protocol is None:
            return
        with self.lock:
            now = boot_ns()
            if not self._take(now):
                return
            if node.out_data or node.out_beats:
                self._send(now)
                wake = self._next_wakeup(node, links)
            else:  # nothing new to send: retransmissions and owed acks stay the thread's
                wake = node.next_wakeup()  # (their deadlines did not move)
            thread_at = self._thread_wake_at
            if thread_at is None or wake < thread_at:
                protocol.wake()
        self._drain()

    def _drain(self) -> None:
        """(On the loop.) Deliver every batch the flushes took, in the order they took them."""
        self._drain_scheduled = False  # first: a batch queued after this asks again
        handback = self._handback
        while handback:
            self._deliver(handback.popleft())

    def _deliver(self, produced: Outputs) -> None:
        for session, event in produced.events:
            queue = self.queues.get(session)
            if queue is not None:
                queue.put_nowait(event)
        for watcher, leader_event in produced.leader_events:
            watcher_queue = self.watchers.get(watcher)
            if watcher_queue is not None:
                watcher_queue.put_nowait(leader_event)
        for domain in produced.fence_requests:
            self._start_fence(domain)
        for line in produced.log:
            logger.log(25, "%s", line)

    def _write_lease(self, until_ns: int) -> None:
        """Until when this node's holds are safe (0: none is), for the HA deadman, at most
        every half idle beat (a tmpfs file: no disk write on the lease path)."""
        self._lease_written = until_ns
        write_atomic(self.ctx.paths.lease_file, str(until_ns), durable=False)

    # -- two-node rule --------------------------------------------------------------------------
    async def _lone_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lone_event.wait(), LONE_CHECK_S)
            self._lone_event.clear()
            node = self.node
            if node is None or not self._lone(node):
                continue
            peer = self.lone_peer
            if self.fence_command and not peer:
                # never saw the other node: there is no domain to fence, so no taking over alone
                self._set_lone_ok(node, 0)
                if not self._unseen_peer_logged:
                    self._unseen_peer_logged = True
                    logger.warning("two-node rule: the other node was never seen, so it cannot "
                                   "be fenced; this node does not act alone until it was")
                continue
            with self.lock:
                must_fence = peer not in node.fenced and not node.has_left(peer)
                holds = node.member.counts()[0]
            if self.fence_command and must_fence:
                if self.fence_priority_delay_s and not holds:
                    logger.warning("two-node rule: node %d is gone; this node holds no lock, so "
                                   "it fences node %d only after %g s (fence_priority_delay_ms)",
                                   peer, peer, self.fence_priority_delay_s)
                    await asyncio.sleep(self.fence_priority_delay_s)
                    with self.lock:
                        if not node.lone(boot_ns()) or peer in node.fenced:
                            continue
                logger.warning("two-node rule: node %d is gone; fencing it", peer)
                if not await asyncio.shield(self._start_fence(peer)):
                    self._set_lone_ok(node, 0)
                    await asyncio.sleep(self.timing.fence_retry_ns / 1e9)
                continue
            if self.witness is not None:
                with self.lock:
                    wait_s = self.witness.priority_wait_s(node)
                if wait_s:
                    await asyncio.sleep(wait_s)
                    if not self._lone(node):
                        continue
                until = await self.witness.vote(node, self.netid)
                self._set_lone_ok(node, until, arbitrated=True)
            else:
                ok = await ping_any(self.reference_ips)
                self._set_lone_ok(node, LONE_VALID_NS if ok else 0, relative=True)

    def _lone(self, node: Node) -> bool:
        with self.lock:
            return node.lone(boot_ns())

    def _set_lone_ok(self, node: Node, until: int, *, arbitrated: bool = False,
                     relative: bool = False) -> None:
        """The two-node check's outcome (`relative`: `until` counts from now)."""
        with self.lock:
            now = boot_ns()
            node.set_lone_ok(now + until if relative and until else until, now,
                             arbitrated=arbitrated)
        self.flush_soon()

    # -- fencing --------------------------------------------------------------------------------
    def _start_fence(self, domain: int) -> asyncio.Task[bool]:
        """The fence of `domain` under way, started if none is: one run at a time per node,
        whoever asks (the authority, the two-node rule)."""
        task = self._fences.get(domain)
        if task is None:
            task = self._fences[domain] = asyncio.create_task(self._fence(domain),
                                                              name=f"lock-fence-{domain}")
            task.add_done_callback(lambda _: self._fences.pop(domain, None))
        return task

    async def _fence(self, domain: int) -> bool:
        """Run the fence command for `domain` and hand the outcome to the node; a failure that
        something waits for is logged as an error naming it."""
        logger.info("fencing node %d: running %r", domain, self.fence_command)
        result = await run_fence(self.fence_command, domain, self.fence_timeout)
        node = self.node
        if result.ok:
            logger.log(25, "node %d fenced (%s)", domain, result.summary)
        else:
            with self.lock:
                waiting = [node.fence_waiting(domain)] if node is not None else []
                if node is not None and node.lone(boot_ns()) and domain == self.lone_peer:
                    waiting.append("the two-node rule (this lone node takes over nothing)")
            waiting = [text for text in waiting if text]
            output = f", output: {result.output}" if result.output else ""
            if waiting:
                logger.error("fence of node %d FAILED: %r %s%s; waiting for it: %s; trying again "
                             "every %g s", domain, self.fence_command, result.summary, output,
                             "; ".join(waiting), self.timing.fence_retry_ns / 1e9)
            else:
                logger.warning("fence of node %d failed: %r %s%s; nothing waits for it any more",
                               domain, self.fence_command, result.summary, output)
        if node is not None:
            with self.lock:
                node.fence_done(domain, result.ok, boot_ns())
            self._lone_event.set()
            self.flush_soon()
        return result.ok

    # -- sessions -------------------------------------------------------------------------------
    def new_session_id(self) -> int:
        self.session_counter += 1
        node = self.node
        assert node is not None
        return (node.domain << 56) | ((self.instance & 0xFFFFFF) << 32) | \
            (self.session_counter & 0xFFFFFFFF)

    def new_watcher_id(self) -> int:
        self.watcher_counter += 1
        return self.watcher_counter

    def node_id(self, domain: int) -> common_pb2.NodeId:
        return common_pb2.NodeId(netid=self.netid, domain=domain)


def build(ctx: DaemonContext) -> DaemonApp:
    if ctx.config["backend"] == "etcd":
        from .etcd.app import EtcdLockApp
        return EtcdLockApp(ctx)
    return LockApp(ctx)
