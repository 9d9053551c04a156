"""A deterministic simulation of a lock cluster: real `Node`s and `Links`, a virtual network.

For the unit tests (tests/unit/test_lock_*.py): views, delays, losses, partitions, asymmetric
views, crashes, restarts, clean stops and killed lock daemons are all under the test's control,
and every session event is recorded with its virtual time, so `check_history` can verify that no
lock ever had two holders, tokens increased, and no waiter starved. Datagrams are serialized and
parsed as on the wire. With `fencing`, every node has a fence command: it takes `fence_ns` and
succeeds when `fence_ok(node)` says so; each run is logged in `fence_log`.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Callable, Iterable

from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

from .authority import MS, MemoryStore, Node, Timing
from .core import Name
from .links import Links

__all__ = ["SimCluster", "SimNode", "Record", "check_history"]


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
    """A session event as the client saw it."""

    time: int
    domain: int
    session: int
    kind: str  # granted, queued, failed, released, lost, opened, ended, orphaned, adopted
    name: Name | None = None
    token: int = 0
    reason: int = 0


class SimCluster:
    """N nodes on a virtual network; time advances only through `run`."""

    def __init__(self, size: int, *, seed: int = 1, latency_ns: int = 150_000,
                 jitter_ns: int = 100_000, expected: int | None = None,
                 timing: Timing | None = None, detect_ns: int = 25 * MS, netid: int = 1,
                 fencing: bool = False, fence_ns: int = 5 * MS) -> None:
        self.rng = random.Random(seed)
        self.now = 0
        self.latency, self.jitter, self.detect = latency_ns, jitter_ns, detect_ns
        self.timing = timing or Timing()
        self.expected = expected if expected is not None else size
        self.netid = netid
        self.nodes: dict[int, SimNode] = {}
        self.queue: list[tuple[int, int, int, int, bytes]] = []
        self._counter = 0
        self.blocked: set[tuple[int, int]] = set()
        self.loss = 0.0
        self.records: list[Record] = []
        self.session_node: dict[int, int] = {}
        self.handlers: list[Callable[[Record], None]] = []
        self.view_changes: list[tuple[int, int, frozenset[int]]] = []  # (time, domain, view)
        self.reference_ok: dict[int, bool] = {}
        self.leader_log: list[tuple[int, int, lp.LeaderEvent]] = []
        self.stalled_until: dict[int, int] = {}
        self.orphans: set[int] = set()  # sessions kept without a client (Open.keep_holds)
        self.fencing, self.fence_ns = fencing, fence_ns
        self.fence_ok: Callable[[int], bool] = lambda domain: True
        self.fence_log: list[tuple[int, int, int, bool]] = []  # (done at, by node, fenced, ok)
        self._fences: list[tuple[int, int, int, int]] = []  # heap of (done at, n, by, target)
        self._leaving: dict[int, int] = {}  # stopping node -> when it sends its last beat
        for domain in range(1, size + 1):
            self._boot(domain, MemoryStore(), 1)
        for domain in self.nodes:
            self.set_view(domain, set(self.nodes), at=0)

    # -- nodes ----------------------------------------------------------------------------------
    def _boot(self, domain: int, store: MemoryStore, instance: int) -> SimNode:
        node = Node(domain, instance, netid=self.netid, timing=self.timing, store=store,
                    expected_nodes=self.expected, now_ns=self.now,
                    rng=random.Random(self.rng.random()), wall_ns=lambda: self.now)
        node.fencing = self.fencing
        sim = SimNode(domain, store, instance, node, Links(node))
        self.nodes[domain] = sim
        return sim

    def node(self, domain: int) -> Node:
        return self.nodes[domain].node

    def set_view(self, domain: int, view: Iterable[int] | None, at: int | None = None) -> None:
        """Node `domain` sees `view` from time `at` (default now)."""
        when = self.now if at is None else at
        frozen = frozenset(view) if view is not None else None
        self.view_changes.append((when, domain, frozen))  # type: ignore[arg-type]
        self.view_changes.sort(key=lambda v: v[0])

    def crash(self, domain: int) -> None:
        """Power off: the node stops; its sessions' clients die with it."""
        self.kill(domain)
        for other in self.nodes:
            if other != domain and self.nodes[other].alive:
                view = set(self._current_view(other) or ()) - {domain}
                self.set_view(other, view, at=self.now + self.detect)

    def kill(self, domain: int) -> None:
        """The node's lock daemon dies at once (kill -9), its sessions with it; its heartbeat
        daemon runs on, so no view changes (`crash` is the whole node)."""
        self.nodes[domain].alive = False
        self._leaving.pop(domain, None)
        for session, where in self.session_node.items():
            if where == domain:
                self._record(Record(self.now, domain, session, "ended"))

    def stop(self, domain: int) -> None:
        """A clean stop of the node's lock daemon (SIGTERM): its sessions are told they lost
        everything; `early_ns` later when they held locks (at once otherwise) its last beat says
        it leaves, and it is gone. Its heartbeat daemon runs on: no view changes."""
        sim = self.nodes[domain]
        held = sim.node.stop_sessions(self.now)
        self._after(domain)
        self._leaving[domain] = self.now + (self.timing.early_ns if held else 0)

    def boot(self, domain: int) -> None:
        """Start a crashed node again (same persisted state, next instance)."""
        old = self.nodes[domain]
        sim = self._boot(domain, old.store, old.instance + 1)
        alive = {d for d, n in self.nodes.items() if n.alive}
        for other in alive:
            self.set_view(other, alive, at=self.now + self.detect)
        _ = sim

    def _current_view(self, domain: int) -> frozenset[int] | None:
        view = self.nodes[domain].node.view
        return frozenset(view) if view is not None else None

    def stall(self, domain: int, duration_ns: int) -> None:
        """The node's daemon stops for a while (SIGSTOP, a long GC, a starved CPU): datagrams
        wait in its socket, timers fire late."""
        self.stalled_until[domain] = self.now + duration_ns

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

    # -- sessions -------------------------------------------------------------------------------
    def open(self, domain: int, label: str = "", *, keep_holds: bool = False) -> int:
        """A client opens a session; with `keep_holds` it may continue an orphaned one (each
        adopted hold is recorded as "adopted")."""
        sim = self.nodes[domain]
        sim.sessions += 1
        fresh = (domain << 56) | (sim.instance << 32) | sim.sessions
        session, adopted = sim.node.open_session(fresh, label or f"s{fresh & 0xffff}@{domain}", 0,
                                                 self.now, keep_holds=keep_holds)
        self.session_node[session] = domain
        self.orphans.discard(session)
        self._record(Record(self.now, domain, session, "opened"))
        for name, token in adopted:
            self._record(Record(self.now, domain, session, "adopted", name, token))
        self._after(domain)
        return session

    def acquire(self, session: int, name: Name, **kwargs: object) -> None:
        domain = self.session_node[session]
        if not self.nodes[domain].alive:
            return
        self.nodes[domain].node.acquire(session, name, self.now, **kwargs)  # type: ignore[arg-type]
        self._after(domain)

    def release(self, session: int, name: Name) -> None:
        domain = self.session_node[session]
        if not self.nodes[domain].alive:
            return
        self._record(Record(self.now, domain, session, "releasing", name))
        self.nodes[domain].node.release(session, name, self.now)
        self._after(domain)

    def close(self, session: int) -> None:
        """The client's stream ends (it closed it, or died): recorded as "ended", or as
        "orphaned" when the node keeps its holds."""
        domain = self.session_node[session]
        if not self.nodes[domain].alive:
            return
        node = self.nodes[domain].node
        node.close_session(session, self.now)
        if session in node.member.orphaned_sessions():
            self.orphans.add(session)
            self._record(Record(self.now, domain, session, "orphaned"))
        else:
            self._record(Record(self.now, domain, session, "ended"))
        self._after(domain)

    def _record(self, record: Record) -> None:
        self.records.append(record)
        for handler in list(self.handlers):
            handler(record)

    # -- engine ---------------------------------------------------------------------------------
    def _after(self, domain: int) -> None:
        """Collect a node's outputs: datagrams onto the network, events into the records."""
        sim = self.nodes[domain]
        node = sim.node
        events, node.events = node.events, []
        for session, event in events:
            if self.session_node.get(session) != domain:
                continue
            kind = event.WhichOneof("event")
            body = getattr(event, kind)
            name = (body.slot, body.lock) if hasattr(body, "slot") else None
            self._record(Record(self.now, domain, session, kind, name,
                                getattr(body, "fencing_token", 0), getattr(body, "reason", 0)))
        leaders, node.leader_events = node.leader_events, []
        for watcher, event in leaders:
            self.leader_log.append((self.now, watcher, event))
        for session in [s for s in self.orphans if self.session_node[s] == domain and
                        s not in node.member.sessions]:
            self.orphans.discard(session)  # its last hold ended (nobody to tell)
            self._record(Record(self.now, domain, session, "ended"))
        fences, node.fence_requests = node.fence_requests, []
        for target in fences:
            self._counter += 1
            heapq.heappush(self._fences, (self.now + self.fence_ns, self._counter, domain, target))
        for outgoing in sim.links.flush(self.now):
            data = outgoing.datagram.SerializeToString()
            for path in (1, 2) if outgoing.all_paths else (1,):
                self._send(domain, outgoing.domain, data, path)

    def _send(self, src: int, dst: int, data: bytes, path: int) -> None:
        if (src, dst) in self.blocked or dst not in self.nodes:
            return
        if self.loss and self.rng.random() < self.loss:
            return
        delay = self.latency + int(self.rng.random() * self.jitter)
        self._counter += 1
        heapq.heappush(self.queue, (self.now + delay, self._counter, src, dst, data))

    def _next_time(self) -> int:
        times = []
        if self.queue:
            times.append(self.queue[0][0])
        for domain, sim in self.nodes.items():
            if sim.alive and self._stalled(domain):
                times.append(self.stalled_until[domain])
            elif sim.alive:
                times.append(sim.node.next_wakeup())
                deadline = sim.links.deadline()
                if deadline is not None:
                    times.append(deadline)
        pending = [v[0] for v in self.view_changes if v[0] >= 0]
        if pending:
            times.append(min(pending))
        if self._fences:
            times.append(self._fences[0][0])
        times += self._leaving.values()
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
            while self.view_changes and self.view_changes[0][0] <= self.now:
                _, domain, view = self.view_changes.pop(0)
                sim = self.nodes[domain]
                if sim.alive and self._stalled(domain):
                    self.view_changes.insert(0, (self.stalled_until[domain], domain, view))
                    self.view_changes.sort(key=lambda v: v[0])
                    break
                if sim.alive:
                    sim.node.on_view(view, self.now)
                    self._lone_check(sim)
                    self._after(domain)
            for domain, at in sorted(self._leaving.items()):
                if at <= self.now:
                    self.nodes[domain].node.leave(self.now)
                    self._after(domain)
                    self.kill(domain)
            while self._fences and self._fences[0][0] <= self.now:
                _, _, by, target = heapq.heappop(self._fences)
                ok = self.fence_ok(target)
                self.fence_log.append((self.now, by, target, ok))
                if self.nodes[by].alive:
                    self.nodes[by].node.fence_done(target, ok, self.now)
                    self._after(by)
            while self.queue and self.queue[0][0] <= self.now:
                _, counter, src, dst, data = heapq.heappop(self.queue)
                sim = self.nodes[dst]
                if not sim.alive or (src, dst) in self.blocked:
                    continue
                if self._stalled(dst):  # waits in the socket buffer
                    heapq.heappush(self.queue, (self.stalled_until[dst], counter, src, dst, data))
                    continue
                sim.links.receive(pp.PeerDatagram.FromString(data), self.now)
                self._after(dst)
            for domain, sim in self.nodes.items():
                if not sim.alive or self._stalled(domain):
                    continue
                deadline = sim.links.deadline()
                if sim.node.next_wakeup() <= self.now or (deadline is not None and
                                                          deadline <= self.now):
                    self._lone_check(sim)
                    sim.node.tick(self.now)
                    self._after(domain)

    def _lone_check(self, sim: SimNode) -> None:
        node = sim.node
        node.lone_possible = sim.domain in self.reference_ok
        if node.lone(self.now) and self.reference_ok.get(sim.domain, False):
            node.set_lone_ok(self.now + 500 * MS, self.now)
        elif node.lone(self.now):
            node.set_lone_ok(0, self.now)

    # -- queries --------------------------------------------------------------------------------
    def authorities(self) -> list[int]:
        return [d for d, s in self.nodes.items() if s.alive and s.node.established and
                self.now < s.node.lease_end]

    def active_authority(self) -> int | None:
        for domain in self.authorities():
            auth = self.nodes[domain].node.auth
            if auth is not None and auth.active:
                return domain
        return None

    def of(self, session: int, kind: str | None = None) -> list[Record]:
        return [r for r in self.records if r.session == session and (kind is None or r.kind == kind)]


def check_history(records: list[Record],
                  excused: Iterable[tuple[int, int, int]] = ()) -> list[str]:
    """Problems in a recorded history: two holders at once, tokens not increasing.

    A hold starts at `granted` and ends at the session's `releasing`, `lost` or `ended` (client
    died, or closed) for that lock — whichever comes first. `excused` lists (domain, start, end)
    periods when a node's daemon was frozen: it could not tell its sessions their locks were lost,
    so an overlap with a holder on that node (granted before the freeze ended) is not counted —
    tokens must still increase, which is what fences the stale holder out.
    """
    frozen = list(excused)
    problems: list[str] = []
    holding: dict[Name, tuple[int, int, int]] = {}  # name -> (session, token, since)
    by_session: dict[int, set[Name]] = {}
    last_token: dict[Name, int] = {}
    for record in sorted(records, key=lambda r: r.time):  # stable: causal order within a tick
        if record.kind == "granted" and record.name is not None:
            name = record.name
            current = holding.get(name)
            stale = current is not None and any(
                domain == (current[0] >> 56) and start <= record.time and current[2] <= end
                for domain, start, end in frozen)
            if current is not None and current[0] != record.session and not stale:
                problems.append(f"{name}: session {record.session:x} granted at {record.time} "
                                f"while session {current[0]:x} holds it (since {current[2]})")
            if record.token <= last_token.get(name, 0):
                problems.append(f"{name}: token {record.token} not above {last_token[name]}")
            last_token[name] = max(last_token.get(name, 0), record.token)
            holding[name] = (record.session, record.token, record.time)
            by_session.setdefault(record.session, set()).add(name)
        elif record.kind in ("releasing", "lost") and record.name is not None:
            current = holding.get(record.name)
            if current is not None and current[0] == record.session:
                del holding[record.name]
                by_session.get(record.session, set()).discard(record.name)
        elif record.kind == "ended":
            for name in by_session.pop(record.session, set()):
                current = holding.get(name)
                if current is not None and current[0] == record.session:
                    del holding[name]
    return problems
