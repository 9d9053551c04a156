"""A deterministic simulation of a lock cluster: real `Node`s and `Links`, a virtual network.

For the unit tests (tests/unit/test_lock_*.py): views, delays, losses, partitions, asymmetric
views, crashes, restarts, clean stops and killed lock daemons are all under the test's control,
and every session event is recorded with its (global, virtual) time, so `check_history` can verify
that no lock ever had two owners and tokens increased. Datagrams are serialized and parsed as on
the wire. With `fencing`, every node has a fence command: it takes `fence_ns` and succeeds when
`fence_ok(node)` says so; each run is logged in `fence_log`; with `fence_powers_off` a fence that
succeeds also crashes its target (a real fence leaves it off).

What a loaded host does to a daemon is modelled too, since that is where ownership bugs hide
(issue 13):
- *stalls* of the whole process (`stall`: nothing in, nothing out, timers late, client calls
  wait) and *between computing and sending* (`stall(..., before_send=True)`: the node's next step
  that produces anything runs, then all it produced (datagrams, session events, fence requests)
  waits for the stall's end, as in a daemon descheduled between its step and `sendto`);
- *long-tailed datagram delay*: `tail_fraction` of the datagrams get a capped Pareto extra delay
  (and so arrive out of order);
- *clock rates* (`drift_ppm`, or `clocks` given): each node's `now` is its own clock, running at
  rate 1 + e with |e| <= drift_ppm from a random offset; records stay in global time;
- *the holder's reaction* (`reaction_ns`): a holder told `Lost` (or whose stream broke) stops
  using the lock a random while later (the HA daemon killing the service).

Two-node clusters check a reference IP (`reference_ok`, answered at once) or, with `witness` set,
ask the witness (services/witness/core.py's `VoteBook`, on global time) as the lock daemon does
(services/lock/witness.py): at most every 200 ms while lone, 300 ms later when holding no lock,
each request and answer a network delay away (none when `witness_reachable` says no: the answer
is a failure after 500 ms), the vote counted from the node's clock reading at sending.

`check_history` excuses nothing unless told: a session owns a lock from its `granted` record until
the first of its release, its `lost` + reaction, and the `valid_until` its node gave it (Granted,
Renewed; 0 = no deadline); any instant with two owners is a failure. `ownership_run` (and
`python -m skyge.services.lock.sim`) drives HA-like holders through random stalls, delays, drift
and faults and checks the history.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import heapq
import os
import random
import sys
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Sequence

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

from skyge.services.witness.core import VoteBook

from .protocol import MS, US, MemoryStore, Node, Timing
from .protocol.table import Name
from .links import Links, Outgoing

__all__ = [
    "SEC",
    "TIMING_ENV",
    "Clock",
    "Conditions",
    "Overlap",
    "Ownership",
    "Record",
    "RunResult",
    "SimCluster",
    "SimNode",
    "check_history",
    "find_overlaps",
    "ownership_run",
    "ownerships",
    "summarize",
    "timing_from_env",
    "timing_from_text",
]

SEC = 1000 * MS
#: the lock daemon's witness loop (services/lock/server.py, services/lock/witness.py)
WITNESS_CHECK_NS, WITNESS_PRIORITY_NS, WITNESS_TIMEOUT_NS = 200 * MS, 300 * MS, 500 * MS
NEVER = 1 << 62  # "no deadline" as a time
#: environment variable with a Timing for the randomized check (see `timing_from_text`)
TIMING_ENV = "SKYGE_LOCK_SIM_TIMING"


@dataclass(frozen=True)
class Clock:
    """A node's clock: reads `offset_ns` + t * (1 + rate_ppm / 1e6) at global time t."""

    offset_ns: int = 0
    rate_ppm: int = 0

    def read(self, t: int) -> int:
        return self.offset_ns + t + t * self.rate_ppm // 1_000_000

    def when(self, reading: int) -> int:
        """The first global time at which this clock reads `reading` or more."""
        t = (reading - self.offset_ns) * 1_000_000 // (1_000_000 + self.rate_ppm)
        while self.read(t) < reading:
            t += 1
        while self.read(t - 1) >= reading:
            t -= 1
        return t


@dataclass
class SimNode:
    domain: int
    store: MemoryStore
    instance: int
    node: Node
    links: Links
    alive: bool = True
    sessions: int = 0


@dataclass
class Record:
    """A session event as the client saw it (global time)."""

    time: int
    domain: int
    session: int
    #: granted, queued, failed, released, lost, renewed, opened, ended, orphaned, adopted, and
    #: releasing (the client decided to release: it stops using the lock now)
    kind: str
    name: Name | None = None
    token: int = 0
    reason: int = 0
    #: granted, renewed: until when the holds are safe (global time; 0 = no deadline given)
    valid_until: int = 0
    #: lost, ended: how long the holder takes to stop using its locks after this
    reaction: int = 0


@dataclass
class _Outputs:
    """What one step of a node produced, before it leaves the process."""

    events: list[tuple[int, lp.SessionEvent]]
    leaders: list[tuple[int, lp.LeaderEvent]]
    orphans_ended: list[int]
    fences: list[int]
    datagrams: list[Outgoing]

    def __bool__(self) -> bool:
        return bool(self.events or self.leaders or self.orphans_ended or self.fences or
                    self.datagrams)


class SimCluster:
    """N nodes on a virtual network; time advances only through `run`.

    `now` is global time; a node's own clock reads `local(domain)` (equal to `now` unless
    `drift_ppm` or `clocks` is set). Opening a session is immediate even on a stalled node;
    acquire, release, close, a clean stop and fence results wait for a stall's end."""

    def __init__(self, size: int, *, seed: int = 1, latency_ns: int = 150_000,
                 jitter_ns: int = 100_000, expected: int | None = None,
                 timing: Timing | None = None, detect_ns: int = 25 * MS, netid: int = 1,
                 fencing: bool = False, fence_ns: int = 5 * MS, drift_ppm: int = 0,
                 tail_fraction: float = 0.0, tail_scale_ns: int = 1 * MS,
                 tail_alpha: float = 1.5, tail_cap_ns: int = 200 * MS,
                 reaction_ns: tuple[int, int] = (0, 0),
                 clocks: dict[int, Clock] | None = None) -> None:
        self.rng = random.Random(seed)
        #: draws of the load model (drift, long tail, reactions), apart from `rng` so that a seed's
        #: network draws do not depend on it
        self.chance = random.Random(f"load-{seed}")
        self.now = 0
        self.latency, self.jitter, self.detect = latency_ns, jitter_ns, detect_ns
        self.tail_fraction, self.tail_scale, self.tail_alpha, self.tail_cap = (
            tail_fraction, tail_scale_ns, tail_alpha, tail_cap_ns)
        self.reaction_ns = reaction_ns
        self.timing = timing or Timing()
        self.expected = expected if expected is not None else size
        self.netid = netid
        self.nodes: dict[int, SimNode] = {}
        self.clocks = {domain: self._clock(drift_ppm) for domain in range(1, size + 1)}
        self.clocks.update(clocks or {})
        self.queue: list[tuple[int, int, int, int, bytes]] = []
        self._counter = 0
        self.blocked: set[tuple[int, int]] = set()
        self.loss = 0.0
        self.records: list[Record] = []
        self.session_node: dict[int, int] = {}
        self.handlers: list[Callable[[Record], None]] = []
        self.view_changes: list[tuple[int, int, frozenset[int]]] = []  # (time, domain, view)
        self.reference_ok: dict[int, bool] = {}
        self.witness: VoteBook | None = None
        self.witness_reachable: dict[int, bool] = {}  # missing: reachable
        self._witness_asked: dict[int, int] = {}  # node -> global time of its last request
        self.leader_log: list[tuple[int, int, lp.LeaderEvent]] = []
        self.node_log: list[tuple[int, int, str]] = []  # (time, domain, line of Node.log)
        self.stalled_until: dict[int, int] = {}
        self.stall_log: list[tuple[int, int, int, bool]] = []  # (domain, start, end, before_send)
        self._send_stalls: dict[int, int] = {}  # domain -> length of the stall armed before send
        self._held: dict[int, list[_Outputs]] = {}  # outputs waiting for a stall's end
        self._deferred: dict[int, list[Callable[[int], None]]] = {}  # client calls, likewise
        self._calls: list[tuple[int, int, Callable[[], None]]] = []  # call_at heap
        self.orphans: set[int] = set()  # sessions kept without a client (Open.keep_holds)
        self.fencing, self.fence_ns = fencing, fence_ns
        self.fence_ok: Callable[[int], bool] = lambda domain: True
        self.fence_powers_off = False
        self.fence_log: list[tuple[int, int, int, bool]] = []  # (done at, by node, fenced, ok)
        self._fences: list[tuple[int, int, int, int]] = []  # heap of (done at, n, by, target)
        self._leaving: dict[int, int] = {}  # stopping node -> when it sends its last beat
        #: stopping node -> how long after its sessions' Lost went out it sends its last beat
        self._leave_after: dict[int, int] = {}
        for domain in range(1, size + 1):
            self._boot(domain, MemoryStore(), 1)
        for domain in self.nodes:
            self.set_view(domain, set(self.nodes), at=0)

    # -- clocks ---------------------------------------------------------------------------------
    def _clock(self, drift_ppm: int) -> Clock:
        """A clock off by at most `drift_ppm` in rate (the bounds drawn often), from a random
        boot time: a node that compared its clock with another's would show at once."""
        if not drift_ppm:
            return Clock()
        rate = self.chance.choice((-drift_ppm, drift_ppm,
                                   self.chance.randint(-drift_ppm, drift_ppm)))
        return Clock(self.chance.randrange(1, 10**12), rate)

    def local(self, domain: int) -> int:
        """What node `domain`'s clock reads now (its `now`)."""
        return self.clocks[domain].read(self.now)

    def _global(self, domain: int, reading: int) -> int:
        return self.clocks[domain].when(reading)

    # -- nodes ----------------------------------------------------------------------------------
    def _boot(self, domain: int, store: MemoryStore, instance: int) -> SimNode:
        node = Node(domain, instance, netid=self.netid, timing=self.timing, store=store,
                    expected_nodes=self.expected, now_ns=self.local(domain),
                    rng=random.Random(self.rng.random()), wall_ns=lambda: self.now)
        node.fencing = self.fencing
        sim = SimNode(domain, store, instance, node, Links(node))
        self.nodes[domain] = sim
        return sim

    def node(self, domain: int) -> Node:
        return self.nodes[domain].node

    def log_of(self, domain: int) -> list[str]:
        """Every line node `domain`'s Node logged (all its instances)."""
        return [line for _, d, line in self.node_log if d == domain]

    def set_view(self, domain: int, view: Iterable[int] | None, at: int | None = None) -> None:
        """Node `domain` sees `view` from time `at` (default now)."""
        when = self.now if at is None else at
        frozen = frozenset(view) if view is not None else None
        self.view_changes.append((when, domain, frozen))  # type: ignore[arg-type]
        self.view_changes.sort(key=lambda v: v[0])

    def crash(self, domain: int) -> None:
        """Power off: the node stops; its sessions' clients die with it."""
        self._die(domain, broken=False)
        for other in self.nodes:
            if other != domain and self.nodes[other].alive:
                view = set(self._current_view(other) or ()) - {domain}
                self.set_view(other, view, at=self.now + self.detect)

    def kill(self, domain: int) -> None:
        """The node's lock daemon dies at once (kill -9), its sessions with it (their clients see
        the stream break and stop after their reaction time); its heartbeat daemon runs on, so
        no view changes (`crash` is the whole node)."""
        self._die(domain, broken=True)

    def _die(self, domain: int, *, broken: bool) -> None:
        self.nodes[domain].alive = False
        for pending in (self._leaving, self._leave_after, self.stalled_until,
                        self._send_stalls, self._held, self._deferred):
            pending.pop(domain, None)
        for session, where in self.session_node.items():
            if where == domain:
                self._record(Record(self.now, domain, session, "ended",
                                    reaction=self._reaction() if broken else 0))

    def stop(self, domain: int) -> None:
        """A clean stop of the node's lock daemon (SIGTERM): its sessions are told they lost
        everything; `leave_warning_ns` after that news left the node (a stall before it went
        out delays both) when they held locks, at once otherwise, its last beat says it leaves,
        and it is gone. Its heartbeat daemon runs on: no view changes. A stalled daemon stops
        when its stall ends."""
        def stopping(local: int) -> None:
            held = self.nodes[domain].node.stop_sessions(local)
            self._leave_after[domain] = self.timing.leave_warning_ns if held else 0

        self._call(domain, stopping)

    def boot(self, domain: int) -> None:
        """Start a crashed node again (same persisted state, next instance)."""
        old = self.nodes[domain]
        self._boot(domain, old.store, old.instance + 1)
        alive = {d for d, n in self.nodes.items() if n.alive}
        for other in alive:
            self.set_view(other, alive, at=self.now + self.detect)

    def _current_view(self, domain: int) -> frozenset[int] | None:
        view = self.nodes[domain].node.view
        return frozenset(view) if view is not None else None

    def stall(self, domain: int, duration_ns: int, *, before_send: bool = False) -> None:
        """The node's daemon stops for a while (SIGSTOP, a long GC, a starved CPU): datagrams
        and client calls wait, timers fire late. With `before_send` the stall hits the node's
        next step that produces anything, after it computed its outputs and before they leave:
        they go out (datagrams, session events) at the stall's end."""
        if not self.nodes[domain].alive:
            return
        if before_send:
            self._send_stalls[domain] = duration_ns
        else:
            self._freeze(domain, duration_ns, before_send=False)

    def _freeze(self, domain: int, duration_ns: int, *, before_send: bool) -> None:
        end = self.now + duration_ns
        self.stalled_until[domain] = max(end, self.stalled_until.get(domain, 0))
        self.stall_log.append((domain, self.now, end, before_send))

    def _stalled(self, domain: int) -> bool:
        return self.stalled_until.get(domain, 0) > self.now

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut the network between groups (and update views after the detection delay)."""
        sets = [set(g) for g in groups]
        self.blocked = {(a, b) for i, ga in enumerate(sets) for j, gb in enumerate(sets) if i != j
                        for a in ga for b in gb}
        for group in sets:
            for domain in group:
                if self.nodes[domain].alive:
                    self.set_view(domain, {d for d in group if self.nodes[d].alive},
                                  at=self.now + self.detect)

    def heal(self) -> None:
        self.blocked = set()
        alive = {d for d, n in self.nodes.items() if n.alive}
        for domain in alive:
            self.set_view(domain, alive, at=self.now + self.detect)

    def call_at(self, at: int, action: Callable[[], None]) -> None:
        """Run `action()` at global time `at` (a client's or a fault's timer)."""
        self._counter += 1
        heapq.heappush(self._calls, (max(at, self.now), self._counter, action))

    # -- sessions -------------------------------------------------------------------------------
    def open(self, domain: int, label: str = "", *, keep_holds: bool = False) -> int:
        """A client opens a session; with `keep_holds` it may continue an orphaned one (each
        adopted hold is recorded as "adopted")."""
        sim = self.nodes[domain]
        sim.sessions += 1
        fresh = (domain << 56) | (sim.instance << 32) | sim.sessions
        session, adopted = sim.node.open_session(fresh, label or f"s{fresh & 0xffff}@{domain}", 0,
                                                 self.local(domain), keep_holds=keep_holds)
        self.session_node[session] = domain
        self.orphans.discard(session)
        self._record(Record(self.now, domain, session, "opened"))
        until = sim.node.member.lease_until  # as the daemon tells an adopting client
        for name, token in adopted:
            self._record(Record(self.now, domain, session, "adopted", name, token,
                                valid_until=self._global(domain, until) if until else 0))
        self._after(domain)
        return session

    def _call(self, domain: int, call: Callable[[int], None]) -> None:
        """Run a call on the node (given its clock's reading) now, or at the end of its stall
        (a request waits in the socket as a datagram does)."""
        if self._stalled(domain):
            self._deferred.setdefault(domain, []).append(call)
            return
        call(self.local(domain))
        self._after(domain)

    def acquire(self, session: int, name: Name, **kwargs: object) -> None:
        domain = self.session_node[session]
        if not self.nodes[domain].alive:
            return
        self._call(domain, lambda now: self.nodes[domain].node.acquire(
            session, name, now, **kwargs))  # type: ignore[arg-type]

    def release(self, session: int, name: Name) -> None:
        domain = self.session_node[session]
        if not self.nodes[domain].alive:
            return
        self._record(Record(self.now, domain, session, "releasing", name))
        self._call(domain, lambda now: self.nodes[domain].node.release(session, name, now))

    def close(self, session: int) -> None:
        """The client's stream ends (it closed it, or died): recorded as "ended" at once, or,
        for a keep_holds session, as "orphaned" when the node keeps its holds."""
        domain = self.session_node[session]
        if not self.nodes[domain].alive:
            return
        local = self.nodes[domain].node.member.sessions.get(session)
        keeps = local is not None and local.keep_holds
        if not keeps:
            self._record(Record(self.now, domain, session, "ended"))

        def closing(now: int) -> None:
            node = self.nodes[domain].node
            node.close_session(session, now)
            if not keeps:
                return
            if session in node.member.orphaned_sessions():
                self.orphans.add(session)
                self._record(Record(self.now, domain, session, "orphaned"))
            else:
                self._record(Record(self.now, domain, session, "ended"))

        self._call(domain, closing)

    def _record(self, record: Record) -> None:
        self.records.append(record)
        for handler in list(self.handlers):
            handler(record)

    def _reaction(self) -> int:
        low, high = self.reaction_ns
        return self.chance.randint(low, high) if high else 0

    # -- engine ---------------------------------------------------------------------------------
    def _after(self, domain: int) -> None:
        """Collect a node's outputs and let them out, unless a stall armed before sending hits
        this step: then they wait for its end."""
        outputs = self._collect(domain)
        pause = self._send_stalls.get(domain)
        warning = self._leave_after.pop(domain, None)
        if pause is not None and outputs:
            del self._send_stalls[domain]
            self._freeze(domain, pause, before_send=True)
            self._held.setdefault(domain, []).append(outputs)
            if warning is not None:
                self._leaving[domain] = self.now + pause + warning
            return
        if warning is not None:
            self._leaving[domain] = self.now + warning
        self._emit(domain, outputs)

    def _collect(self, domain: int) -> _Outputs:
        sim = self.nodes[domain]
        node = sim.node
        produced = node.take_outputs()
        orphans = [s for s in self.orphans if self.session_node[s] == domain and
                   s not in node.member.sessions]
        self.orphans.difference_update(orphans)
        self.node_log += [(self.now, domain, line) for line in produced.log]
        return _Outputs(produced.events, produced.leader_events, orphans,
                        produced.fence_requests, sim.links.flush(self.local(domain)))

    def _emit(self, domain: int, outputs: _Outputs) -> None:
        """Outputs leave the node: datagrams onto the network, events into the records."""
        for session, event in outputs.events:
            if self.session_node.get(session) != domain:
                continue
            kind = event.WhichOneof("event")
            body = getattr(event, kind)
            name = (body.slot, body.lock) if hasattr(body, "slot") else None
            valid = getattr(body, "valid_until_boot_ns", 0)
            self._record(Record(self.now, domain, session, kind, name,
                                getattr(body, "fencing_token", 0), getattr(body, "reason", 0),
                                valid_until=self._global(domain, valid) if valid else 0,
                                reaction=self._reaction() if kind == "lost" else 0))
        for watcher, leader_event in outputs.leaders:
            self.leader_log.append((self.now, watcher, leader_event))
        for session in outputs.orphans_ended:  # its last hold ended (nobody to tell)
            self._record(Record(self.now, domain, session, "ended"))
        for target in outputs.fences:
            self._counter += 1
            heapq.heappush(self._fences, (self.now + self.fence_ns, self._counter, domain, target))
        for outgoing in outputs.datagrams:
            data = outgoing.datagram.SerializeToString()
            for path in (1, 2) if outgoing.all_paths else (1,):
                self._send(domain, outgoing.domain, data, path)

    def _thaw(self, domain: int) -> None:
        """A stall ended: what the node computed before it leaves, then waiting calls run."""
        for outputs in self._held.pop(domain, []):
            self._emit(domain, outputs)
        calls = self._deferred.pop(domain, [])
        while calls and not self._stalled(domain):
            calls.pop(0)(self.local(domain))
            self._after(domain)
        if calls:
            self._deferred[domain] = calls + self._deferred.get(domain, [])

    def _send(self, src: int, dst: int, data: bytes, path: int) -> None:
        if (src, dst) in self.blocked or dst not in self.nodes:
            return
        if self.loss and self.rng.random() < self.loss:
            return
        self._counter += 1
        heapq.heappush(self.queue, (self.now + self._delay(), self._counter, src, dst, data))

    def _delay(self) -> int:
        """One datagram's way through the network: latency, jitter, now and then a long tail."""
        delay = self.latency + int(self.rng.random() * self.jitter)
        if self.tail_fraction and self.chance.random() < self.tail_fraction:
            extra = self.tail_scale * (self.chance.paretovariate(self.tail_alpha) - 1)
            delay += min(self.tail_cap, int(extra))
        return delay

    def _next_time(self) -> int:
        times = []
        if self.queue:
            times.append(self.queue[0][0])
        for domain, sim in self.nodes.items():
            if sim.alive and self._stalled(domain):
                times.append(self.stalled_until[domain])
            elif sim.alive:
                times.append(self._global(domain, sim.node.next_wakeup()))
                deadline = sim.links.deadline()
                if deadline is not None:
                    times.append(self._global(domain, deadline))
        pending = [v[0] for v in self.view_changes if v[0] >= 0]
        if pending:
            times.append(min(pending))
        if self._fences:
            times.append(self._fences[0][0])
        if self._calls:
            times.append(self._calls[0][0])
        times += [max(at, self.stalled_until.get(d, 0)) for d, at in self._leaving.items()]
        return min(times)

    def run(self, duration_ns: int) -> None:
        """Advance virtual time by `duration_ns`, processing everything due."""
        end = self.now + duration_ns
        while True:
            nxt = max(self.now, self._next_time())
            if nxt > end:
                self.now = end
                return
            self.now = nxt
            for domain in [d for d in self.nodes if d in self._held or d in self._deferred]:
                if not self._stalled(domain):
                    self._thaw(domain)
            while self.view_changes and self.view_changes[0][0] <= self.now:
                _, domain, view = self.view_changes.pop(0)
                sim = self.nodes[domain]
                if sim.alive and self._stalled(domain):
                    self.view_changes.insert(0, (self.stalled_until[domain], domain, view))
                    self.view_changes.sort(key=lambda v: v[0])
                    break
                if sim.alive:
                    sim.node.on_view(view, self.local(domain))
                    self._lone_check(sim)
                    self._after(domain)
            for domain, at in sorted(self._leaving.items()):
                if at <= self.now and not self._stalled(domain):
                    self.nodes[domain].node.leave(self.local(domain))
                    self._after(domain)
                    self.kill(domain)
            while self._fences and self._fences[0][0] <= self.now:
                _, _, by, target = heapq.heappop(self._fences)
                ok = self.fence_ok(target)
                self.fence_log.append((self.now, by, target, ok))
                if ok and self.fence_powers_off and self.nodes[target].alive:
                    self.crash(target)
                if self.nodes[by].alive:
                    self._call(by, functools.partial(self.nodes[by].node.fence_done, target, ok))
            while self._calls and self._calls[0][0] <= self.now:
                heapq.heappop(self._calls)[2]()
            while self.queue and self.queue[0][0] <= self.now:
                _, counter, src, dst, data = heapq.heappop(self.queue)
                sim = self.nodes[dst]
                if not sim.alive or (src, dst) in self.blocked:
                    continue
                if self._stalled(dst):  # waits in the socket buffer
                    heapq.heappush(self.queue, (self.stalled_until[dst], counter, src, dst, data))
                    continue
                sim.links.receive(pp.PeerDatagram.FromString(data), self.local(dst))
                self._after(dst)
            for domain, sim in self.nodes.items():
                if not sim.alive or self._stalled(domain):
                    continue
                local = self.local(domain)
                deadline = sim.links.deadline()
                if sim.node.next_wakeup() <= local or (deadline is not None and
                                                       deadline <= local):
                    self._lone_check(sim)
                    sim.node.tick(local)
                    self._after(domain)

    def _lone_check(self, sim: SimNode) -> None:
        if self.witness is not None:
            self._ask_witness(sim)
            return
        node = sim.node
        local = self.local(sim.domain)
        node.lone_possible = sim.domain in self.reference_ok
        if node.lone(local) and self.reference_ok.get(sim.domain, False):
            node.set_lone_ok(local + 500 * MS, local)
        elif node.lone(local):
            node.set_lone_ok(0, local)

    def _ask_witness(self, sim: SimNode) -> None:
        """The lock daemon's witness loop (services/lock/witness.py), on the virtual network."""
        node, domain = sim.node, sim.domain
        node.lone_possible = node.lone_by_witness = True
        asked = self._witness_asked.get(domain)
        if not node.lone(self.local(domain)) or (asked is not None and
                                                 self.now < asked + WITNESS_CHECK_NS):
            return
        delay = 0 if node.lone_arbitrated or node.member.counts()[0] else WITNESS_PRIORITY_NS
        self._witness_asked[domain] = self.now + delay
        holdover_ns = -(-self.timing.switch_ns // MS) * MS
        book = self.witness
        assert book is not None

        def answer(until: int) -> None:
            if self.nodes[domain].node is node:
                self._call(domain, lambda now: node.set_lone_ok(until, now, arbitrated=True))

        def send(sent: int) -> None:
            if self.nodes[domain].node is not node or not node.lone(sent):
                return
            if not self.witness_reachable.get(domain, True):
                self.call_at(self.now + WITNESS_TIMEOUT_NS, lambda: answer(0))
                return

            def decide() -> None:
                verdict = book.vote(self.netid, domain, holdover_ns, self.now)
                until = 0
                if verdict.granted:
                    valid = verdict.valid_ns // MS * MS
                    until = sent + valid - valid * self.timing.drift_ppm // 1_000_000
                self.call_at(self.now + self._delay(), lambda: answer(until))

            self.call_at(self.now + self._delay(), decide)

        self.call_at(self.now + delay, lambda: self._call(domain, send)
                     if self.nodes[domain].node is node else None)

    # -- queries --------------------------------------------------------------------------------
    def authorities(self) -> list[int]:
        return [d for d, s in self.nodes.items() if s.alive and s.node.established and
                self.local(d) < s.node.lease_end]

    def active_authority(self) -> int | None:
        for domain in self.authorities():
            auth = self.nodes[domain].node.auth
            if auth is not None and auth.active:
                return domain
        return None

    def of(self, session: int, kind: str | None = None) -> list[Record]:
        return [r for r in self.records
                if r.session == session and (kind is None or r.kind == kind)]


# ---------------------------------------------------------------------------------------------
# the history checker


def _ms(t: int) -> str:
    return "never" if t >= NEVER else f"{t / MS:.3f}"


def _name_text(name: Name) -> str:
    return name if isinstance(name, str) else f"{name[0]}/{name[1]}"


@dataclass
class Ownership:
    """One session's hold of one lock: when it was granted, when its holder stopped using it
    (released, lost + reaction, ended; None: never) and what it was told about its validity."""

    name: Name
    session: int
    domain: int
    token: int
    granted: int
    adopted: bool = False
    stop: int | None = None
    #: (told at, valid until; 0 = no deadline): the Granted, then every Renewed of the session
    promises: list[tuple[int, int]] = field(default_factory=list)

    def spans(self) -> list[tuple[int, int]]:
        """When the holder was a valid owner: from each promise until its deadline, between the
        grant and the stop. A renewal after a lapse counts again (it says the hold is safe)."""
        stop = NEVER if self.stop is None else self.stop
        spans: list[tuple[int, int]] = []
        for told, until in sorted(self.promises):
            start, end = max(told, self.granted), min(stop, until or NEVER)
            if start >= end:
                continue
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        return spans

    def label(self) -> str:
        return (f"session {self.session:x} on node {self.domain} (token {self.token}, "
                f"granted at {_ms(self.granted)} ms)")


@dataclass
class Overlap:
    """Two sessions both valid owners of a lock: from `start` to `end`, `length` ns in all."""

    name: Name
    first: Ownership  # the one granted first
    second: Ownership
    start: int
    end: int
    length: int
    to_the_end: bool = False  # both still owners when the history ends

    def describe(self) -> str:
        still = " (still at the end)" if self.to_the_end else ""
        return (f"{_name_text(self.name)}: two owners for {self.length / MS:.3f} ms{still} from "
                f"{_ms(self.start)} ms: {self.first.label()} and {self.second.label()}")


def ownerships(records: Iterable[Record]) -> list[Ownership]:
    """Every hold in a history, in grant order."""
    found: list[Ownership] = []
    holding: dict[tuple[int, Name], Ownership] = {}
    #: holds told to stop (lost, releasing) whose holder still reacts: a crash meanwhile (ended)
    #: stops them sooner
    reacting: dict[int, list[Ownership]] = {}

    def stop(key: tuple[int, Name], at: int) -> None:
        held = holding.pop(key)
        held.stop = at
        reacting.setdefault(key[0], []).append(held)

    for record in sorted(records, key=lambda r: r.time):  # stable: causal order within a tick
        name, session = record.name, record.session
        if record.kind in ("granted", "adopted") and name is not None:
            key = (session, name)
            if key in holding:
                if record.kind == "adopted":
                    continue  # the session kept its hold (orphaned) and continues it
                stop(key, record.time)
            held = Ownership(name, session, record.domain, record.token, record.time,
                             adopted=record.kind == "adopted")
            held.promises.append((record.time, record.valid_until))
            holding[key] = held
            found.append(held)
        elif record.kind in ("renewed", "orphaned"):  # orphaned: nobody left to stop it in time
            for (owner, _), held in holding.items():
                if owner == session:
                    held.promises.append((record.time, record.valid_until))
        elif record.kind in ("releasing", "lost") and name is not None:
            if (session, name) in holding:
                stop((session, name), record.time + record.reaction)
        elif record.kind == "ended":
            end = record.time + record.reaction
            for key in [k for k in holding if k[0] == session]:
                stop(key, end)
            for held in reacting.pop(session, []):
                held.stop = end if held.stop is None else min(held.stop, end)
    return found


def _excused(first: Ownership, second: Ownership,
             frozen: Sequence[tuple[int, int, int]]) -> bool:
    return any(domain == first.domain and start <= second.granted and first.granted <= end
               for domain, start, end in frozen)


def find_overlaps(records: Iterable[Record], excused: Iterable[tuple[int, int, int]] = (),
                  *, until: int | None = None) -> list[Overlap]:
    """Every pair of holds of a lock by different sessions with an instant at which both were
    valid owners (see `check_history`), merged per pair; the history ends at `until` (default:
    just after its last record)."""
    records = list(records)
    frozen = list(excused)
    horizon = until if until is not None else max((r.time for r in records), default=0) + 1
    spans: dict[Name, list[tuple[int, int, Ownership]]] = {}
    for held in ownerships(records):
        for start, end in held.spans():
            if start < horizon:
                spans.setdefault(held.name, []).append((start, min(end, horizon), held))
    pairs: dict[tuple[int, int], Overlap] = {}
    for name, found in spans.items():
        found.sort(key=lambda s: (s[0], s[1]))
        active: list[tuple[int, int, Ownership]] = []
        for start, end, held in found:
            active = [a for a in active if a[1] > start]
            for _, other_end, other in active:
                if other.session == held.session:
                    continue
                first, second = (other, held) if other.granted <= held.granted else (held, other)
                if _excused(first, second, frozen):
                    continue
                both_end = min(end, other_end)
                key = (id(first), id(second))
                if key not in pairs:
                    pairs[key] = Overlap(name, first, second, start, both_end, 0)
                seen = pairs[key]
                seen.start, seen.end = min(seen.start, start), max(seen.end, both_end)
                seen.length += both_end - start
                seen.to_the_end = seen.end >= horizon
            active.append((start, end, held))
    return sorted(pairs.values(), key=lambda o: o.start)


def check_history(records: list[Record], excused: Iterable[tuple[int, int, int]] = (), *,
                  until: int | None = None) -> list[str]:
    """Problems in a recorded history: an instant at which two sessions were valid owners of a
    lock, tokens not increasing.

    A session owns a lock from its `granted` record until the first of: its `releasing` of it,
    its `lost` of it + the record's reaction time, its `ended` + reaction (client gone, stream
    broken), and the latest `valid_until` it was told (Granted, then Renewed; 0 = no deadline;
    an orphaned hold has none: its HA daemon, and deadman, are gone), all in global time, up to
    `until` (default: the last record). Tokens must increase per lock in grant order (a grant
    already past its `valid_until` when it arrived never made an owner and is not counted).

    `excused` lists (domain, start, end) periods when a node's daemon was frozen, for tests of a
    protocol without the holder-side deadline: an overlap with a holder on that node granted
    before the freeze ended is not counted (tokens must still increase). The randomized check
    excuses nothing.
    """
    problems = [overlap.describe() for overlap in find_overlaps(records, excused, until=until)]
    last_token: dict[Name, int] = {}
    for held in ownerships(records):
        if held.adopted or (not held.spans() and held.promises[0][1]):
            continue
        name = held.name
        if held.token <= last_token.get(name, 0):
            problems.append(f"{_name_text(name)}: token {held.token} of {held.label()} not "
                            f"above {last_token[name]}")
        last_token[name] = max(last_token.get(name, 0), held.token)
    return problems


# ---------------------------------------------------------------------------------------------
# the randomized ownership check: HA-like holders on a loaded host


@dataclass(frozen=True)
class Conditions:
    """What `ownership_run` throws at a cluster; defaults: a shared, loaded 2-vCPU host."""

    duration_ns: int = 4 * SEC
    #: until then: no faults and no stall over 200 ms, so every Lost is spurious
    quiet_ns: int = 2 * SEC
    services: int = 2  # locks, each wanted by one session on every node (one holds, the rest wait)
    hold_ns: tuple[int, int] = (100 * MS, 1500 * MS)  # a holder keeps its lock, then moves it
    stalls_per_s: float = 5.0  # per node; lengths: see `stall_length`
    long_stall_share: float = 0.005  # the share of long stalls ...
    long_stall_ns: tuple[int, int] = (200 * MS, 500 * MS)  # ... and their lengths after quiet_ns
    before_send: float = 0.3  # share of the stalls that hit between computing and sending
    reaction_ns: tuple[int, int] = (1 * MS, 20 * MS)  # a holder told Lost stops this much later
    tail_fraction: float = 0.02  # datagrams delayed by a capped Pareto tail (1 ms scale, 200 cap)
    loss: float = 0.005
    faults: bool = True  # after quiet_ns: crashes, partitions, killed and stopped lock daemons
    #: bound on each clock's rate error |e|; None: half of Timing.drift_ppm, so that any two
    #: clocks differ by at most drift_ppm (what the protocol assumes)
    rate_error_ppm: int | None = None
    fencing: bool = False  # every node has a fence command that powers its target off
    #: two nodes: a partition cuts the isolated node's reference IP too (False: both still
    #: reach it, the seed's rule's known hole, issue 13 item 7)
    two_node_cut_hides_reference: bool = True
    #: two nodes: a witness arbitrates instead of the reference IP; a partition cuts the
    #: isolated node off it half of the time
    witness: bool = False


def stall_length(rng: random.Random, conditions: Conditions, *, quiet: bool) -> int:
    """Most stalls 0-10 ms, 5 % 25-80 ms, a few long ones (`long_stall_share`): 100-200 ms while
    `quiet`, else `long_stall_ns`."""
    draw = rng.random()
    if draw < conditions.long_stall_share:
        return rng.randrange(100 * MS, 200 * MS) if quiet else rng.randrange(
            *conditions.long_stall_ns)
    if draw < conditions.long_stall_share + 0.05:
        return rng.randrange(25 * MS, 80 * MS)
    return rng.randrange(0, 10 * MS)


@dataclass
class RunResult:
    seed: int
    size: int
    problems: list[str]
    overlaps: list[Overlap]
    timelines: list[str]
    grants: int
    quiet_lost: int  # Lost events before any fault or stall over 200 ms: all spurious
    quiet_ns: int
    stalls: int
    faults: list[str]
    highest_term: int
    wall_s: float


class _HaDaemons:
    """One HA daemon per node with one session per service lock: it acquires, holds for a while
    then releases (a planned move) and queues again; after Lost, or a failed acquire, it tries
    again a little later. Every action runs from a timer (`call_at`), never inside a record."""

    def __init__(self, cluster: SimCluster, locks: list[Name], conditions: Conditions,
                 rng: random.Random) -> None:
        self.cluster, self.locks, self.conditions, self.rng = cluster, locks, conditions, rng
        self.wants: dict[int, Name] = {}  # live session -> its service lock
        self.state: dict[int, str] = {}  # idle, waiting, holding
        self.generation: dict[int, int] = {}
        cluster.handlers.append(self.on_record)

    def start(self, domain: int) -> None:
        for name in self.locks:
            session = self.cluster.open(domain, f"svc{_name_text(name)}")
            self.wants[session], self.state[session], self.generation[session] = name, "idle", 0
            self._later(session, 0, self._acquire)

    def _later(self, session: int, delay: int, action: Callable[[int], None]) -> None:
        self.cluster.call_at(self.cluster.now + delay, lambda: action(session))

    def _acquire(self, session: int) -> None:
        if session in self.wants and self.state[session] == "idle":
            self.state[session] = "waiting"
            self.cluster.acquire(session, self.wants[session])

    def _move(self, session: int, generation: int) -> None:
        if session in self.wants and self.generation[session] == generation:
            self.generation[session] += 1
            self.state[session] = "idle"
            self.cluster.release(session, self.wants[session])
            self._later(session, self.rng.randrange(20 * MS, 200 * MS), self._acquire)

    def on_record(self, record: Record) -> None:
        session = record.session
        if session not in self.wants:
            return
        rng = self.rng
        if record.kind == "granted":
            self.state[session] = "holding"
            self.generation[session] += 1
            generation = self.generation[session]
            self.cluster.call_at(self.cluster.now + rng.randrange(*self.conditions.hold_ns),
                                 lambda: self._move(session, generation))
        elif record.kind in ("lost", "failed"):
            self.generation[session] += 1
            self.state[session] = "idle"
            self._later(session, record.reaction + rng.randrange(50 * MS, 300 * MS),
                        self._acquire)
        elif record.kind == "ended":
            del self.wants[session]


def ownership_run(seed: int, size: int = 3, *, timing: Timing | None = None,
                  conditions: Conditions = Conditions()) -> RunResult:
    """One randomized run: HA-like holders of `conditions.services` locks on every node, each
    node stalled at random (`stall_length`; a share before sending), long-tailed delays, loss,
    clock rates within half of `timing.drift_ppm` either way (so any two differ by at most
    drift_ppm, the protocol's assumption), holders reacting to Lost in `reaction_ns`; after
    `quiet_ns` one fault at a time (crash, partition, kill -9, clean stop, each undone later).
    The history is checked with nothing excused."""
    started = time.perf_counter()
    c = conditions
    timing = timing or Timing()
    rng = random.Random(f"run-{seed}")
    rate_error = timing.drift_ppm // 2 if c.rate_error_ppm is None else c.rate_error_ppm
    cluster = SimCluster(size, seed=seed, timing=timing, drift_ppm=rate_error,
                         tail_fraction=c.tail_fraction, reaction_ns=c.reaction_ns,
                         fencing=c.fencing)
    cluster.loss, cluster.fence_powers_off = c.loss, True
    if size == 2:
        cluster.reference_ok.update({1: True, 2: True})
        if c.witness:
            cluster.witness = VoteBook(vote_ns=SEC, max_holdover_ns=5 * SEC, started_ns=-NEVER)
    holders = _HaDaemons(cluster, [(600, k) for k in range(1, c.services + 1)], c, rng)
    for domain in cluster.nodes:
        holders.start(domain)
    events: list[tuple[int, str]] = []  # faults, for the timelines

    def stall(domain: int) -> None:
        if cluster.nodes[domain].alive:
            cluster.stall(domain, stall_length(rng, c, quiet=cluster.now < c.quiet_ns),
                          before_send=rng.random() < c.before_send)
        cluster.call_at(cluster.now + int(rng.expovariate(c.stalls_per_s) * SEC),
                        lambda: stall(domain))

    def fault() -> None:
        alive = [d for d, n in cluster.nodes.items() if n.alive]
        victim, kind = rng.choice(alive), rng.choice(["crash", "partition", "kill", "stop"])
        events.append((cluster.now, f"fault: {kind} node {victim}"))
        if kind == "partition":
            cluster.partition([victim], [d for d in cluster.nodes if d != victim])
            if size == 2 and c.two_node_cut_hides_reference:
                cluster.reference_ok[victim] = False
            if cluster.witness is not None:
                cluster.witness_reachable[victim] = rng.random() < 0.5
        else:
            getattr(cluster, kind)(victim)
        cluster.call_at(cluster.now + rng.randrange(300 * MS, 1500 * MS),
                        lambda: undo(victim, kind))

    def undo(victim: int, kind: str) -> None:
        if kind == "partition":
            cluster.heal()
            if size == 2:
                cluster.reference_ok[victim] = True
                cluster.witness_reachable[victim] = True
        elif cluster.nodes[victim].alive:  # a stopping daemon stalled before it left
            cluster.call_at(cluster.now + 100 * MS, lambda: undo(victim, kind))
            return
        for domain, node in cluster.nodes.items():  # the node undone, and any node fenced
            if not node.alive:
                cluster.boot(domain)
                holders.start(domain)
        events.append((cluster.now, f"fault undone: node {victim} back"))
        at = cluster.now + rng.randrange(100 * MS, 500 * MS)
        if at < c.duration_ns - 300 * MS:
            cluster.call_at(at, fault)

    for domain in cluster.nodes:
        cluster.call_at(int(rng.expovariate(c.stalls_per_s) * SEC),
                        functools.partial(stall, domain))
    if c.faults:
        cluster.call_at(c.quiet_ns + rng.randrange(0, 300 * MS), fault)
    cluster.run(c.duration_ns)
    records = cluster.records
    overlaps = find_overlaps(records, until=cluster.now)
    return RunResult(
        seed, size, check_history(records, until=cluster.now), overlaps,
        [_timeline(cluster, overlap, events) for overlap in overlaps],
        sum(r.kind == "granted" for r in records),
        sum(r.kind == "lost" and r.time < c.quiet_ns for r in records), c.quiet_ns,
        len(cluster.stall_log), [f"{_ms(at)} ms: {text}" for at, text in events
                                 if text.startswith("fault")],
        max(n.node.highest_term for n in cluster.nodes.values()),
        time.perf_counter() - started)


def _timeline(cluster: SimCluster, overlap: Overlap, happened: list[tuple[int, str]]) -> str:
    """What happened around an overlap: both sessions' records of the lock, stalls (every stall
    of their nodes, the longer ones of the others), faults and authority changes."""
    first, second = overlap.first, overlap.second
    since = max(first.granted, overlap.start - 2 * cluster.timing.hold_lease_ns) - 50 * MS
    until = overlap.end + 30 * MS
    events = [(at, text) for at, text in happened if since <= at <= until]
    events += [(at, f"node {domain}: {line}") for at, domain, line in cluster.node_log
               if since <= at <= until and "authority" in line]
    events += [(at, f"node {by}: fence of node {target} {'done' if ok else 'failed'}")
               for at, by, target, ok in cluster.fence_log if since <= at <= until]
    for record in cluster.records:
        if record.session in (first.session, second.session) and since <= record.time <= until \
                and record.kind not in ("opened", "queued") and \
                (record.name is None or record.name == overlap.name):
            extra = f" token {record.token}" if record.token else ""
            extra += f" valid until {_ms(record.valid_until)}" if record.valid_until else ""
            extra += f" reaction {record.reaction / MS:.1f} ms" if record.reaction else ""
            events.append((record.time, f"node {record.domain} session {record.session:x} "
                                        f"{record.kind}{extra}"))
    for domain, start, end, before_send in cluster.stall_log:
        if start <= until and end >= since and (domain in (first.domain, second.domain) or
                                                end - start >= 10 * MS):
            kind = "stall before send" if before_send else "stall"
            events.append((start, f"node {domain} {kind} {(end - start) / MS:.1f} ms "
                                  f"(until {_ms(end)})"))
    lines = [overlap.describe()]
    lines += [f"  {_ms(at):>10} {text}" for at, text in sorted(events, key=lambda e: e[0])]
    return "\n".join(lines)


def timing_from_text(text: str) -> Timing:
    """A Timing from "field=value,..." (a Timing field, `_ns` optional; a value in ns or with a
    us/ms/s suffix), e.g. "beat=20ms,idle_beat=50ms,vote_lease=400ms,hold_lease=600ms"; the
    defaults for what is not given."""
    names = {f.name for f in dataclasses.fields(Timing)}
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = (s.strip() for s in part.partition("="))
        if key not in names and f"{key}_ns" in names:
            key = f"{key}_ns"
        if key not in names:
            raise ValueError(f"no Timing field {key!r} (fields: {', '.join(sorted(names))})")
        for suffix, unit in (("ns", 1), ("us", US), ("ms", MS), ("s", SEC)):
            if value.endswith(suffix):
                values[key] = int(float(value[:-len(suffix)]) * unit)
                break
        else:
            values[key] = int(value)
    return Timing(**values)


def timing_from_env() -> Timing:
    """The Timing named in $SKYGE_LOCK_SIM_TIMING, else the defaults."""
    return timing_from_text(os.environ.get(TIMING_ENV, ""))


def summarize(results: list[RunResult]) -> str:
    """One line per cluster size: seeds, failures, overlaps, grants, spurious Lost, time."""
    lines = []
    for size in sorted({r.size for r in results}):
        runs = [r for r in results if r.size == size]
        failed = [r for r in runs if r.problems]
        lengths = [o.length / MS for r in runs for o in r.overlaps]
        quiet_min = sum(r.quiet_ns for r in runs) / (60 * SEC)
        lost = sum(r.quiet_lost for r in runs)
        line = (f"{size} nodes: {len(runs)} seeds, {len(failed)} failed"
                + (f" (seeds {', '.join(str(r.seed) for r in failed)})" if failed else "")
                + f"; {len(lengths)} overlaps"
                + (f" of {min(lengths):.1f}-{max(lengths):.1f} ms" if lengths else "")
                + f"; {sum(r.grants for r in runs)} grants; spurious Lost "
                f"{lost / quiet_min:.1f}/min ({lost} in {quiet_min:.1f} quiet min); highest term "
                f"{max(r.highest_term for r in runs)}; {sum(r.wall_s for r in runs):.1f} s")
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skyge.services.lock.sim",
        description="Randomized ownership check of the lock protocol on simulated clusters "
                    "(stalls, long-tailed delays, clock drift, holder reaction time, faults); "
                    "exits 1 when any history has two owners of a lock at once, or a token "
                    "that does not increase.")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per cluster size")
    parser.add_argument("--first", type=int, default=1, help="first seed")
    parser.add_argument("--size", type=int, nargs="+", default=[3], help="cluster sizes")
    parser.add_argument("--timing", default=os.environ.get(TIMING_ENV, ""),
                        help=f"Timing fields, e.g. beat=20ms,hold_lease=600ms (default: "
                             f"${TIMING_ENV}, else Timing())")
    parser.add_argument("--duration", type=float, default=Conditions.duration_ns / SEC,
                        help="simulated seconds per seed")
    parser.add_argument("--quiet", type=float, default=Conditions.quiet_ns / SEC,
                        help="simulated seconds without faults or stalls over 200 ms first")
    parser.add_argument("--no-faults", action="store_true",
                        help="stalls, delays and drift only (no crash, partition, kill, stop)")
    parser.add_argument("--long-stalls", type=float, nargs=3, metavar=("SHARE", "MIN_MS", "MAX_MS"),
                        help="share and length of the long stalls after the quiet part "
                             "(default 0.005 200 500)")
    parser.add_argument("--fencing", action="store_true",
                        help="every node has a fence command (it powers its target off)")
    parser.add_argument("--witness", action="store_true",
                        help="two nodes: a witness arbitrates a cut (both reach the reference "
                             "IP; the cut-off node reaches the witness half of the time)")
    parser.add_argument("--rate-error-ppm", type=int,
                        help="bound on each clock's rate error (default: drift_ppm / 2)")
    parser.add_argument("--timelines", type=int, default=3,
                        help="timelines of overlaps to print (per size)")
    args = parser.parse_args(argv)
    timing = timing_from_text(args.timing)
    conditions = Conditions(duration_ns=int(args.duration * SEC), quiet_ns=int(args.quiet * SEC),
                            faults=not args.no_faults, rate_error_ppm=args.rate_error_ppm,
                            fencing=args.fencing, witness=args.witness,
                            two_node_cut_hides_reference=not args.witness)
    if args.long_stalls:
        share, low, high = args.long_stalls
        conditions = dataclasses.replace(conditions, long_stall_share=share,
                                         long_stall_ns=(int(low * MS), int(high * MS)))
    print(f"conditions: {conditions}")
    print(f"timing: {timing}")
    results = []
    for size in args.size:
        shown = 0
        for seed in range(args.first, args.first + args.seeds):
            result = ownership_run(seed, size, timing=timing, conditions=conditions)
            results.append(result)
            described = {overlap.describe() for overlap in result.overlaps}
            for text in result.problems:
                if text not in described:  # tokens
                    print(f"seed {seed}, {size} nodes: {text}")
            for text in result.timelines[:max(0, args.timelines - shown)]:
                print(f"seed {seed}, {size} nodes: {text}")
                shown += 1
    print(summarize(results))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
