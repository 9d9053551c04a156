"""In-order, exactly-once delivery of lock messages between two daemons over UDP datagrams.

Plain Python, no I/O: `peer.py` puts what `OutChannel` hands out into datagrams and feeds what
arrives to `InChannel`.

Each message gets a number (per sender instance and recipient, from 1). The receiver accepts the
next expected number only, so messages come out in order and once, and reports the highest number
it accepted in every datagram it sends back (`data_ack`). The sender keeps what is not acknowledged
and sends it again after `rto_ns` (on whichever path works then), so a datagram lost on a dead path
or dropped by a full socket buffer costs one retransmission time, not the message. A restarted peer
(new instance) starts both directions afresh: what was in flight to or from the old instance is
void, which the lock protocol handles (the authority drops a restarted member's state; a member
reports again).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar
from collections.abc import Sequence

M = TypeVar("M")

__all__ = ["InChannel", "OutChannel", "pack"]


class OutChannel(Generic[M]):
    """The sending side: numbering, the unacknowledged window, retransmission."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.acked = 0
        #: (seq, message, size) sent and not acknowledged, in order
        self.unacked: deque[tuple[int, M, int]] = deque()
        self.pending: list[tuple[M, int]] = []
        self.last_sent_ns = 0  # when the oldest unacknowledged message was (re)sent
        self.retransmissions = 0

    def push(self, message: M, size: int) -> None:
        """Queue a message; `size` is its serialized size (for packing)."""
        self.pending.append((message, size))

    def has_pending(self) -> bool:
        return bool(self.pending)

    def take(self, now_ns: int) -> tuple[int, list[tuple[M, int]]]:
        """Number the queued messages and move them to the window. Returns (first seq, messages)."""
        if not self.pending:
            return 0, []
        first = self.next_seq
        batch = self.pending
        self.pending = []
        for message, size in batch:
            self.unacked.append((self.next_seq, message, size))
            self.next_seq += 1
        if len(self.unacked) == len(batch):
            self.last_sent_ns = now_ns
        return first, batch

    def ack(self, upto: int, now_ns: int) -> None:
        """The peer accepted everything up to `upto`."""
        if upto <= self.acked:
            return
        self.acked = min(upto, self.next_seq - 1)
        progressed = False
        while self.unacked and self.unacked[0][0] <= self.acked:
            self.unacked.popleft()
            progressed = True
        if progressed:
            self.last_sent_ns = now_ns

    def retransmit_due(self, now_ns: int, rto_ns: int) -> bool:
        return bool(self.unacked) and now_ns - self.last_sent_ns >= rto_ns

    def retransmit(self, now_ns: int) -> tuple[int, list[tuple[M, int]]]:
        """Everything unacknowledged again, from the oldest."""
        if not self.unacked:
            return 0, []
        self.last_sent_ns = now_ns
        self.retransmissions += 1
        return self.unacked[0][0], [(m, s) for _, m, s in self.unacked]

    def deadline(self, rto_ns: int) -> int | None:
        return self.last_sent_ns + rto_ns if self.unacked else None


class InChannel:
    """The receiving side: accepts the next expected numbers only."""

    def __init__(self) -> None:
        self.expected = 1
        self.dropped = 0  # out-of-order or duplicate messages dropped

    @property
    def acked(self) -> int:
        return self.expected - 1

    def accept(self, first_seq: int, messages: Sequence[Any]) -> list[Any]:
        """The new in-order messages of a datagram (duplicates and gaps dropped)."""
        if first_seq <= 0 or not messages:
            return []
        start = self.expected - first_seq
        if start < 0:  # a gap: something before was lost; wait for the retransmission
            self.dropped += len(messages)
            return []
        fresh = list(messages[start:])
        self.dropped += min(start, len(messages))
        self.expected += len(fresh)
        return fresh


def pack(first_seq: int, batch: Sequence[tuple[M, int]], budget: int) -> list[tuple[int, list[M]]]:
    """Split numbered messages into datagram-sized runs: [(first seq, messages)]. A message larger
    than the budget goes alone."""
    runs: list[tuple[int, list[M]]] = []
    current: list[M] = []
    seq, used, start = first_seq, 0, first_seq
    for message, size in batch:
        if current and used + size > budget:
            runs.append((start, current))
            current, used, start = [], 0, seq
        current.append(message)
        used += size + 3
        seq += 1
    if current:
        runs.append((start, current))
    return runs
