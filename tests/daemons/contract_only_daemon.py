"""A daemon that serves the emon contract with every RPC UNIMPLEMENTED, on the shared runner.

The runner and CLI tests use it so they exercise the runner alone, not a daemon's core:
`python tests/daemons/contract_only_daemon.py [runner options]`.
"""
import sys

from skyge.services.common.runner import DaemonApp, DaemonSpec, run_daemon
from skyge.v1 import emon_pb2_grpc


class ContractOnlyApp(DaemonApp):
    service_names = ("skyge.v1.Emon",)

    def register(self, server) -> None:
        emon_pb2_grpc.add_EmonServicer_to_server(emon_pb2_grpc.EmonServicer(), server)


SPEC = DaemonSpec(name="emon", description="contract-only emon daemon for runner tests",
                  build=lambda ctx: ContractOnlyApp())

if __name__ == "__main__":
    sys.exit(run_daemon(SPEC))
