"""Log records on the bus: the daemons' handler (`-t bus|all`) and the collector (youchai)."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from skyge.services.bus.collector import LogCollector, RotatingFile, format_record
from skyge.services.common.logsetup import LOG_BUSES, BusLogHandler
from skyge.v1 import bus_pb2 as pb, bus_pb2_grpc
from tests.unit.test_bus_server import run


class RecordingBus(bus_pb2_grpc.BusServicer):
    def __init__(self, refuse: bool = False) -> None:
        self.requests: list[pb.PublishRequest] = []
        self.refuse = refuse
        self.got = threading.Event()

    def Publish(self, request, context):
        if self.refuse:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")
        self.requests.append(request)
        self.got.set()
        return pb.PublishAck(first_sequence=1, count=len(request.messages))

    def records(self) -> list[dict]:
        return [json.loads(m.data) for r in self.requests for m in r.messages]


def serve(socket: Path, servicer: RecordingBus) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    bus_pb2_grpc.add_BusServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    return server


def wait(check, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def make_record(message: str, level: int = logging.INFO, name: str = "skyge-lock"):
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_records_go_to_the_daemons_log_bus(tmp_path):
    socket = tmp_path / "bus.sock"
    bus = RecordingBus()
    server = serve(socket, bus)
    handler = BusLogHandler("lock", socket)
    try:
        handler.handle(make_record("granted lock 3/7", logging.WARNING))
        handler.handle(make_record("grpc noise", name="grpc._cython.cygrpc"))
        wait(lambda: bus.requests)
        request = bus.requests[0]
        assert (request.domain, request.name) == (0, LOG_BUSES["lock"])
        assert LOG_BUSES["lock"] == "log.buluos.skyge.com"
        assert request.messages[0].content_type == "application/json"
        record = bus.records()[0]
        assert (record["daemon"], record["level"], record["message"]) == \
            ("lock", "WARNING", "granted lock 3/7")
        assert record["pid"] > 0 and record["time_unix_ns"] > 0
        assert len(bus.records()) == 1  # gRPC's own records are never shipped
    finally:
        handler.close()
        server.stop(0)


def test_emit_never_blocks_and_drops_are_counted_then_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(BusLogHandler, "RETRY_S", 0.05)
    socket = tmp_path / "bus.sock"
    handler = BusLogHandler("ha", socket)
    try:
        start = time.monotonic()
        for i in range(5000):  # the bus daemon is not there
            handler.handle(make_record(f"record {i}"))
        assert time.monotonic() - start < 2.0
        wait(lambda: handler.dropped >= 5000 - BusLogHandler.QUEUE_LIMIT)
        bus = RecordingBus()
        server = serve(socket, bus)  # the bus daemon comes up: what was queued is shipped
        try:
            wait(lambda: len(bus.records()) + handler.dropped >= 5001)
            records = bus.records()
            notice = [r for r in records if "log records were dropped" in r["message"]]
            assert notice and notice[0]["level"] == "WARNING"
            assert f"{handler.dropped} log records were dropped" in notice[0]["message"]
            kept = [int(r["message"].split()[1]) for r in records if r not in notice]
            assert kept == list(range(kept[0], kept[0] + len(kept)))  # in order, no holes
            assert len(kept) <= BusLogHandler.QUEUE_LIMIT  # bounded while the bus was away
            assert len(kept) + handler.dropped == 5000  # every record shipped or counted
        finally:
            server.stop(0)
    finally:
        handler.close()


def test_refused_batches_are_dropped_and_the_handler_survives(tmp_path, monkeypatch):
    monkeypatch.setattr(BusLogHandler, "RETRY_S", 0.01)
    socket = tmp_path / "bus.sock"
    bus = RecordingBus(refuse=True)
    server = serve(socket, bus)
    handler = BusLogHandler("emon", socket)
    try:
        handler.handle(make_record("x" * 100_000))  # long text is cut, not fatal
        wait(lambda: handler.dropped == 1)
        bus.refuse = False
        handler.handle(make_record("after"))
        wait(lambda: len(bus.records()) >= 2)
        assert bus.records()[-1]["message"] == "after"
    finally:
        handler.close()
        server.stop(0)


def test_format_record_is_one_line_with_domain_daemon_level_time():
    record = json.dumps({"time_unix_ns": 1_700_000_000_123_456_000, "daemon": "lock",
                         "level": "ERROR", "pid": 7, "message": "a\nb"}).encode()
    line = format_record(2, "log.buluos.skyge.com", pb.BusMessage(data=record))
    assert line == "2023-11-14T22:13:20.123456Z domain=2 daemon=lock level=ERROR pid=7 a\\nb\n"
    plain = format_record(3, "log.ha.skyge.com",
                          pb.BusMessage(data=b"raw text", time_unix_ns=1_700_000_000_000_000_000))
    assert plain == "2023-11-14T22:13:20.000000Z domain=3 daemon=ha level=INFO raw text\n"


def test_rotation_keeps_the_configured_backups(tmp_path):
    log = RotatingFile(tmp_path / "domain-1.log", max_bytes=100, backups=2)
    for i in range(20):
        log.write([f"line {i:02d} " + "x" * 30 + "\n"])
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["domain-1.log", "domain-1.log.1", "domain-1.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert (tmp_path / "domain-1.log").read_text().splitlines()[-1].startswith("line 19")


@run
async def test_collector_writes_every_members_records_and_resumes(nodes, stub_of):
    n1, n2 = nodes
    for node in nodes:
        node.core.init(())
    folder = n1.paths.root / "cluster"
    state = n1.paths.root / "collector.json"

    def collector() -> LogCollector:
        return LogCollector(n1.follower, n1.paths.socket("bus"), folder,  # type: ignore[arg-type]
                            local_domain=lambda: 1, state_file=state)

    def record(text: str) -> pb.Payload:
        return pb.Payload(data=json.dumps({"daemon": "ha", "level": "INFO",
                                           "message": text}).encode())

    async def lines(path: Path, count: int) -> list[str]:
        # read on the loop, between the collector's writes (it writes on this loop too): never a
        # half-written line, which a read in a worker thread could see
        for _ in range(500):
            if path.exists() and len(path.read_text().splitlines()) >= count:  # noqa: ASYNC240
                break
            await asyncio.sleep(0.01)
        return path.read_text().splitlines()  # noqa: ASYNC240

    n2.core.get("log.ha.skyge.com").publish([record("before the collector")], sender=2)
    first = collector()
    first.start()
    n2.core.get("log.ha.skyge.com").publish([record("one"), record("two")], sender=2)
    n1.core.get("log.buluos.skyge.com").publish([record("local")], sender=1)
    got = await lines(folder / "domain-2.log", 3)
    assert [line.split(" ", 4)[-1] for line in got] == ["before the collector", "one", "two"]
    assert "local" in (await lines(folder / "domain-1.log", 1))[0]
    await first.stop()
    n2.core.get("log.ha.skyge.com").publish([record("while stopped")], sender=2)
    second = collector()  # resumes from its saved state: nothing twice, nothing skipped
    second.start()
    got = await lines(folder / "domain-2.log", 4)
    await asyncio.sleep(0.1)
    assert [line.split(" ", 4)[-1] for line in (folder / "domain-2.log").read_text().splitlines()] \
        == ["before the collector", "one", "two", "while stopped"]
    await second.stop()
