"""A daemon that serves the emon contract with every RPC UNIMPLEMENTED, on the shared runner.

The runner and CLI tests use it so they exercise the runner alone, not a daemon's core:
`python tests/daemons/contract_only_daemon.py [runner options]`. With START_DELAY_S in the
environment its start takes that long (as a daemon waiting for its membership does).
"""
import asyncio
import os
import sys

from skyge.services.common.runner import DaemonApp, DaemonSpec, run_daemon
from skyge.v1 import emon_pb2_grpc


class ContractOnlyApp(DaemonApp):
    service_names = ("skyge.v1.Emon",)

    def register(self, server) -> None:
        emon_pb2_grpc.add_EmonServicer_to_server(emon_pb2_grpc.EmonServicer(), server)

    async def start(self) -> None:
        await asyncio.sleep(float(os.environ.get("START_DELAY_S", "0")))


SPEC = DaemonSpec(name="emon", description="contract-only emon daemon for runner tests",
                  build=lambda ctx: ContractOnlyApp())

if __name__ == "__main__":
    sys.exit(run_daemon(SPEC))
