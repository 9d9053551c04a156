"""Where a node keeps its files: everything hangs under one node root.

The default root is `/`, as on a real machine. A different root lets many nodes share one machine
(the lab gives each namespace node its own root), so no daemon may build a path by hand: it asks
`NodePaths`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("heartbeat", "bus", "lock", "ha", "emon")
#: TCP port each daemon serves its gRPC API on for peers (the Unix socket serves local clients)
TCP_PORTS = {"heartbeat": 7410, "bus": 7411, "lock": 7412, "ha": 7413, "emon": 7414}
#: the two-node witness's TCP port (it runs on a third machine, not on the nodes)
WITNESS_PORT = 7415


@dataclass(frozen=True)
class NodePaths:
    """The folders and files of one node under its root."""

    root: Path = Path("/")

    @classmethod
    def at(cls, root: str | Path) -> NodePaths:
        return cls(Path(root).resolve())

    def under(self, absolute: str) -> Path:
        """Map an absolute path of a real machine (e.g. /etc/skyge) into this node's root."""
        return self.root / absolute.lstrip("/")

    @property
    def etc(self) -> Path:
        return self.under("/etc/skyge")

    @property
    def run(self) -> Path:
        """Sockets and pid files; root-only (0700)."""
        return self.under("/run/skyge")

    @property
    def lib(self) -> Path:
        """State that must survive restarts (fencing-token floor, bus state...)."""
        return self.under("/var/lib/skyge")

    @property
    def log(self) -> Path:
        return self.under("/var/log/skyge")

    def config_file(self, daemon: str) -> Path:
        return self.etc / f"{daemon}.cfg"

    def socket(self, daemon: str) -> Path:
        return self.run / f"{daemon}.sock"

    def read_socket(self, daemon: str) -> Path:
        """The socket of read-only calls, for the `skyge` group (services/common/access.py)."""
        return self.run / f"{daemon}.ro.sock"

    def pid_file(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    @property
    def lease_file(self) -> Path:
        """The lock daemon's word to the HA deadman: until when (CLOCK_BOOTTIME ns) this
        node's holds are safe; 0 when none is."""
        return self.run / "lock.lease"

    @property
    def deadman_file(self) -> Path:
        """The HA daemon's word to the deadman: what each active service started (process
        groups) and holds (floating IPs), to kill and remove when the lease runs out."""
        return self.run / "ha" / "deadman.json"
