"""`skyge` commands that hold a gRPC stream exit promptly when a signal stops them, even when
gRPC's own threads are slow to finish the cancelled call.

A command must be done with its stream's call before it returns. Left to the garbage collector,
the call may be collected during interpreter shutdown, after CPython stopped gRPC's daemon
threads wherever they were, one of them inside the call's lock; the call's __del__ then waits for
that lock forever and the command never exits (seen once as `skyge lock test` still running 10 s
after Ctrl+C, having printed "released lock"). Here the CLI runs with gRPC's channel thread slowed
down while it holds the call's lock after a cancel, which makes that hang likely, and reports how
many call objects are still alive when the command has returned: none may be.

The daemon is a stand-in gRPC server in the test process, on a Unix socket (`--socket`).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import grpc._channel
import pytest

from skyge.v1 import (bus_pb2, bus_pb2_grpc, emon_pb2, emon_pb2_grpc, ha_pb2, ha_pb2_grpc,
                      lock_pb2, lock_pb2_grpc)

#: the CLI, with gRPC's channel thread sleeping inside the call's lock on each event of a
#: cancelled call (as a thread preempted there on a busy machine would); once the command has
#: returned, it reports the gRPC call objects still alive on stderr
SLOW_GRPC_CLI = """
import gc, sys, time
import grpc._channel as channel
handle_event = channel._handle_event  # called by the channel thread holding state.condition
def slow_after_cancel(event, state, deserializer):
    if state.cancelled:
        time.sleep(0.3)
    return handle_event(event, state, deserializer)
channel._handle_event = slow_after_cancel
from skyge.clients.cli.main import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
left = sum(isinstance(o, channel._Rendezvous) for o in gc.get_objects())
sys.stderr.write(f"calls left: {left}\\n")
sys.exit(status)
"""
#: from the signal to the end of the process; a run takes well under 2 s
EXIT_TIMEOUT_S = 10
START_TIMEOUT_S = 30
HOUR_NS = 3600 * 10**9


def _until_cancelled(context: grpc.ServicerContext) -> None:
    ended = threading.Event()
    context.add_callback(ended.set)
    ended.wait(START_TIMEOUT_S + EXIT_TIMEOUT_S)


class _Lock(lock_pb2_grpc.LockServicer):
    """Grants every lock at once; Observe shows no leader."""

    def Session(self, request_iterator, context):
        for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "open":
                yield lock_pb2.SessionEvent(opened=lock_pb2.Opened(session_id=1))
            elif kind == "acquire":
                yield lock_pb2.SessionEvent(granted=lock_pb2.Granted(
                    slot=request.acquire.slot, lock=request.acquire.lock, fencing_token=7,
                    valid_until_boot_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME) + HOUR_NS))
            elif kind == "release":
                yield lock_pb2.SessionEvent(released=lock_pb2.Released(
                    slot=request.release.slot, lock=request.release.lock))

    def Observe(self, request, context):
        yield lock_pb2.LeaderEvent(group=request.group)
        _until_cancelled(context)


class _Emon(emon_pb2_grpc.EmonServicer):
    def Watch(self, request, context):
        yield emon_pb2.Sample(probe="cpu_load", value=12.5, unit="%")
        _until_cancelled(context)


class _Bus(bus_pb2_grpc.BusServicer):
    def Subscribe(self, request, context):
        yield bus_pb2.Delivery()  # the subscription is in place
        yield bus_pb2.Delivery(messages=[bus_pb2.BusMessage(sequence=1, data=b"hello")])
        _until_cancelled(context)


class _Ha(ha_pb2_grpc.HaServicer):
    def WatchStatus(self, request, context):
        yield ha_pb2.StatusEvent(snapshot=ha_pb2.StatusSnapshot())
        _until_cancelled(context)


@pytest.fixture
def socket_path(tmp_path):
    path = tmp_path / "daemon.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    lock_pb2_grpc.add_LockServicer_to_server(_Lock(), server)
    emon_pb2_grpc.add_EmonServicer_to_server(_Emon(), server)
    bus_pb2_grpc.add_BusServicer_to_server(_Bus(), server)
    ha_pb2_grpc.add_HaServicer_to_server(_Ha(), server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield path
    finally:
        server.stop(None).wait(10)


@pytest.mark.parametrize("argv,ready,status,last", [
    (["lock", "test", "-s", "600", "-l", "1"], "process get lock", 0, "released lock 600/1"),
    (["lock", "run", "-s", "600", "-l", "1", "--", sys.executable, "-c",
      "print('running', flush=True); import time; time.sleep(60)"], "running", 130, None),
    (["lock", "observe", "-g", "db"], "group db: no leader", 0, None),
    (["emon", "watch"], "cpu_load", 128 + signal.SIGINT, None),
    (["bus", "spy", "-d", "1", "-n", "news"], "hello", 128 + signal.SIGINT, None),
    (["--output", "json", "ha", "status", "--watch"], "snapshot", 128 + signal.SIGINT, None),
], ids=["lock test", "lock run", "lock observe", "emon watch", "bus spy", "ha status --watch"])
def test_a_stream_command_exits_promptly_after_ctrl_c(socket_path, argv, ready, status, last):
    code, rest, errors = _interrupted(socket_path, argv, ready, presses=1)
    assert code == status, (code, errors)
    assert "Traceback" not in errors, errors
    assert errors.splitlines()[-1] == "calls left: 0", errors
    if last:
        assert rest.splitlines()[-1].endswith(last), rest


@pytest.mark.parametrize("argv,ready", [
    (["emon", "watch"], "cpu_load"),
    (["bus", "spy", "-d", "1", "-n", "news"], "hello"),
    (["--output", "json", "ha", "status", "--watch"], "snapshot"),
], ids=["emon watch", "bus spy", "ha status --watch"])
def test_a_second_ctrl_c_while_a_watch_closes_changes_nothing(socket_path, argv, ready):
    """An impatient user presses Ctrl+C again while the watch is closing its call (gRPC's thread
    is slow to finish it here): the command still ends its call and exits 130, no traceback."""
    code, _, errors = _interrupted(socket_path, argv, ready, presses=2)
    assert code == 128 + signal.SIGINT, (code, errors)
    assert "Traceback" not in errors, errors
    assert errors.splitlines()[-1] == "calls left: 0", errors


def _interrupted(socket_path, argv: list[str], ready: str, presses: int) -> tuple[int, str, str]:
    """Run the CLI until it prints `ready`, press Ctrl+C `presses` times 0.1 s apart: (exit
    status, the rest of stdout, stderr)."""
    assert hasattr(grpc._channel, "_handle_event") and hasattr(grpc._channel, "_Rendezvous"), \
        "gRPC changed: update SLOW_GRPC_CLI"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_GRPC_CLI, "--socket", str(socket_path),
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines = []
        watchdog = threading.Timer(START_TIMEOUT_S, proc.kill)  # bounds the wait for `ready`
        watchdog.start()
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line.rstrip("\n"))
                if ready in line:
                    break
        finally:
            watchdog.cancel()
        assert any(ready in line for line in lines), (lines, proc.stderr.read())
        for press in range(presses):
            if press:
                time.sleep(0.1)  # within the slowed close (0.3 s)
            proc.send_signal(signal.SIGINT)  # Ctrl+C
        try:
            rest, errors = proc.communicate(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"skyge {' '.join(argv[:2])} still running {EXIT_TIMEOUT_S} s after "
                        f"SIGINT; output: {lines}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return proc.returncode, rest, errors
