"""A self-pipe that wakes a thread blocked in epoll (the heartbeat and lock protocol loops)."""
from __future__ import annotations

import contextlib
import os


class WakePipe:
    """Register `read_fd` with the thread's epoll; `wake` from any thread makes it readable,
    `drain` (in the thread) empties it."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        #: a wake is written and not drained yet: more wakes until the drain add nothing (the
        #: thread's next turn sees every change made before them), so under load requests
        #: cost no syscall and no thread switch each
        self._pending = False

    def wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        with contextlib.suppress(BlockingIOError):  # full: a wake is pending anyway
            os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        """Empty the pipe; call before the turn that handles what the wakes were for."""
        self._pending = False  # first: a wake after this point writes again
        try:
            while os.read(self.read_fd, 64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
