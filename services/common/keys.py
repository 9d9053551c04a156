"""The cluster key: every heartbeat and lock datagram carries an HMAC made with it.

A node signs with `key_file` and accepts datagrams signed with it or, during a rotation, with
`accept_key_file`. Rotating without stopping the cluster (docs/ARCHITECTURE.md, "Keys"):

1. on every node: write the new key, set `accept_key_file` to the old one and `key_file` to the
   new one, `systemctl reload skyge-heartbeat skyge-lock` (SIGHUP: the keys are read again, nothing
   else changes). Nodes already switched sign with the new key, and every node accepts both;
2. once every node is switched: remove `accept_key_file` and reload again.

A daemon refuses to start without a key unless its config says `insecure = yes`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skyge.services.common.config import ConfigError
from skyge.services.common.paths import NodePaths

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
KEYGEN_HINT = "write one with `skyge heartbeat keygen` and copy it to every node"


@dataclass(frozen=True)
class ClusterKeys:
    """The key this node signs with (None: insecure, unsigned) and, during a rotation, a second
    key it accepts."""

    current: bytes | None
    other: bytes | None = None

    @property
    def accepted(self) -> tuple[bytes, ...]:
        return tuple(k for k in (self.current, self.other) if k)


def key_path(value: str, paths: NodePaths) -> Path:
    """Where a key file setting points: absolute under the node root, relative under
    ROOT/etc/skyge."""
    return paths.under(value) if value.startswith("/") else paths.etc / value


def read_key(path: Path, setting: str = "key_file", config_path: Path | str | None = None) -> bytes:
    """A key file's bytes; ConfigError naming the setting when missing, unreadable or of the
    wrong size."""
    where = str(config_path) if config_path is not None else None
    try:
        key = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the cluster key {path}: {error.strerror}", path=where,
                          key=setting) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ConfigError(f"the cluster key {path} must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} "
                          f"bytes, it has {len(key)} ({KEYGEN_HINT})", path=where, key=setting)
    return key


def load_keys(paths: NodePaths, key_file: str | None, accept_key_file: str | None, *,
              insecure: bool, config_path: Path | str | None = None) -> ClusterKeys:
    """The cluster keys a config names; ConfigError when there is none and not `insecure`."""
    if not key_file:
        if accept_key_file:
            raise ConfigError("is set but key_file is not: a second key is only accepted "
                              "beside the one the node signs with",
                              path=str(config_path) if config_path else None,
                              key="accept_key_file")
        if insecure:
            return ClusterKeys(None)
        raise ConfigError(f"is required: every datagram is signed with the cluster key, so that "
                          f"no stranger on the network can join or speak for a node ({KEYGEN_HINT}"
                          f"), or set insecure = yes", path=str(config_path) if config_path
                          else None, key="key_file")
    current = read_key(key_path(key_file, paths), "key_file", config_path)
    other = (read_key(key_path(accept_key_file, paths), "accept_key_file", config_path)
             if accept_key_file else None)
    return ClusterKeys(current, other)
