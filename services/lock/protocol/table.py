"""The lock table of the authority: holders, waiters in their slot's order, fencing tokens.

Plain Python, no I/O and no clock of its own (callers pass `now_ns`), so it is tested alone and
driven by `authority.Authority`.

Names: a numbered lock is the tuple `(slot, lock)` (2048 slots × 8192 locks); an election group
is its name, a `str`, served fifo. The address space is 16 M locks but the table holds only the
locks in use (held or awaited): an entry disappears when its lock is free and nobody waits.

Order of waiters by slot range (the seed's buluos):

- 0–511 random: any waiter may be served next (a seeded `random.Random` picks);
- 512–1023 fifo: the smallest queue key first (first come, first served);
- 1024–1535 stack: the largest queue key first (last come, first served);
- 1536–2047 priority: the highest priority first, ties by smallest key.

A queue key is a cluster-wide arrival number given by the authority when it queues a wait. A new
authority rebuilds the table from the members' reports, keys included, so the order survives a
change of authority; waits reported without a key (not queued yet) get new keys after the largest
reported one.

Fencing tokens come from one counter for the whole table: every grant takes the next number, so
the tokens of each lock strictly increase. The counter is bounded by `token_limit` (the floor a
majority has persisted): at the limit grants wait (`blocked`) until the authority raises it.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from collections.abc import Iterable, Iterator

SLOTS = 2048
LOCKS_PER_SLOT = 8192
#: WaitOrder values of lock.proto
RANDOM, FIFO, STACK, PRIORITY = 1, 2, 3, 4

Name = tuple[int, int] | str

__all__ = [
    "FIFO",
    "LOCKS_PER_SLOT",
    "PRIORITY",
    "RANDOM",
    "SLOTS",
    "STACK",
    "Acquired",
    "Entry",
    "Grant",
    "LockTable",
    "Name",
    "check_name",
    "order_of",
    "sort_key",
]


def order_of(name: Name) -> int:
    """The waiter order of a lock: by slot range; election groups are fifo."""
    if isinstance(name, str):
        return FIFO
    slot = name[0]
    if slot < 512:
        return RANDOM
    if slot < 1024:
        return FIFO
    if slot < 1536:
        return STACK
    return PRIORITY


def check_name(slot: int, lock: int, priority: int = 0) -> str | None:
    """Why (slot, lock, priority) is invalid, or None when valid."""
    if not 0 <= slot < SLOTS:
        return f"slot must be 0 to {SLOTS - 1}, got {slot}"
    if not 0 <= lock < LOCKS_PER_SLOT:
        return f"lock must be 0 to {LOCKS_PER_SLOT - 1}, got {lock}"
    if priority and slot < 1536:
        return f"priority is only for slots 1536 to 2047 (user-defined order), got slot {slot}"
    return None


def acquire_problem(name: Name, priority: int, held_or_awaited: bool) -> str | None:
    """Why an Acquire of `name` is invalid (FAIL_INVALID's detail), or None."""
    if not isinstance(name, str):
        problem = check_name(name[0], name[1], priority)
        if problem:
            return problem
    if held_or_awaited:
        return "this session already holds or awaits the lock"
    return None


@dataclass(slots=True)
class Entry:
    """A session holding or awaiting a lock."""

    session: int
    node: int
    label: str = ""
    pid: int = 0
    priority: int = 0
    key: int = 0  # queue key (waiters); 0 until queued
    token: int = 0  # fencing token (holder)
    granted_ns: int = 0
    queued_ns: int = 0
    try_only: bool = False
    req: int = 0  # the session's acquire this entry answers


@dataclass(slots=True, frozen=True)
class Grant:
    """A lock given to a waiter (or at once to an acquirer)."""

    name: Name
    entry: Entry
    token: int


@dataclass(slots=True, frozen=True)
class Acquired:
    """What became of an acquire: granted (token), queued (key, position), busy, or blocked.

    `blocked`: the lock is free but no token may be handed out yet (token limit reached); the
    acquire is queued and will be granted when the limit rises.
    """

    outcome: str  # "granted", "queued", "busy", "duplicate"
    token: int = 0
    key: int = 0
    position: int = 0


class _Lock:
    __slots__ = ("holder", "name", "order", "waiters")

    def __init__(self, name: Name) -> None:
        self.name = name
        self.order = order_of(name)
        self.holder: Entry | None = None
        self.waiters: list[Entry] = []  # sorted by key

    def entry_of(self, session: int) -> Entry | None:
        """The session's hold or wait on this lock."""
        if self.holder is not None and self.holder.session == session:
            return self.holder
        return next((w for w in self.waiters if w.session == session), None)

    def serve_order(self) -> list[Entry]:
        """Waiters in the order they will be served (random: arrival order)."""
        if self.order == STACK:
            return self.waiters[::-1]
        if self.order == PRIORITY:
            return sorted(self.waiters, key=lambda e: (-e.priority, e.key))
        return list(self.waiters)

    def position(self, entry: Entry) -> int:
        if self.order == RANDOM:
            return 0
        if self.order == FIFO:
            return bisect.bisect_left(self.waiters, entry.key, key=lambda e: e.key) + 1
        if self.order == STACK:
            return len(self.waiters) - bisect.bisect_left(self.waiters, entry.key,
                                                          key=lambda e: e.key)
        ahead = sum(1 for e in self.waiters
                    if (-e.priority, e.key) < (-entry.priority, entry.key))
        return ahead + 1

    def next_waiter(self, rng: random.Random) -> Entry | None:
        if not self.waiters:
            return None
        if self.order == FIFO:
            index = 0
        elif self.order == STACK:
            index = len(self.waiters) - 1
        elif self.order == PRIORITY:
            best = max(self.waiters, key=lambda e: (e.priority, -e.key))
            index = self.waiters.index(best)
        else:
            index = rng.randrange(len(self.waiters))
        return self.waiters.pop(index)


class LockTable:
    """Holders and ordered waiters of every lock in use; one authority's view of the cluster."""

    def __init__(self, *, rng: random.Random | None = None, next_token: int = 1,
                 token_limit: int = 2**63, next_key: int = 1) -> None:
        self.rng = rng or random.Random()
        self.locks: dict[Name, _Lock] = {}
        #: session -> names it holds or awaits
        self.sessions: dict[int, set[Name]] = {}
        #: node -> sessions with entries
        self.nodes: dict[int, set[int]] = {}
        self.next_token = max(1, next_token)
        self.token_limit = token_limit
        self.next_key = max(1, next_key)
        #: free locks with waiters that could not be granted for want of tokens
        self.blocked: set[Name] = set()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _index(self, name: Name, entry: Entry) -> None:
        self.sessions.setdefault(entry.session, set()).add(name)
        self.nodes.setdefault(entry.node, set()).add(entry.session)

    def _unindex(self, name: Name, entry: Entry) -> None:
        names = self.sessions.get(entry.session)
        if names is not None:
            names.discard(name)
            if not names:
                del self.sessions[entry.session]
                sessions = self.nodes.get(entry.node)
                if sessions is not None:
                    sessions.discard(entry.session)
                    if not sessions:
                        del self.nodes[entry.node]

    def _take_token(self) -> int | None:
        if self.next_token >= self.token_limit:
            return None
        token = self.next_token
        self.next_token += 1
        return token

    def _gc(self, lock: _Lock) -> None:
        if lock.holder is None and not lock.waiters:
            self.locks.pop(lock.name, None)
            self.blocked.discard(lock.name)

    def _serve(self, lock: _Lock, now_ns: int) -> list[Grant]:
        """Give a free lock to its next waiter (if a token is available)."""
        if lock.holder is not None or not lock.waiters:
            self._gc(lock)
            return []
        token = self._take_token()
        if token is None:
            self.blocked.add(lock.name)
            return []
        self.blocked.discard(lock.name)
        entry = lock.next_waiter(self.rng)
        assert entry is not None
        entry.token, entry.granted_ns = token, now_ns
        lock.holder = entry
        return [Grant(lock.name, entry, token)]

    # -- queries -------------------------------------------------------------------------------
    def holder(self, name: Name) -> Entry | None:
        lock = self.locks.get(name)
        return lock.holder if lock else None

    def waiters(self, name: Name) -> list[Entry]:
        """Waiters in serve order."""
        lock = self.locks.get(name)
        return lock.serve_order() if lock else []

    def position(self, name: Name, entry: Entry) -> int:
        """A waiter's place in the queue, 1 = next; 0 for random order."""
        lock = self.locks.get(name)
        return lock.position(entry) if lock else 0

    def names(self) -> Iterator[Name]:
        return iter(self.locks)

    def held_by(self, session: int) -> list[Name]:
        return [n for n in self.sessions.get(session, ()) if self.holder(n) is not None
                and self.holder(n).session == session]  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.locks)

    # -- changes -------------------------------------------------------------------------------
    def acquire(self, name: Name, entry: Entry, now_ns: int, *, try_only: bool = False) -> Acquired:
        """A session asks for a lock. Grant when free (and a token is available), else queue
        (or refuse with busy when `try_only`)."""
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = _Lock(name)
        mine = lock.entry_of(entry.session)
        if mine is not None:
            if not entry.req or entry.req <= mine.req:
                return Acquired("duplicate")
            return self._supersede(lock, mine, entry, now_ns, try_only)
        if lock.holder is None and not lock.waiters:
            token = self._take_token()
            if token is not None:
                entry.token, entry.granted_ns = token, now_ns
                lock.holder = entry
                self._index(name, entry)
                return Acquired("granted", token=token)
        if try_only:
            self._gc(lock)
            return Acquired("busy")
        entry.key = self.next_key
        self.next_key += 1
        entry.queued_ns = entry.queued_ns or now_ns
        bisect.insort(lock.waiters, entry, key=lambda e: e.key)
        self._index(name, entry)
        if lock.holder is None:
            self.blocked.add(name)
        return Acquired("queued", key=entry.key, position=lock.position(entry))

    def _supersede(self, lock: _Lock, mine: Entry, entry: Entry, now_ns: int,
                   try_only: bool) -> Acquired:
        """A session asks again for a lock this table still counts as its own: its node gave
        the earlier hold or wait up (a lease lapse, a brief cut-off) before this table heard. The
        newer request takes the earlier one's place, so a blip neither moves the lock to the
        next waiter nor leaves the session refused. A hold is granted again with a new token
        (the old one when none may be handed out yet: the same session, whose earlier holder
        has stopped)."""
        if lock.holder is mine:
            token = self._take_token() or mine.token
            entry.token, entry.granted_ns = token, now_ns
            lock.holder = entry
            return Acquired("granted", token=token)
        index = next(i for i, waiter in enumerate(lock.waiters) if waiter is mine)
        if try_only:
            del lock.waiters[index]
            self._unindex(lock.name, mine)
            self._gc(lock)
            return Acquired("busy")
        entry.key, entry.queued_ns = mine.key, mine.queued_ns
        lock.waiters[index] = entry
        return Acquired("queued", key=entry.key, position=lock.position(entry))

    def release(self, name: Name, session: int, now_ns: int,
                req: int | None = None) -> tuple[bool, list[Grant]]:
        """A session gives back a lock or cancels its wait (only the one of acquire `req` when
        given). Returns (it held or awaited it, grants that follow)."""
        lock = self.locks.get(name)
        if lock is None:
            return False, []
        if lock.holder is not None and lock.holder.session == session and \
                (req is None or lock.holder.req == req):
            entry = lock.holder
            lock.holder = None
            self._unindex(name, entry)
            return True, self._serve(lock, now_ns)
        for index, waiter in enumerate(lock.waiters):
            if waiter.session == session and (req is None or waiter.req == req):
                del lock.waiters[index]
                self._unindex(name, waiter)
                self._gc(lock)
                return True, []
        return False, []

    def drop_session(self, session: int, now_ns: int) -> list[Grant]:
        """A session ended: release its locks and cancel its waits."""
        grants: list[Grant] = []
        for name in sorted(self.sessions.get(session, ()), key=sort_key):
            grants += self.release(name, session, now_ns)[1]
        return grants

    def drop_node(self, node: int, now_ns: int) -> list[Grant]:
        """A node's state is void (it left, or its daemon restarted): drop all its sessions."""
        grants: list[Grant] = []
        for session in sorted(self.nodes.get(node, ())):
            grants += self.drop_session(session, now_ns)
        return grants

    def drop_node_waits(self, node: int) -> None:
        """Cancel a node's waits but keep its holds (until it is fenced): grants nothing."""
        for session in sorted(self.nodes.get(node, ())):
            for name in sorted(self.sessions.get(session, ()), key=sort_key):
                holder = self.holder(name)
                if holder is None or holder.session != session:
                    self.release(name, session, 0)

    def names_held_by_node(self, node: int) -> list[Name]:
        return sorted((name for session in self.nodes.get(node, ())
                       for name in self.held_by(session)), key=sort_key)

    def restore_holder(self, name: Name, entry: Entry) -> Entry | None:
        """Recovery: a member reports a hold. Returns the entry that loses when the lock already
        has another holder (the one with the smaller token), else None."""
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = _Lock(name)
        self.next_token = max(self.next_token, entry.token + 1)
        current = lock.holder
        if current is not None and current.session != entry.session:
            if current.token >= entry.token:
                return entry
            lock.holder = None
            self._unindex(name, current)
            lock.holder = entry
            self._index(name, entry)
            return current
        if current is not None:
            self._unindex(name, current)
        lock.holder = entry
        self._index(name, entry)
        return None

    def restore_waiter(self, name: Name, entry: Entry) -> bool:
        """Recovery: a member reports a wait with its original key (0: queued at the end).
        False when the session already holds or awaits the lock."""
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = _Lock(name)
        if lock.entry_of(entry.session) is not None:
            return False
        if entry.key:
            self.next_key = max(self.next_key, entry.key + 1)
        else:
            entry.key = self.next_key
            self.next_key += 1
        bisect.insort(lock.waiters, entry, key=lambda e: e.key)
        self._index(name, entry)
        return True

    def serve_all(self, now_ns: int) -> list[Grant]:
        """Grant every free lock that has waiters (after recovery, or when tokens were added)."""
        grants: list[Grant] = []
        for name in sorted(self.locks, key=sort_key):
            lock = self.locks.get(name)
            if lock is not None and lock.holder is None and lock.waiters:
                grants += self._serve(lock, now_ns)
        return grants

    def serve_blocked(self, now_ns: int) -> list[Grant]:
        """Grant the locks that waited for tokens."""
        grants: list[Grant] = []
        for name in sorted(self.blocked, key=sort_key):
            lock = self.locks.get(name)
            if lock is None:
                self.blocked.discard(name)
                continue
            grants += self._serve(lock, now_ns)
            if self.next_token >= self.token_limit:
                break
        return grants

    def entries(self) -> Iterable[tuple[Name, Entry, bool]]:
        """(name, entry, is_holder) for every entry."""
        for name, lock in self.locks.items():
            if lock.holder is not None:
                yield name, lock.holder, True
            for waiter in lock.waiters:
                yield name, waiter, False


def sort_key(name: Name) -> tuple[int, int, str]:
    """Numbered locks by (slot, lock), then election groups by name."""
    return (name[0], name[1], "") if isinstance(name, tuple) else (SLOTS, 0, name)
