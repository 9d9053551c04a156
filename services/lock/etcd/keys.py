"""Where the etcd backend keeps locks in etcd, and which waiter is served next (pure: no I/O).

Every key lives under `PREFIX/NETID/` (lock.cfg's `etcd_prefix`, the cluster's netid), so clusters
can share one etcd:

    node/DOMAIN                     the lease id of that node's lock daemon (on that lease)
    lock/SSSS/LLLL/h                the holder of lock LLLL of slot SSSS   (on its node's lease)
    lock/SSSS/LLLL/w/SESSION        a waiter, one per session and lock     (on its node's lease)
    group/HEX/h, group/HEX/w/...    the same for an election group (its name in hex)

A hold's fencing token is the revision of the transaction that created its `h` key (its
create_revision): etcd's revision only grows, for the life of the etcd cluster's data.
Values are JSON (`Record`). Waiters are ordered with etcd's create revisions: see `next_waiter`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..protocol.table import FIFO, PRIORITY, STACK, Name, order_of

HOLDER = "h"
WAITER = "w"


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix"."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass(frozen=True)
class Layout:
    """The keys of one cluster (`root` = PREFIX/NETID/)."""

    root: str

    @classmethod
    def of(cls, prefix: str, netid: int) -> Layout:
        return cls(f"{prefix.rstrip('/')}/{netid}/")

    def node(self, domain: int) -> bytes:
        return f"{self.root}node/{domain}".encode()

    def lock_dir(self, name: Name) -> str:
        if isinstance(name, str):
            return f"{self.root}group/{name.encode().hex()}/"
        return f"{self.root}lock/{name[0]:04d}/{name[1]:04d}/"

    def holder(self, name: Name) -> bytes:
        return (self.lock_dir(name) + HOLDER).encode()

    def waiter(self, name: Name, session: int) -> bytes:
        return f"{self.lock_dir(name)}{WAITER}/{session:016x}".encode()

    def waiters(self, name: Name) -> tuple[bytes, bytes]:
        """Range [start, end) of a lock's waiters."""
        start = f"{self.lock_dir(name)}{WAITER}/".encode()
        return start, prefix_end(start)

    def locks_range(self) -> tuple[bytes, bytes]:
        """Every holder and waiter key of the cluster (what a daemon watches)."""
        start = self.root.encode()
        return start, prefix_end(start)

    def parse(self, key: bytes) -> tuple[Name, str, int] | None:
        """(name, HOLDER or WAITER, waiter's session) of a lock key; None for any other key."""
        text = key.decode(errors="replace")
        if not text.startswith(self.root):
            return None
        parts = text[len(self.root):].split("/")
        try:
            if parts[0] == "lock" and len(parts) >= 4:
                name: Name = (int(parts[1]), int(parts[2]))
                rest = parts[3:]
            elif parts[0] == "group" and len(parts) >= 3:
                name = bytes.fromhex(parts[1]).decode()
                rest = parts[2:]
            else:
                return None
            if rest == [HOLDER]:
                return name, HOLDER, 0
            if len(rest) == 2 and rest[0] == WAITER:
                return name, WAITER, int(rest[1], 16)
        except ValueError:
            return None
        return None


@dataclass(frozen=True)
class Record:
    """A holder or waiter: who, and when (the value of its key)."""

    session: int
    domain: int
    label: str = ""
    pid: int = 0
    priority: int = 0
    queued_unix_ns: int = 0
    granted_unix_ns: int = 0

    def encode(self) -> bytes:
        return json.dumps({"s": self.session, "d": self.domain, "l": self.label, "p": self.pid,
                           "pr": self.priority, "q": self.queued_unix_ns,
                           "g": self.granted_unix_ns},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> Record | None:
        """None for a value that is not a record (written by something else)."""
        try:
            data = json.loads(value)
            return cls(session=int(data["s"]), domain=int(data["d"]), label=str(data["l"]),
                       pid=int(data["p"]), priority=int(data["pr"]),
                       queued_unix_ns=int(data["q"]), granted_unix_ns=int(data["g"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Waiting:
    """A waiter as a daemon's copy of etcd shows it."""

    record: Record
    create_revision: int


def _random_rank(waiter: Waiting, salt: int) -> bytes:
    return hashlib.blake2b(f"{salt}:{waiter.record.session}".encode(), digest_size=8).digest()


def served_order(name: Name, waiters: list[Waiting]) -> list[Waiting]:
    """The waiters in the order they will be served (Inspect's order too).

    fifo: lowest create revision first; stack: highest first; priority: highest priority, ties
    fifo; random: a hash of the session salted with the newest waiter's create revision, so
    every daemon that sees the same waiters picks the same one. For fifo, stack and priority
    the rank depends on the waiter alone, so the first of a queue stays first of any part of
    it: a daemon that read the queue at revision R and saw its waiter first may take the lock
    with a transaction that checks that nothing joined the queue since R (one that left
    changes nothing). Random allows any pick: it only has to be the same on every daemon, so
    that one of them acts.
    """
    order = order_of(name)
    if order == FIFO:
        return sorted(waiters, key=lambda w: w.create_revision)
    if order == STACK:
        return sorted(waiters, key=lambda w: -w.create_revision)
    if order == PRIORITY:
        return sorted(waiters, key=lambda w: (-w.record.priority, w.create_revision))
    salt = max((w.create_revision for w in waiters), default=0)
    return sorted(waiters, key=lambda w: _random_rank(w, salt))


def next_waiter(name: Name, waiters: list[Waiting]) -> Waiting | None:
    ordered = served_order(name, waiters)
    return ordered[0] if ordered else None
