"""A self-pipe that wakes a thread blocked in epoll (the heartbeat and lock protocol loops)."""
from __future__ import annotations

import contextlib
import os


class WakePipe:
    """Register `read_fd` with the thread's epoll; `wake` from any thread makes it readable,
    `drain` (in the thread) empties it."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake is pending anyway
            os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
