"""Calling a daemon from a CLI command: one place that maps gRPC outcomes to exit statuses.

grpc, protobuf and the client library are imported inside the functions, not here: every command
module imports this one, and `skyge --help` must not pay for loading gRPC (see main).
"""
from __future__ import annotations

import argparse
import signal
import threading
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterator

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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stream(args: argparse.Namespace, daemon: str, rpc: str, request: Message) -> Iterator[Any]:
    """A server-streaming call; yields replies until the stream ends or the user interrupts.

    SIGINT and SIGTERM cancel the call, whatever the disposition the command inherited (a
    background job starts with SIGINT ignored), so a watch stops cleanly with its output
    flushed; the command then exits 128 + the signal's number (130 for Ctrl+C)."""
    import grpc
    with node_client(args) as client:
        call = getattr(client.stub(daemon), rpc)(request)
        stopped_by: list[int] = []

        def stop(signum: int, frame: object) -> None:
            stopped_by.append(signum)
            call.cancel()

        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS} if in_main else {}
        try:
            yield from call
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                _raise_for(error, client, daemon, rpc)
        finally:
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
