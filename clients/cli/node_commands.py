"""`skyge status`: are this node's five daemons up and serving (grpc.health.v1)?"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from skyge.clients.cli.output import CommandFailed, Output

if TYPE_CHECKING:  # imported by the commands themselves: gRPC is slow to load for `--help`
    from skyge.clients.connect import NodeClient


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("status", help="health of this node's daemons")
    parser.set_defaults(handler=show_status, daemon_target=None)


def daemon_health(client: NodeClient, daemon: str, timeout: float) -> str:
    """SERVING, NOT_SERVING, or DOWN when the daemon cannot be reached."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(client.channel(daemon))
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError:
        return "DOWN"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def show_status(args: argparse.Namespace, out: Output) -> int:
    from skyge.clients.connect import NodeClient
    from skyge.services.common.paths import DAEMONS

    with NodeClient(root=args.root) as client:
        states = {d: daemon_health(client, d, min(args.timeout, 2.0)) for d in DAEMONS}
    out.result({"root": args.root, "daemons": states},
               "\n".join(f"{f'skyge-{d}':16} {s}" for d, s in states.items()))
    if any(state != "SERVING" for state in states.values()):
        down = ", ".join(d for d, s in states.items() if s != "SERVING")
        raise CommandFailed(f"not serving: {down}")
    return 0
