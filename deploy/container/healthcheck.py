#!/opt/skyge/bin/python
"""Container health check (installed as /usr/local/bin/skyge-health): does this container's
daemon answer SERVING on its Unix socket?

One image runs every daemon, so the container says which: $SKYGE_DAEMON, set next to the command
in compose.yaml and quadlet/. The daemon answers grpc.health.v1 on ROOT/run/skyge/NAME.sock
(ROOT: $SKYGE_ROOT, default /); it reports NOT_SERVING when it is stuck, where systemd's
watchdog would restart it. Exit 0 if SERVING, else 1; the line printed lands in the health log.
"""
from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyge.services.common.paths import DAEMONS, NodePaths

NAMES = (*DAEMONS, "witness")
TIMEOUT_S = 3.0


def main() -> int:
    daemon = os.environ.get("SKYGE_DAEMON", "")
    if daemon not in NAMES:
        print(f"SKYGE_DAEMON is {daemon!r}: set it to the daemon this container runs "
              f"({', '.join(NAMES)})")
        return 1
    socket = NodePaths.at(os.environ.get("SKYGE_ROOT", "/")).socket(daemon)
    try:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        print(f"skyge-{daemon}: no answer on {socket}: {error.code().name} {error.details()}")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"skyge-{daemon}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
