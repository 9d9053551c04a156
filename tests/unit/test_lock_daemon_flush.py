"""The lock daemon's flushes (daemon.py): the asyncio loop flushes what its own requests produced
itself, the protocol thread flushes what its turns produced, and both hand session events to the
loop through one queue. Checked here with a real `Node` and `Links` and a fake socket and
protocol thread: events keep the order they were taken in whichever thread took them, the lease
file is written before a grant reaches a stream, datagrams still leave from the loop, and the
protocol thread is woken only when a loop flush brings its next wake-up forward."""
from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from skyge.services.common.clock import boot_ns
from skyge.services.common.paths import NodePaths
from skyge.services.common.runner import DaemonContext
from skyge.services.lock.daemon import FIELDS, LockApp
from skyge.services.lock.links import Links
from skyge.services.lock.protocol import MS, Node
from skyge.services.lock.server import SessionItem
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp

SESSION = 7


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send(self, domain: int, payload: bytes, all_paths: bool, now: int) -> None:
        self.sent.append((domain, payload))


class FakeProtocol:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def make_app(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> tuple[LockApp, Node]:
    config: dict[str, Any] = {field.name: field.default for field in FIELDS}
    config["insecure"] = True
    ctx = DaemonContext(name="lock", paths=NodePaths.at(tmp_path), config=config,
                        args=argparse.Namespace(ips=None), logger=logging.getLogger("test"),
                        started_unix_ns=0)
    app = LockApp(ctx)
    now = boot_ns()
    node = Node(1, app.instance, netid=1000, timing=app.timing, store=app.store,
                expected_nodes=3, now_ns=now, wall_ns=app.wall_ns)
    app._loop = loop
    app.node, app.links = node, Links(node)
    app.sock = FakeSocket()  # type: ignore[assignment]
    app.protocol = FakeProtocol()  # type: ignore[assignment]
    return app, node


def granted(lock: int, valid_until: int = 0) -> lp.SessionEvent:
    return lp.SessionEvent(granted=lp.Granted(slot=600, lock=lock, fencing_token=lock,
                                              valid_until_boot_ns=valid_until))


def released(lock: int) -> lp.SessionEvent:
    return lp.SessionEvent(released=lp.Released(slot=600, lock=lock))


def drain_queue(queue: asyncio.Queue[SessionItem]) -> list[SessionItem]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_events_keep_their_order_whichever_thread_took_them(tmp_path: Path) -> None:
    async def main() -> list[SessionItem]:
        app, node = make_app(tmp_path, asyncio.get_running_loop())
        queue: asyncio.Queue[SessionItem] = asyncio.Queue()
        app.queues[SESSION] = queue

        def protocol_turn(lock: int) -> None:  # what the protocol thread's turn does
            with app.lock:
                node.events.append((SESSION, granted(lock)))
                app._flush(boot_ns(), thread=True)

        # the thread takes a grant; before the loop runs the drain it asked for, the loop's own
        # flush takes a release, then the thread takes another grant
        thread = threading.Thread(target=protocol_turn, args=(1,))
        thread.start()
        thread.join()
        with app.lock:
            node.events.append((SESSION, released(1)))
        app.flush_soon()
        app.flush_soon()  # one flush for every request of a loop turn
        thread = threading.Thread(target=protocol_turn, args=(2,))
        thread.start()
        thread.join()
        for _ in range(5):
            await asyncio.sleep(0)
        return drain_queue(queue)

    items = asyncio.run(main())
    assert items == [granted(1), released(1), granted(2)]


def test_the_lease_file_is_written_before_a_grant_is_delivered(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    async def main() -> None:
        app, node = make_app(tmp_path, asyncio.get_running_loop())
        deliver = app._deliver

        def deliver_and_look(produced: Any) -> None:
            on_file = int(app.ctx.paths.lease_file.read_text())
            seen.extend((event.WhichOneof("event"), on_file) for _, event in produced.events)
            deliver(produced)

        app._deliver = deliver_and_look  # type: ignore[method-assign]
        until = boot_ns() + 600 * MS
        for thread in (True, False):
            with app.lock:
                node.member.connected, node.member.lease_until = True, until
                node.events.append((SESSION, granted(1, until)))
                if thread:
                    app._flush(boot_ns(), thread=True)
            if not thread:
                app.flush_soon()
            for _ in range(3):
                await asyncio.sleep(0)
            until += 100 * MS  # a renewal moved the lease on

    asyncio.run(main())
    assert [kind for kind, _ in seen] == ["granted", "granted"]
    first, second = seen[0][1], seen[1][1]
    assert first > 0 and second == first + 100 * MS  # the file already said so


def test_a_loop_flush_sends_the_datagrams_and_wakes_the_thread_only_when_due_sooner(
        tmp_path: Path) -> None:
    async def main() -> tuple[int, int, int]:
        app, node = make_app(tmp_path, asyncio.get_running_loop())
        assert app.links is not None
        protocol: FakeProtocol = app.protocol  # type: ignore[assignment]
        sock: FakeSocket = app.sock  # type: ignore[assignment]
        now = boot_ns()
        app._thread_wake_at = now + 40 * MS  # where the thread's last turn left it
        with app.lock:
            node.want_tick(now + 100 * MS)  # later than the thread's: no wake
        app.flush_soon()
        await asyncio.sleep(0)
        quiet = protocol.wakes
        with app.lock:
            node.want_tick(now + 10 * MS)  # a timeout sooner than the thread's wake-up
        app.flush_soon()
        await asyncio.sleep(0)
        woken = protocol.wakes
        app.links.instances[2] = 1  # the peer's instance is known: data may go
        with app.lock:
            node.out_data.append((2, pp.PeerData(release=pp.PeerRelease(
                term=1, session_id=SESSION, name=pp.PeerLockName(slot=600, lock=1)))))
        app.flush_soon()
        await asyncio.sleep(0)
        return quiet, woken, len(sock.sent)

    quiet, woken, sent = asyncio.run(main())
    assert (quiet, woken, sent) == (0, 1, 1)
