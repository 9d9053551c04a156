"""Calling a daemon from a CLI command: one place that maps gRPC outcomes to exit statuses.

grpc, protobuf and the client library are imported inside the functions, not here: every command
module imports this one, and `skyge --help` must not pay for loading gRPC (see main).
"""
from __future__ import annotations

import argparse
import functools
import queue
import signal
import threading
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Generator

from skyge.clients.cli.output import CommandFailed, Output, UsageError, render_text

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

    from skyge.clients.connect import NodeClient


def input_codes() -> set[grpc.StatusCode]:
    """Codes that mean "your input was wrong" (exit 2) rather than "it could not be done" (1)."""
    import grpc
    return {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}


def node_client(args: argparse.Namespace) -> NodeClient:
    """The node the user addressed with --root / --socket."""
    from skyge.clients.connect import NodeClient
    from skyge.services.common.tls import TlsError

    targets = {args.daemon_target: args.socket} if getattr(args, "socket", None) else {}
    client = NodeClient(root=args.root, targets=targets, cert=getattr(args, "cert", None))
    if client.cert is not None:
        try:
            client.credentials()
        except TlsError as error:
            raise UsageError(f"--cert: {error}") from None
    return client


def _raise_for(error: grpc.RpcError, client: NodeClient, daemon: str, rpc: str) -> None:
    from skyge.clients.connect import describe_rpc_error
    message = describe_rpc_error(error, daemon, client.target(daemon), rpc)
    if error.code() in input_codes():
        raise UsageError(message) from None
    raise CommandFailed(message) from None


def call(args: argparse.Namespace, daemon: str, rpc: str, request: Message) -> Any:
    """A unary call to `daemon`'s `rpc` on the addressed node; errors become CLI errors."""
    import grpc
    with node_client(args) as client:
        try:
            return getattr(client.stub(daemon), rpc)(request, timeout=args.timeout)
        except grpc.RpcError as error:
            _raise_for(error, client, daemon, rpc)


# -- the end of a streaming call -------------------------------------------------------------------
#
# A command must be done with a streaming call before it returns: the call cancelled, any thread
# reading it finished, and the call object freed by the command itself. A call left to the garbage
# collector may be collected during interpreter shutdown, after CPython stopped gRPC's daemon
# threads (the channel thread, the request-iterator thread) wherever they were, maybe inside the
# call's lock: the call's __del__ then waits for that lock forever and the command never exits,
# its work done (`skyge lock test` printed "released lock" and hung so, once, on a busy machine).
# A sync call is the RpcError it raises and that error's traceback holds frames holding the call,
# so once it raised only the garbage collector frees it: `end_call` breaks that cycle.

#: how long closing a StreamReader waits for its thread, which ends within milliseconds of the
#: call's cancel; past it the command goes on (and may meet the hang above)
READER_JOIN_S = 5.0


def end_call(call: Any) -> None:
    """Cancel a streaming call (nothing to do once it ended) and break the reference cycle it is
    in if it raised, so it is freed, its __del__ run, as soon as the command lets go of it. Call
    it where the command is done with the call, after any thread reading it has finished."""
    call.cancel()
    if isinstance(call, BaseException):
        call.__traceback__ = None


def _read_into(call: Any, items: queue.Queue[Any]) -> None:
    """A StreamReader's thread; it refers to nothing but the call and the queue."""
    import grpc
    try:
        for message in call:
            items.put(message)
    except grpc.RpcError as error:
        items.put(error)
    finally:
        items.put(None)


class StreamReader:
    """A streaming call read by a daemon thread, so that the command's main thread stays free to
    handle signals, keep deadlines and send requests. `next()` gives the next message, a
    grpc.RpcError if the call failed (or was cancelled), None once the stream ended, False if
    nothing came within the timeout. `close()` it before the command returns."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._items: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=_read_into, args=(call, self._items),
                                        name="skyge stream reader", daemon=True)
        self._thread.start()

    def next(self, timeout: float | None) -> Any:
        try:
            return self._items.get(timeout=timeout)
        except queue.Empty:
            return False

    def close(self) -> None:
        """Cancel the call, wait for the reading thread, end the call (`end_call`) and drop what
        was not read: nothing of the call is left for the garbage collector."""
        self.call.cancel()
        self._thread.join(READER_JOIN_S)
        end_call(self.call)
        with self._items.mutex:
            self._items.queue.clear()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stream(args: argparse.Namespace, daemon: str, rpc: str, request: Message,
           fail: Callable[[grpc.RpcError, NodeClient], None] | None = None
           ) -> Generator[Any, None, None]:
    """A server-streaming call; yields replies until the stream ends or the user interrupts.

    SIGINT and SIGTERM cancel the call, whatever the disposition the command inherited (a
    background job starts with SIGINT ignored), so a watch stops cleanly with its output
    flushed; the command then exits 128 + the signal's number (130 for Ctrl+C). A command that
    stops reading early closes the generator (`contextlib.closing`): that ends the call too.
    `fail` turns an error other than the cancel into the command's error (it must raise);
    by default the daemon's answer is described as for a unary call."""
    import grpc
    with node_client(args) as client:
        # the only reference to the call, so that it is freed (its __del__, which may wait for
        # gRPC's thread, run) where the finally below drops it: still under `stop`, so that a
        # second Ctrl+C meanwhile changes nothing rather than interrupt the __del__
        calls = [getattr(client.stub(daemon), rpc)(request)]
        stopped_by: list[int] = []

        def stop(signum: int, frame: object) -> None:
            stopped_by.append(signum)
            for call in calls:
                call.cancel()

        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS} if in_main else {}
        try:
            yield from calls[0]
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                (fail or functools.partial(_raise_for, daemon=daemon, rpc=rpc))(error, client)
        finally:
            end_call(calls[0])
            calls.clear()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if stopped_by:
            raise SystemExit(128 + stopped_by[0])



def to_dict(message: Message) -> dict[str, Any]:
    """A reply as JSON-ready data, field names as in the .proto, defaults included."""
    from google.protobuf.json_format import MessageToDict
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def show(args: argparse.Namespace, out: Output, daemon: str, rpc: str, request: Message,
         text: Callable[[dict[str, Any]], str] | None = None) -> int:
    """Run a unary RPC and print its reply (text renderer optional). Exit status 0."""
    out.result(to_dict(call(args, daemon, rpc, request)), text)
    return 0


def follow(args: argparse.Namespace, out: Output, daemon: str, rpc: str, request: Message,
           text: Callable[[dict[str, Any]], str] | None = None) -> int:
    """Print each message of a server stream as it comes (one JSON object per line in json)."""
    for reply in stream(args, daemon, rpc, request):
        data = to_dict(reply)
        out.event(data, text(data) if text else render_text(data))
    return 0
