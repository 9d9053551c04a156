"""Latency and throughput of skyge-lock on a 3-node lab.

    python -m bench.lock_latency [--pairs 2000] [--handoffs 300] [--crashes 5] [--seconds 5]
    python -m bench.lock_latency --backend etcd|both   # locks in etcd; both: side by side

Measured from this process (clients on the nodes' Unix sockets, grpc.aio, one machine clock):

- local: acquire+release pairs of one session on the authority's node, uncontended: from
  sending Acquire to receiving Released (p50/p99 over `--pairs`);
- remote: the same from a node that is not the authority;
- handoff: a waiter (queued about 1 ms before) on one non-authority node, the holder on the other;
  from the holder sending Release to the waiter receiving Granted (p50/p99 over `--handoffs`);
- crash_regrant: the holder's node (not the authority) is crashed (`LabNode.crash`); from just
  before the crash to the waiter (on the third node) receiving Granted; `crash_detect_p50_ms` is
  the heartbeat's detection of the same crash on the waiter's node, for comparison, and
  `crash_regrant_minus_detect_p50_ms` the median of (regrant - detection) per crash;
- authority_crash_regrant: the same with the holder on the authority's node;
- contended_handoff: `--contended-clients` sessions over the three nodes loop on one lock
  (acquire, release at once); each hand-off from the holder sending Release to the next one
  receiving Granted (p50/p99);
- pairs_per_s: `--procs` client processes per node, each with `--sessions` sessions looping
  acquire+release on their own locks for `--seconds`; all pairs / elapsed;
- local_pairs_per_s: the same clients all on the authority's node (no pair crosses the network
  between lock daemons): what the daemon costs beside gRPC, without the peer hop;
- grpc_echo_floor_pairs_per_s: the same clients against a gRPC server that only echoes (no lock
  logic, no peers) on this machine: what Python gRPC alone allows here, for scale.

`--backend etcd`: the lock daemons keep the locks in an etcd of one member per node
(`skyge.clients.lab.etcd`), and "the authority" above is the node whose etcd member leads (found
with `etcdctl endpoint status`): local pairs there, remote ones elsewhere, authority crashes crash
it (an etcd election then comes before any lock passes on). A crashed node boots with its etcd
member. `--backend both` runs the built-in backend, then etcd, and prints both sets of keys,
under "builtin" and "etcd".
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import time
from typing import Any

import grpc

from skyge.clients.lab import Lab
from skyge.clients.lab.daemons import start_daemons
from skyge.clients.lab.etcd import leader, members_of, start_member
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_pb2_grpc
from tests.cluster import heartbeat_support as hs
from tests.cluster import lock_support as ls

from bench._common import lab_name, note, percentile, result, rounded

MS = 1e6
LOSSES: list[str] = []  # pairs that ended in lost/failed (not timed)


class AioSession:
    """A lock session over grpc.aio with a background reader."""

    def __init__(self, target: str, label: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.call = lock_pb2_grpc.LockStub(self.channel).Session()
        self.label = label
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.call.write(lp.SessionRequest(open=lp.Open(label=self.label)))
        event = await self.call.read()
        assert event.WhichOneof("event") == "opened", event
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                event = await self.call.read()
                if event is grpc.aio.EOF:
                    break
                self.queue.put_nowait((time.monotonic_ns(), event))
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass

    async def next(self, kind: str, timeout: float = 10.0) -> int:
        """Receipt time of the next event of `kind` (other kinds before it are skipped)."""
        while True:
            stamp, event = await asyncio.wait_for(self.queue.get(), timeout)
            found = event.WhichOneof("event")
            if found == kind:
                return stamp
            if found in ("failed", "lost"):
                raise RuntimeError(f"{self.label}: {found} while waiting for {kind}: {event}")

    async def send(self, **kwargs: Any) -> int:
        now = time.monotonic_ns()
        await self.call.write(lp.SessionRequest(**kwargs))
        return now

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        if self.reader:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        await self.channel.close()


async def pair_latency(target: str, pairs: int, slot: int = 600) -> list[float]:
    session = AioSession(target, "bench-pairs")
    await session.open()
    samples = []
    try:
        for i in range(pairs + 50):
            lock = i % 8192
            start = await session.send(acquire=lp.Acquire(slot=slot, lock=lock))
            try:
                await session.next("granted")
                await session.send(release=lp.Release(slot=slot, lock=lock))
                end = await session.next("released")
            except RuntimeError as error:  # lost or failed: counted, not timed
                LOSSES.append(str(error).splitlines()[0])
                await session.send(release=lp.Release(slot=slot, lock=lock))
                continue
            if i >= 50:  # warm-up
                samples.append((end - start) / MS)
    finally:
        await session.close()
    return samples


async def handoffs(target_a: str, target_b: str, count: int) -> list[float]:
    a, b = AioSession(target_a, "bench-a"), AioSession(target_b, "bench-b")
    await a.open()
    await b.open()
    samples = []
    name = {"slot": 600, "lock": 4000}
    try:
        await a.send(acquire=lp.Acquire(**name))
        await a.next("granted")
        holder, waiter = a, b
        for _ in range(count):
            await waiter.send(acquire=lp.Acquire(**name))
            await waiter.next("queued")
            await asyncio.sleep(0.001)
            released = await holder.send(release=lp.Release(**name))
            granted = await waiter.next("granted")
            await holder.next("released")
            samples.append((granted - released) / MS)
            holder, waiter = waiter, holder
    finally:
        await a.close()
        await b.close()
    return samples


async def contended(targets: list[str], clients: int, seconds: float) -> list[float]:
    """`clients` sessions spread over the nodes loop on one lock: each hand-off is timed from
    the holder sending Release to the next holder receiving Granted (one process, one clock)."""
    name = {"slot": 710, "lock": 0}
    sessions = [AioSession(targets[i % len(targets)], f"bench-contended-{i}")
                for i in range(clients)]
    await asyncio.gather(*(session.open() for session in sessions))
    released_at: list[int] = []  # when the last holder sent its Release
    samples: list[float] = []
    stop_at = time.monotonic() + seconds

    async def loop(session: AioSession) -> None:
        while time.monotonic() < stop_at:
            await session.send(acquire=lp.Acquire(**name))
            try:
                granted = await session.next("granted", timeout=seconds + 30)
            except RuntimeError as error:
                LOSSES.append(str(error).splitlines()[0])
                return
            if released_at:
                samples.append((granted - released_at[-1]) / MS)
            released_at.append(await session.send(release=lp.Release(**name)))
            await session.next("released")

    try:
        await asyncio.gather(*(loop(session) for session in sessions))
    finally:
        await asyncio.gather(*(session.close() for session in sessions))
    return samples


def _throughput_worker(targets: list[str], sessions: int, seconds: float, base: int,
                       out: Any) -> None:
    async def loop(target: str, index: int, stop_at: float) -> int:
        session = AioSession(target, f"tp{base + index}")
        await session.open()
        done = 0
        lock = (base + index) % 8192
        try:
            while time.monotonic() < stop_at:
                await session.send(acquire=lp.Acquire(slot=700, lock=lock))
                try:
                    await session.next("granted")
                    await session.send(release=lp.Release(slot=700, lock=lock))
                    await session.next("released")
                except RuntimeError:  # lost or failed (overload): not counted, go on
                    await session.send(release=lp.Release(slot=700, lock=lock))
                    await asyncio.sleep(0.01)
                    while not session.queue.empty():
                        session.queue.get_nowait()
                    continue
                done += 1
        finally:
            await session.close()
        return done

    async def main() -> int:
        stop_at = time.monotonic() + seconds
        counts = await asyncio.gather(*(loop(targets[i % len(targets)], i, stop_at)
                                        for i in range(sessions)))
        return sum(counts)

    out.put(asyncio.run(main()))


def throughput(nodes: list[Any], procs: int, sessions: int, seconds: float) -> float:
    """Pairs/s of `procs` client processes per node of `nodes`, `sessions` sessions each."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = []
    for index, node in enumerate(nodes):
        for p in range(procs):
            base = (index * procs + p) * sessions
            worker = context.Process(target=_throughput_worker,
                                     args=([ls.target(node)], sessions, seconds, base, out))
            workers.append(worker)
    start = time.monotonic()
    for worker in workers:
        worker.start()
    total = sum(out.get(timeout=seconds + 60) for _ in workers)
    elapsed = time.monotonic() - start
    for worker in workers:
        worker.join(10)
    # processes start and connect within `elapsed` too; count over the loop time
    return total / seconds if elapsed > 0 else 0.0


class _Echo(lock_pb2_grpc.LockServicer):
    async def Session(self, request_iterator: Any, context: Any) -> Any:
        async for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "open":
                yield lp.SessionEvent(opened=lp.Opened(session_id=1))
            elif kind == "acquire":
                yield lp.SessionEvent(granted=lp.Granted(slot=request.acquire.slot,
                                                         lock=request.acquire.lock,
                                                         fencing_token=1))
            else:
                yield lp.SessionEvent(released=lp.Released(slot=request.release.slot,
                                                           lock=request.release.lock))


def _echo_server(path: str, seconds: float) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        lock_pb2_grpc.add_LockServicer_to_server(_Echo(), server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        await asyncio.sleep(seconds)
        await server.stop(0)

    asyncio.run(main())


def grpc_floor(procs: int, sessions: int, seconds: float) -> float:
    """Pairs/s of the same client load against an echo server (separate process)."""
    import tempfile
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="lkb") as folder:
        path = os.path.join(folder, "echo.sock")
        server = context.Process(target=_echo_server, args=(path, seconds + 30))
        server.start()
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        out = context.Queue()
        workers = [context.Process(target=_throughput_worker,
                                   args=([f"unix:{path}"], sessions, seconds, i * sessions, out))
                   for i in range(procs)]
        for worker in workers:
            worker.start()
        total = sum(out.get(timeout=seconds + 60) for _ in workers)
        for worker in workers:
            worker.join(10)
        server.terminate()
        server.join(10)
    return total / seconds


def restart(node: Any, backend: str) -> None:
    node.boot()
    if backend == "etcd":
        start_member(node, members_of(node.lab))
    hs.start(node)
    start_daemons(node, ["lock"], extra_args=("-l", "LOG_INFO"))


def authority_of(lab: Lab, backend: str) -> Any:
    """The node deciding grants: the built-in authority, or the node of etcd's leader."""
    if backend == "etcd":
        ls.wait_etcd_ready(lab.nodes)
        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            found = leader(lab.nodes)
            if found is None:
                time.sleep(0.1)
        if found is None:
            raise RuntimeError("the lab etcd has no leader after 30 s")
        return found
    return lab.nodes[ls.wait_ready(lab.nodes) - 1]


async def crash_once(lab: Lab, victim: Any, waiter_node: Any) -> tuple[float, float | None]:
    holder = AioSession(ls.target(victim), "bench-crash-holder")
    waiter = AioSession(ls.target(waiter_node), "bench-crash-waiter")
    await holder.open()
    await waiter.open()
    name = {"slot": 800, "lock": victim.id}
    await holder.send(acquire=lp.Acquire(**name))
    await holder.next("granted")
    await waiter.send(acquire=lp.Acquire(**name))
    await waiter.next("queued")
    watch = hs.Watch(waiter_node)
    await asyncio.sleep(0.3)
    crashed_wall = time.time_ns()
    crashed = time.monotonic_ns()
    await asyncio.get_running_loop().run_in_executor(None, victim.crash)
    granted = await waiter.next("granted", timeout=10)
    detect = None
    try:
        seen = await asyncio.get_running_loop().run_in_executor(
            None, lambda: watch.wait("left", victim.id, after_ns=crashed_wall - 10**9, timeout=5))
        detect = (seen.time_unix_ns - crashed_wall) / MS
    except AssertionError:
        pass
    watch.close()
    await waiter.close()
    await holder.close()
    return (granted - crashed) / MS, detect


def run(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"backend": backend}
    with Lab.up(nodes=3, name=lab_name("lk")) as lab:
        ls.start_cluster(lab, backend=backend)
        authority = authority_of(lab, backend)
        others = [n for n in lab.nodes if n is not authority]
        note(f"authority: {authority.key}")
        local = asyncio.run(pair_latency(ls.target(authority), args.pairs))
        note(f"local pairs: p50 {percentile(local, 50):.3f} ms p99 {percentile(local, 99):.3f} ms")
        remote = asyncio.run(pair_latency(ls.target(others[0]), args.pairs))
        note(f"remote pairs: p50 {percentile(remote, 50):.3f} ms "
             f"p99 {percentile(remote, 99):.3f} ms")
        hand = asyncio.run(handoffs(ls.target(others[0]), ls.target(others[1]), args.handoffs))
        note(f"handoff: p50 {percentile(hand, 50):.3f} ms p99 {percentile(hand, 99):.3f} ms")
        contention = asyncio.run(contended([ls.target(n) for n in lab.nodes],
                                           args.contended_clients, args.contended_seconds))
        note(f"contended ({args.contended_clients} sessions on 3 nodes, one lock): "
             f"{len(contention)} hand-offs, p50 {percentile(contention, 50):.3f} ms p99 "
             f"{percentile(contention, 99):.3f} ms")
        rate = throughput(lab.nodes, args.procs, args.sessions, args.seconds)
        note(f"throughput: {rate:.0f} pairs/s")
        local_rate = throughput([authority], 3 * args.procs, args.sessions, args.seconds)
        note(f"throughput, every client on the authority's node: {local_rate:.0f} pairs/s")
        floor = grpc_floor(3 * args.procs, args.sessions, args.seconds)
        note(f"gRPC echo floor, same clients: {floor:.0f} pairs/s")
        regrants, detects, authority_regrants, beyond = [], [], [], []
        for trial in range(args.crashes):
            authority = authority_of(lab, backend)
            others = [n for n in lab.nodes if n is not authority]
            victim, waiter = others[trial % 2], others[(trial + 1) % 2]
            regrant, detect = asyncio.run(crash_once(lab, victim, waiter))
            regrants.append(regrant)
            if detect is not None:
                detects.append(detect)
                beyond.append(regrant - detect)
            note(f"crash {trial + 1}/{args.crashes}: {victim.key} crashed, lock regranted on "
                 f"{waiter.key} after {regrant:.1f} ms (heartbeat detection "
                 f"{detect if detect is None else round(detect, 1)} ms)")
            restart(victim, backend)
        for trial in range(args.authority_crashes):
            authority = authority_of(lab, backend)
            waiter = [n for n in lab.nodes if n is not authority][trial % 2]
            regrant, _ = asyncio.run(crash_once(lab, authority, waiter))
            authority_regrants.append(regrant)
            note(f"authority crash {trial + 1}/{args.authority_crashes}: {authority.key}, lock "
                 f"regranted on {waiter.key} after {regrant:.1f} ms")
            restart(authority, backend)
    figures.update(
        local_p50_ms=rounded(percentile(local, 50), 3),
        local_p99_ms=rounded(percentile(local, 99), 3),
        remote_p50_ms=rounded(percentile(remote, 50), 3),
        remote_p99_ms=rounded(percentile(remote, 99), 3),
        handoff_p50_ms=rounded(percentile(hand, 50), 3),
        handoff_p99_ms=rounded(percentile(hand, 99), 3),
        contended_handoff_p50_ms=rounded(percentile(contention, 50), 3),
        contended_handoff_p99_ms=rounded(percentile(contention, 99), 3),
        contended_handoffs=len(contention), contended_clients=args.contended_clients,
        crash_regrant_p50_ms=rounded(percentile(regrants, 50), 1),
        crash_regrant_max_ms=rounded(max(regrants) if regrants else None, 1),
        crash_detect_p50_ms=rounded(percentile(detects, 50), 1),
        crash_regrant_minus_detect_p50_ms=rounded(percentile(beyond, 50), 1),
        authority_crash_regrant_p50_ms=rounded(percentile(authority_regrants, 50), 1),
        pairs_per_s=round(rate), grpc_echo_floor_pairs_per_s=round(floor),
        local_pairs_per_s=round(local_rate),
        pairs=args.pairs, handoffs=args.handoffs, crashes=args.crashes,
        untimed_lost_or_failed=len(LOSSES),
        client_sessions=3 * args.procs * args.sessions,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--handoffs", type=int, default=300)
    parser.add_argument("--crashes", type=int, default=5)
    parser.add_argument("--authority-crashes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=1, help="client processes per node")
    parser.add_argument("--sessions", type=int, default=8, help="sessions per client process")
    parser.add_argument("--contended-clients", type=int, default=64,
                        help="sessions (over the 3 nodes) looping on one lock (default 64)")
    parser.add_argument("--contended-seconds", type=float, default=3.0)
    parser.add_argument("--backend", choices=("builtin", "etcd", "both"), default="builtin",
                        help="what grants the locks (default: builtin); both: one run each")
    args = parser.parse_args()
    for name in ("pairs", "handoffs", "crashes", "procs", "sessions"):
        if not 0 <= getattr(args, name) <= 100_000:
            parser.error(f"--{name}: out of range")
    if not 0.5 <= args.seconds <= 120:
        parser.error("--seconds: 0.5 to 120")
    if args.backend == "both":
        result({backend: run(args, backend) for backend in ("builtin", "etcd")})
    else:
        result(run(args, args.backend))


if __name__ == "__main__":
    main()
