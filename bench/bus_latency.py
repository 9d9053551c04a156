"""Bus latency and throughput across three nodes: publisher on n1, bus owned by n2, subscriber
on n3.

    python -m bench.bus_latency [--seconds 3] [--rate 1000] [--sustained-rate 100000]
                                [--sustained-seconds 5] [--burst 300000] [--route both]

A 3-node lab runs skyge-heartbeat and skyge-bus on every node. Two client processes run inside the
nodes (their namespaces), using the client library (skyge.services.bus.client): a subscriber on n3
and a publisher on n1, of the bus `bench.latency` owned by domain 2 (retain_messages 65536).

- Route `direct` (the client library's default): the clients follow the membership and talk to
  the owner's bus daemon over TCP: publisher -> owner -> subscriber, 2 gRPC hops.
  Route `local`: each client talks to its own node's bus daemon over its Unix socket, which
  relays to the owner: 4 gRPC hops (what clients in other languages get without more code).
- Latency: the publisher sends `rate` messages/s of 100 bytes for `seconds` (after 0.5 s of
  warm-up messages, not counted), each going out alone (the Publisher batches only what queues
  up); each message carries its send time (time.time_ns, one clock for the whole machine); the
  subscriber takes receive time minus send time. p50/p99 over all counted messages.
- Sustained throughput: the publisher offers `sustained-rate` messages/s of 100 bytes (default
  100,000/s, twice the target) for `sustained-seconds` (paced in 10 ms ticks; batches of up to
  512 per request, up to 8 requests in flight); the subscriber reads with max_batch 1024.
  msgs_per_s = messages received / (last receive - publisher start); `lost` = messages published
  but not received (the subscriber's `missed` gaps).
- Burst: `burst` messages as fast as the publisher can: burst_msgs_per_s, burst_lost (a
  publisher faster than its subscriber for long enough makes it miss messages: counted, never
  blocking anyone). Then the same burst to a subscriber that asks for flow control
  (SubscribeRequest.flow_control): the publisher is slowed instead, flow_burst_lost must be 0.

nats_p50_ms / nats_msgs_per_s: the same two measurements against a nats-server on loopback
(one hop each way, no lab) when nats-server is installed, else null.

The last line is `RESULT {json}`: remote_p50_ms, remote_p99_ms, msgs_per_s, lost (sustained),
burst_msgs_per_s, burst_lost for the first route (direct by default); `local_*` keys for the
other one with --route both. The machine must be otherwise idle: other labs on its two cores
show up directly in p99 (and can make the heartbeat daemons see peers fail).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUS = "bench.latency"
OWNER = 2
SIZE = 100
PUBLISH_BATCH = 512
WINDOW = 8
SETTLE_S = 1.0
TICK_S = 0.01


WARMUP_S = 0.5


def _tick_messages(rate: float) -> int:
    """Messages per 10 ms tick at `rate` messages/s (at least one)."""
    return max(1, int(rate * TICK_S))


# ---------------------------------------------------------------- client roles (inside nodes)

def _payload(index: int) -> bytes:
    return struct.pack("<qq", time.time_ns(), index).ljust(SIZE, b".")


async def _subscriber(route: str, domain: int, ready: Path, expect: int, timeout: float,
                      warmup: int, flow: bool = False) -> dict[str, Any]:
    """Receive until `expect` messages are received or missed (or `timeout`); `ready` is
    written once the subscription delivers. Returns what was measured."""
    from skyge.services.bus.client import BusClient

    latencies: list[int] = []
    received = missed = 0
    last_seq = 0
    order_errors = 0
    first_recv = last_recv = 0
    sends: list[int] = []
    announced = False
    async with BusClient(direct=route == "direct") as client:
        deadline = time.monotonic() + timeout
        stream = client.subscribe(domain, BUS, max_batch=1024, flow_control=flow)
        try:
            while time.monotonic() < deadline:
                try:
                    delivery = await asyncio.wait_for(stream.__anext__(),
                                                      max(0.01, deadline - time.monotonic()))
                except (TimeoutError, StopAsyncIteration):
                    break
                now = time.time_ns()
                if not announced:
                    await asyncio.to_thread(ready.write_text, "ready")
                    announced = True
                missed += delivery.missed
                gap = delivery.missed
                for message in delivery.messages:
                    if last_seq and message.sequence != last_seq + 1 + gap:
                        order_errors += 1
                    gap = 0
                    last_seq = message.sequence
                    sent, index = struct.unpack_from("<qq", message.data)
                    if index >= warmup:
                        latencies.append(now - sent)
                    if not first_recv:
                        first_recv = now
                    sends.append(sent)
                if delivery.messages:
                    received += len(delivery.messages)
                    last_recv = now
                if received + missed >= expect:
                    break
        finally:
            await stream.aclose()
    return {"latencies_ns": latencies, "received": received, "missed": missed,
            "order_errors": order_errors, "first_recv": first_recv, "last_recv": last_recv,
            "first_send": min(sends, default=0)}


async def _publisher(route: str, domain: int, mode: str, count: int,
                     rate: float) -> dict[str, Any]:
    """Publish `count` messages (paced for latency, as fast as allowed for throughput);
    returns when it started and ended and how many were acknowledged."""
    from skyge.services.bus.client import BusClient

    async with BusClient(direct=route == "direct") as client:
        start = time.time_ns()
        if mode == "latency":
            publisher = client.publisher(domain, BUS)
            interval = 1.0 / rate
            t0 = time.monotonic()
            for index in range(count):
                delay = t0 + index * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await publisher.publish(_payload(index))
        else:  # throughput: as fast as possible (rate 0) or paced in 10 ms ticks
            publisher = client.publisher(domain, BUS, max_batch=PUBLISH_BATCH, window=WINDOW,
                                         max_queued=4 * PUBLISH_BATCH)
            pad = b".".ljust(SIZE - 16, b".")
            t0 = time.monotonic()
            for index in range(count):
                if rate and index % _tick_messages(rate) == 0:
                    delay = t0 + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await publisher.publish(struct.pack("<qq", time.time_ns(), index) + pad)
        await publisher.close()
        return {"start": start, "end": time.time_ns(), "acked": publisher.acked}


# ---------------------------------------------------------------- the lab side

def _percentile(values: list[float], q: float) -> float | None:
    from bench._common import percentile
    return percentile(values, q)


def _spawn(node: Any, *argv: str) -> subprocess.Popen:
    return node.spawn([sys.executable, "-m", "bench.bus_latency", *argv], cwd=REPO,
                      name=f"bench-{argv[1]}", env={"PYTHONPATH": str(REPO)})


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{path.name}: client exited {proc.returncode} (see its log)")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {path}")
        time.sleep(0.01)


def _phase(lab: Any, work: Path, route: str, mode: str, count: int, rate: float,
           timeout: float, warmup: int = 0, flow: bool = False) -> tuple[dict, dict]:
    tag = f"{mode}-{route}{'-flow' if flow else ''}"
    sub_out, pub_out = work / f"sub-{tag}.json", work / f"pub-{tag}.json"
    sub = _spawn(lab.node(3), "--role", "subscriber", "--route", route, "--out", str(sub_out),
                 "--expect", str(count), "--timeout", str(timeout),
                 "--warmup-count", str(warmup), *(["--flow-control"] if flow else []))
    _wait_file(sub_out.with_suffix(".ready"), sub, 20)
    pub = _spawn(lab.node(1), "--role", "publisher", "--route", route, "--out", str(pub_out),
                 "--mode", mode, "--count", str(count), "--rate", str(rate))
    for proc in (pub, sub):
        proc.wait(timeout + 30)
    for path, proc in ((pub_out, pub), (sub_out, sub)):
        if not path.exists():
            raise RuntimeError(f"{path.name}: client exited {proc.returncode} without results")
    return json.loads(pub_out.read_text()), json.loads(sub_out.read_text())


def _rate(count: int, pub: dict, sub: dict) -> dict[str, Any]:
    """Delivered messages per second (publisher start to last receive) and messages lost."""
    elapsed = (sub["last_recv"] - pub["start"]) / 1e9
    return {"msgs_per_s": sub["received"] / elapsed if elapsed > 0 else 0.0,
            "lost": count - sub["received"]}


def run_lab(seconds: float, rate: float, sustained_rate: float, sustained_s: float, burst: int,
            routes: list[str]) -> dict[str, Any]:
    import grpc

    from bench._common import lab_name, note
    from skyge.clients.lab import Lab
    from skyge.clients.lab.daemons import start_daemons
    from skyge.services.common.paths import NodePaths
    from skyge.v1 import bus_pb2 as pb, bus_pb2_grpc
    from tests.cluster import heartbeat_support as hs

    figures: dict[str, Any] = {}
    with Lab.up(nodes=3, name=lab_name("bl")) as lab, \
            tempfile.TemporaryDirectory(prefix="bus-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o777)
        hs.start_cluster(lab)
        for node in lab.nodes:
            start_daemons(node, ["bus"], extra_args=("-l", "LOG_WARNING"))
        socket_path = NodePaths.at(lab.node(1).root).socket("bus")
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = bus_pb2_grpc.BusStub(channel)
            end = time.monotonic() + 10
            while True:
                try:
                    stub.CreateBus(pb.CreateBusRequest(domain=OWNER, name=BUS,
                                                       retain_messages=65536), timeout=5)
                    break
                except grpc.RpcError as error:
                    if time.monotonic() > end:
                        raise
                    note(f"waiting for the bus daemons: {error.details()}")
                    time.sleep(0.2)
        latency_count, warmup = int(seconds * rate), int(WARMUP_S * rate)
        for route in routes:
            time.sleep(SETTLE_S)  # quiet start: daemons just started, or the last phase's burst
            note(f"[{route}] latency: {latency_count} messages at {rate:g}/s (the first "
                 f"{warmup} are warm-up, not counted)")
            _, sub = _phase(lab, work, route, "latency", warmup + latency_count, rate,
                            seconds + 20, warmup)
            ms = [v / 1e6 for v in sub["latencies_ns"]]
            p50, p99 = _percentile(ms, 50), _percentile(ms, 99)
            note(f"[{route}] latency p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {max(ms):.3f} ms, "
                 f"received {sub['received']}/{warmup + latency_count}, missed {sub['missed']}")
            time.sleep(SETTLE_S)
            count = int(sustained_rate * sustained_s)
            note(f"[{route}] sustained: {count} messages of {SIZE} bytes offered at "
                 f"{sustained_rate:,.0f}/s")
            pub, sub = _phase(lab, work, route, "throughput", count, sustained_rate,
                              sustained_s + 30)
            sustained = _rate(count, pub, sub)
            note(f"[{route}] sustained {sustained['msgs_per_s']:,.0f} msgs/s delivered, lost "
                 f"{sustained['lost']} (missed {sub['missed']}), order errors "
                 f"{sub['order_errors']}")
            time.sleep(SETTLE_S)
            note(f"[{route}] burst: {burst} messages of {SIZE} bytes as fast as possible")
            pub, sub = _phase(lab, work, route, "throughput", burst, 0, 60)
            bursting = _rate(burst, pub, sub)
            note(f"[{route}] burst {bursting['msgs_per_s']:,.0f} msgs/s delivered, lost "
                 f"{bursting['lost']} (missed {sub['missed']}), order errors {sub['order_errors']}")
            time.sleep(SETTLE_S)
            note(f"[{route}] flow-controlled burst: {burst} messages as fast as possible, the "
                 f"subscriber asking for flow control")
            pub, sub = _phase(lab, work, route, "throughput", burst, 0, 90, flow=True)
            flowing = _rate(burst, pub, sub)
            note(f"[{route}] flow-controlled burst {flowing['msgs_per_s']:,.0f} msgs/s delivered, "
                 f"lost {flowing['lost']} (missed {sub['missed']}), order errors "
                 f"{sub['order_errors']}")
            figures[route] = {"p50": p50, "p99": p99, "msgs_per_s": sustained["msgs_per_s"],
                              "lost": sustained["lost"], "order_errors": sub["order_errors"],
                              "burst_msgs_per_s": bursting["msgs_per_s"],
                              "burst_lost": bursting["lost"],
                              "flow_burst_msgs_per_s": flowing["msgs_per_s"],
                              "flow_burst_lost": flowing["lost"]}
    return figures


# ---------------------------------------------------------------- nats-server, for comparison

async def _nats_run(port: int, rate: float, seconds: float, messages: int) -> tuple[float, float]:
    """A minimal NATS text-protocol client: latency p50 at `rate`, then throughput."""
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        await writer.drain()
        while (await reader.readline()).strip() != b"PONG":
            pass
        return reader, writer

    sub_r, sub_w = await connect()
    _, pub_w = await connect()
    sub_w.write(b"SUB bench 1\r\nPING\r\n")
    await sub_w.drain()
    while (await sub_r.readline()).strip() != b"PONG":
        pass

    async def receive(count: int) -> tuple[list[int], int]:
        latencies, last = [], 0
        while len(latencies) < count:
            line = await sub_r.readline()
            if line.startswith(b"PING"):
                sub_w.write(b"PONG\r\n")
                continue
            if not line.startswith(b"MSG"):
                continue
            size = int(line.split()[-1])
            data = await sub_r.readexactly(size + 2)
            last = time.time_ns()
            latencies.append(last - struct.unpack_from("<q", data)[0])
        return latencies, last

    count = int(rate * seconds)
    task = asyncio.create_task(receive(count))
    t0 = time.monotonic()
    for index in range(count):
        delay = t0 + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pub_w.write(b"PUB bench %d\r\n%s\r\n" % (SIZE, _payload(index)))
        await pub_w.drain()
    latencies, _ = await task
    task = asyncio.create_task(receive(messages))
    start = time.time_ns()
    for index in range(0, messages, PUBLISH_BATCH):
        pub_w.write(b"".join(b"PUB bench %d\r\n%s\r\n" % (SIZE, _payload(i))
                             for i in range(index, min(messages, index + PUBLISH_BATCH))))
        await pub_w.drain()
    _, last = await asyncio.wait_for(task, 60)
    ms = [v / 1e6 for v in latencies]
    return _percentile(ms, 50) or 0.0, messages / ((last - start) / 1e9)


def run_nats(rate: float, seconds: float, messages: int) -> tuple[float | None, float | None]:
    binary = shutil.which("nats-server")
    if binary is None:
        return None, None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        return asyncio.run(asyncio.wait_for(_nats_run(port, rate, seconds, messages), 120))
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- entry point

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="latency phase length")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase messages/s")
    parser.add_argument("--sustained-rate", type=float, default=100_000,
                        help="messages/s offered in the sustained phase (default 100000)")
    parser.add_argument("--sustained-seconds", type=float, default=5.0,
                        help="sustained phase length (default 5)")
    parser.add_argument("--burst", type=int, default=300_000,
                        help="messages of the burst phase, sent as fast as possible")
    parser.add_argument("--route", choices=("direct", "local", "both"), default="both",
                        help="direct (the client library's default), local, or both (default; "
                             "the RESULT's main keys are for the first, direct)")
    # client roles, run inside the lab nodes
    parser.add_argument("--role", choices=("subscriber", "publisher"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="latency", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--warmup-count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--flow-control", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "subscriber":
        out = Path(args.out)
        measured = asyncio.run(_subscriber(args.route, OWNER, out.with_suffix(".ready"),
                                           args.expect, args.timeout, args.warmup_count,
                                           args.flow_control))
        out.write_text(json.dumps(measured))
        return
    if args.role == "publisher":
        measured = asyncio.run(_publisher(args.route, OWNER, args.mode, args.count, args.rate))
        Path(args.out).write_text(json.dumps(measured))
        return

    from bench._common import note, result, rounded
    routes = ["direct", "local"] if args.route == "both" else [args.route]
    figures = run_lab(args.seconds, args.rate, args.sustained_rate, args.sustained_seconds,
                      args.burst, routes)
    nats_p50, nats_rate = run_nats(args.rate, args.seconds, args.burst)
    main_route = figures[routes[0]]
    data = {"route": routes[0],
            "remote_p50_ms": rounded(main_route["p50"], 3),
            "remote_p99_ms": rounded(main_route["p99"], 3),
            "msgs_per_s": round(main_route["msgs_per_s"]),
            "lost": main_route["lost"],
            "burst_msgs_per_s": round(main_route["burst_msgs_per_s"]),
            "burst_lost": main_route["burst_lost"],
            "flow_burst_msgs_per_s": round(main_route["flow_burst_msgs_per_s"]),
            "flow_burst_lost": main_route["flow_burst_lost"],
            "nats_p50_ms": rounded(nats_p50, 3),
            "nats_msgs_per_s": None if nats_rate is None else round(nats_rate)}
    for route in routes[1:]:
        other = figures[route]
        data.update({f"{route}_p50_ms": rounded(other["p50"], 3),
                     f"{route}_p99_ms": rounded(other["p99"], 3),
                     f"{route}_msgs_per_s": round(other["msgs_per_s"]),
                     f"{route}_lost": other["lost"],
                     f"{route}_burst_msgs_per_s": round(other["burst_msgs_per_s"]),
                     f"{route}_burst_lost": other["burst_lost"],
                     f"{route}_flow_burst_msgs_per_s": round(other["flow_burst_msgs_per_s"]),
                     f"{route}_flow_burst_lost": other["flow_burst_lost"]})
    if nats_p50 is None:
        note("nats-server is not installed: nats figures are null")
    result(data)


if __name__ == "__main__":
    main()
