"""Python client library: reach a node's daemons over their local Unix sockets.

A node is addressed by its root folder (default `/`, or `$SKYGE_ROOT`; the lab gives each node its
own) or, for one daemon, by an explicit socket path or `host:port`. TCP goes over mutual TLS with
a certificate of the cluster CA: `cert` names one (PREFIX.crt, PREFIX.key, ca.crt beside them),
else the node's own under the root is used when this process can read it. `NodeClient` hands out the
generated stubs; `describe_rpc_error` turns gRPC failures into one line a user can act on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from skyge.services.common.paths import DAEMONS, NodePaths
from skyge.services.common.tls import Credentials, TlsError, TlsFiles

_STUBS = {
    "heartbeat": ("skyge.v1.heartbeat_pb2_grpc", "HeartbeatStub"),
    "bus": ("skyge.v1.bus_pb2_grpc", "BusStub"),
    "lock": ("skyge.v1.lock_pb2_grpc", "LockStub"),
    "ha": ("skyge.v1.ha_pb2_grpc", "HaStub"),
    "emon": ("skyge.v1.emon_pb2_grpc", "EmonStub"),
}


def default_root() -> str:
    return os.environ.get("SKYGE_ROOT", "/")


@dataclass
class NodeClient:
    """gRPC channels to one node's daemons; close it (or use `with`) when done."""

    root: str | Path = field(default_factory=default_root)
    #: per-daemon override: a Unix socket path or a `host:port` TCP address
    targets: dict[str, str] = field(default_factory=dict)
    #: TLS certificate for TCP targets: PREFIX.crt and PREFIX.key, with ca.crt in their folder
    cert: str | Path | None = None
    _channels: dict[str, grpc.Channel] = field(default_factory=dict, init=False, repr=False)

    def target(self, daemon: str) -> str:
        """The gRPC target of a daemon: `unix:/ROOT/run/skyge/NAME.sock` unless overridden."""
        if daemon not in DAEMONS:
            raise ValueError(f"unknown daemon {daemon!r} (one of {', '.join(DAEMONS)})")
        explicit = self.targets.get(daemon)
        if explicit:
            return explicit if ":" in explicit and not explicit.startswith("/") \
                else f"unix:{os.path.abspath(explicit)}"
        paths = NodePaths.at(self.root)
        if os.geteuid() != 0 and paths.read_socket(daemon).exists():
            return f"unix:{paths.read_socket(daemon)}"  # the skyge group's read-only socket
        return f"unix:{paths.socket(daemon)}"

    def channel(self, daemon: str) -> grpc.Channel:
        if daemon not in self._channels:
            target = self.target(daemon)
            tls = None if target.startswith("unix:") else self.credentials()
            self._channels[daemon] = (
                grpc.insecure_channel(target) if tls is None
                else grpc.secure_channel(target, tls.channel(), options=tls.options()))
        return self._channels[daemon]

    def credentials(self) -> Credentials | None:
        """The TLS credentials for TCP targets, None when there are none (insecure clusters).
        TlsError when `cert` names files that cannot be used."""
        if self.cert is not None:
            return Credentials.load(TlsFiles.of_prefix(self.cert))
        files = TlsFiles.default(NodePaths.at(self.root))
        try:
            return Credentials.load(files) if files.present() else None
        except TlsError:  # e.g. not root: the node's key is not readable
            return None

    def stub(self, daemon: str) -> Any:
        """The generated stub of a daemon's main service (e.g. HeartbeatStub)."""
        module_name, class_name = _STUBS[daemon]
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)(self.channel(daemon))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_rpc_error(error: grpc.RpcError, daemon: str, target: str, rpc: str) -> str:
    """One line saying what went wrong with a call, in the user's terms."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach skyge-{daemon} at {target.removeprefix('unix:')}: is it running?"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"skyge-{daemon} does not implement {rpc} yet"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"skyge-{daemon} did not answer {rpc} in time"
    name = code.name if code is not None else "ERROR"
    return f"{rpc}: {details} ({name})"
