"""What a node keeps across restarts (highest term, token floor, expected nodes)."""
from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    """Where a node keeps what must survive restarts (highest term, token floor, expected)."""

    def load(self) -> dict[str, int]: ...

    def save(self, state: dict[str, int]) -> None: ...


class MemoryStore:
    """A Store in memory (tests; a simulated restart keeps the same object)."""

    def __init__(self, state: dict[str, int] | None = None) -> None:
        self.state = dict(state or {})

    def load(self) -> dict[str, int]:
        return dict(self.state)

    def save(self, state: dict[str, int]) -> None:
        self.state = dict(state)
