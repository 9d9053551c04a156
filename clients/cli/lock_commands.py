"""`skyge lock ...`: cluster locks and elections (the seed's buluos and test_d_lock).

    skyge lock test -s 600 -l 100       hold a lock until Ctrl+C (the seed's test_d_lock)
    skyge lock inspect -s 600 -l 100    holder and waiters of one lock
    skyge lock list                     locks in use
    skyge lock authority                which node grants, and the quorum rule in force
    skyge lock campaign -g GROUP -c ME  run for leader until Ctrl+C
    skyge lock observe -g GROUP         follow a group's leader
    skyge lock expected N               set the number of nodes the quorum is computed over
    skyge lock peers                    the daemon's election, lease and link state
"""
from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

from skyge.clients.cli.arguments import ranged_int
from skyge.clients.cli.output import CommandFailed, Output, UsageError
from skyge.clients.cli.rpc import StreamReader, node_client, show, to_dict

if TYPE_CHECKING:
    from skyge.v1 import lock_pb2 as pb

DAEMON = "lock"
SLOT_COUNT, LOCKS_PER_SLOT = 2048, 8192
RELEASE_WAIT_S = 3.0


def _pb() -> ModuleType:
    """lock_pb2, imported when a command runs: protobuf is too slow to load for `--help`."""
    from skyge.v1 import lock_pb2
    return lock_pb2


def _fail_text(reason: int) -> str:
    """Why the lock was not taken, from a Failed event's reason."""
    pb = _pb()
    names = {pb.FAIL_TIMEOUT: "timed out", pb.FAIL_BUSY: "the lock is held",
             pb.FAIL_NO_QUORUM: "no quorum", pb.FAIL_INVALID: "invalid request"}
    return names.get(reason, "failed")


def _lost_text(reason: int) -> str:
    """Why a held lock was lost, from a Lost event's reason."""
    pb = _pb()
    names = {pb.LOST_NO_QUORUM: "this node lost quorum", pb.LOST_NODE_LEFT: "node left",
             pb.LOST_AUTHORITY_CHANGE: "authority change"}
    return names.get(reason, "lost")


def _authority_text(data: dict[str, Any]) -> str:
    authority = data.get("authority") or {}
    who = f"node {authority.get('netid')}.{authority.get('domain')}" if authority else "none"
    return (f"authority: {who} (term {data.get('term')})\n"
            f"quorum: {'yes' if data.get('has_quorum') else 'NO'} - {data.get('quorum_rule')}\n"
            f"expected votes: {data.get('expected_votes')}, members: "
            f"{' '.join(str(d) for d in data.get('member_domains', [])) or '-'}")


def _lock_text(data: dict[str, Any]) -> str:
    holder = data.get("holder")
    lines = [f"lock {data['slot']}/{data['lock']} ({data['order'].removeprefix('WAIT_').lower()})"]
    if holder:
        lines.append(f"  holder: session {holder['session_id']} on node "
                     f"{holder['node']['domain']} ({holder['label'] or '-'}, pid "
                     f"{holder['client_pid']}), token {holder['fencing_token']}")
    else:
        lines.append("  holder: -")
    for index, waiter in enumerate(data.get("waiters", []), 1):
        extra = f", priority {waiter['priority']}" if waiter.get("priority") else ""
        lines.append(f"  waiter {index}: session {waiter['session_id']} on node "
                     f"{waiter['node']['domain']} ({waiter['label'] or '-'}{extra})")
    return "\n".join(lines)


def _list_text(data: dict[str, Any]) -> str:
    locks = data.get("locks", [])
    return "\n".join(_lock_text(lock) for lock in locks) if locks else "no lock in use"


# -- the test tool ---------------------------------------------------------------------------------


def _until_none(requests: queue.Queue[Any]) -> Iterator[Any]:
    """What is put on `requests`, until None: a stream's request iterator. gRPC runs it on a
    thread of its own, so it refers to nothing but the queue."""
    while (request := requests.get()) is not None:
        yield request


class _Session:
    """A Session stream driven from this thread: requests through a queue, events read by a
    StreamReader (`next()` as StreamReader.next). `close()` before the command returns."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.client = node_client(args)
        self.requests: queue.Queue[pb.SessionRequest | None] = queue.Queue()
        self.events = StreamReader(self.client.stub(DAEMON).Session(_until_none(self.requests)))

    def send(self, **kwargs: Any) -> None:
        self.requests.put(_pb().SessionRequest(**kwargs))

    def next(self, timeout: float | None) -> Any:
        return self.events.next(timeout)

    def close(self) -> None:
        self.requests.put(None)  # ends the request iterator, and gRPC's thread running it
        self.events.close()
        self.client.close()


def lock_test(args: argparse.Namespace, out: Output) -> int:
    """Hold a lock until interrupted, as the seed's test_d_lock (`-s SLOT -l LOCK`)."""
    import grpc

    from skyge.clients.connect import describe_rpc_error
    pb = _pb()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    pid = os.getpid()
    label = (args.label or f"skyge lock test on {socket.gethostname()}")[:64]
    session = _Session(args)
    target = {"slot": args.slot, "lock": args.lock}
    started = time.monotonic()
    holding = False
    status = 0
    try:
        session.send(open=pb.Open(label=label, client_pid=pid))
        session.send(acquire=pb.Acquire(slot=args.slot, lock=args.lock, timeout_ms=args.timeout_ms,
                                        try_only=args.try_only, priority=args.priority))
        hold_until = None
        while True:
            if stop.is_set() or (hold_until is not None and time.monotonic() >= hold_until):
                break
            event = session.next(0.1)
            if event is False:
                continue
            if event is None:
                raise CommandFailed("the lock daemon ended the session")
            if isinstance(event, grpc.RpcError):
                raise CommandFailed(describe_rpc_error(event, DAEMON,
                                                       session.client.target(DAEMON), "Session"))
            kind = event.WhichOneof("event")
            data = {"event": kind, "pid": pid, **to_dict(getattr(event, kind))}
            if kind == "opened":
                out.event(data, None)
            elif kind == "queued":
                out.event(data, f"{pid} process waiting for lock {args.slot}/{args.lock}" +
                          (f" (place {event.queued.position})" if event.queued.position else ""))
            elif kind == "granted":
                holding = True
                data["waited_ms"] = round((time.monotonic() - started) * 1000, 3)
                out.event(data, f"{pid} process get lock (slot {args.slot}, lock {args.lock}, "
                                f"fencing token {event.granted.fencing_token})")
                if args.hold is not None:
                    hold_until = time.monotonic() + args.hold
            elif kind == "failed":
                out.event(data, f"{pid} process did not get the lock: "
                                f"{_fail_text(event.failed.reason)}"
                                f"{': ' + event.failed.detail if event.failed.detail else ''}")
                status = 1
                return status
            elif kind == "lost":
                holding = False
                out.event(data, f"{pid} process lost the lock: "
                                f"{_lost_text(event.lost.reason)}"
                                f"{': ' + event.lost.detail if event.lost.detail else ''}")
                status = 1
                return status
        # interrupted (Ctrl+C / SIGTERM) or hold time over: give the lock back, hand it on
        if _release(session, args):
            out.event({"event": "released", "pid": pid, **target},
                      f"{pid} process released lock {args.slot}/{args.lock}"
                      if holding else f"{pid} process stopped waiting")
        return status
    finally:
        session.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- a command under a lock (like flock) ----------------------------------------------------------

#: a command whose hold may end is killed this long before the hold's deadline
RUN_MARGIN_NS = 50_000_000
#: SIGTERM to the command, then SIGKILL after this long (Ctrl+C, SIGTERM to skyge)
RUN_STOP_GRACE_S = 5.0


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def lock_run(args: argparse.Namespace, out: Output) -> int:
    """Run a command while holding a lock (like flock). The command gets SKYGE_FENCING_TOKEN,
    SKYGE_LOCK_SLOT and SKYGE_LOCK; its exit status is ours. If the hold ends (Lost, the lock
    daemon gone, or no renewal before the deadline) the command's process group is killed at
    once and we exit 1: nobody else may hold the lock while it runs."""
    import grpc

    from skyge.clients.connect import describe_rpc_error
    from skyge.services.common.clock import boot_ns
    pb = _pb()
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        raise UsageError("lock run: a command is required after --, e.g. "
                         "skyge lock run -s 600 -l 1 -- /usr/local/bin/backup")
    interrupted: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: interrupted.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    session = _Session(args)
    proc: subprocess.Popen[bytes] | None = None
    label = (args.label or f"skyge lock run {args.command[0]}")[:64]
    valid_until = 0
    try:
        session.send(open=pb.Open(label=label, client_pid=os.getpid()))
        session.send(acquire=pb.Acquire(slot=args.slot, lock=args.lock,
                                        timeout_ms=args.timeout_ms, try_only=args.try_only,
                                        priority=args.priority))
        while True:
            if interrupted:
                if proc is None:
                    return 128 + interrupted[0]
                _kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(RUN_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait()
                _release(session, args)
                return 128 + interrupted[0]
            if proc is not None and proc.poll() is not None:
                _release(session, args)
                return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
            if proc is not None and boot_ns() >= valid_until - RUN_MARGIN_NS:
                _kill_group(proc, signal.SIGKILL)
                raise CommandFailed(f"lock {args.slot}/{args.lock}: no renewal before the hold's "
                                    f"deadline: the command was killed")
            event = session.next(0.02)
            if event is False:
                continue
            if event is None or isinstance(event, grpc.RpcError):
                if proc is not None:
                    _kill_group(proc, signal.SIGKILL)
                detail = ("the session ended" if event is None else describe_rpc_error(
                    event, DAEMON, session.client.target(DAEMON), "Session"))
                raise CommandFailed(f"lock {args.slot}/{args.lock}: {detail}"
                                    f"{': the command was killed' if proc is not None else ''}")
            kind = event.WhichOneof("event")
            if kind == "granted":
                valid_until = event.granted.valid_until_boot_ns
                env = dict(os.environ, SKYGE_FENCING_TOKEN=str(event.granted.fencing_token),
                           SKYGE_LOCK_SLOT=str(args.slot), SKYGE_LOCK=str(args.lock))
                try:
                    proc = subprocess.Popen(args.command, env=env, start_new_session=True)
                except OSError as error:
                    _release(session, args)
                    raise CommandFailed(f"cannot run {args.command[0]}: "
                                        f"{error.strerror or error}") from None
            elif kind == "renewed":
                valid_until = max(valid_until, event.renewed.valid_until_boot_ns)
            elif kind == "failed":
                raise CommandFailed(f"lock {args.slot}/{args.lock} not taken: "
                                    f"{_fail_text(event.failed.reason)}"
                                    f"{': ' + event.failed.detail if event.failed.detail else ''}")
            elif kind == "lost":
                if proc is not None:
                    _kill_group(proc, signal.SIGKILL)
                raise CommandFailed(f"lock {args.slot}/{args.lock} lost: "
                                    f"{_lost_text(event.lost.reason)}: the command "
                                    f"was killed")
    finally:
        session.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _release(session: _Session, args: argparse.Namespace) -> bool:
    """Give the lock back and wait (briefly) until the daemon says so; whether it did."""
    import grpc
    session.send(release=_pb().Release(slot=args.slot, lock=args.lock))
    deadline = time.monotonic() + RELEASE_WAIT_S
    while time.monotonic() < deadline:
        event = session.next(0.1)
        if event is None or isinstance(event, grpc.RpcError):
            return False
        if event is not False and event.WhichOneof("event") == "released":
            return True
    return False


# -- elections ----------------------------------------------------------------------------------


def _leader_text(data: dict[str, Any]) -> str:
    if not data.get("leader"):
        return f"group {data['group']}: no leader"
    node = data.get("leader_node") or {}
    mine = " (this candidate)" if data.get("elected") else ""
    return (f"group {data['group']}: leader {data['leader']}{mine} on node "
            f"{node.get('netid')}.{node.get('domain')}, term {data['term']}")


def _leader_stream(args: argparse.Namespace, out: Output, rpc: str, request: Any) -> int:
    import grpc

    from skyge.clients.connect import describe_rpc_error
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    with node_client(args) as client:
        events = StreamReader(getattr(client.stub(DAEMON), rpc)(request))
        try:
            while not stop.is_set():
                event = events.next(0.1)
                if event is False:
                    continue
                if event is None:
                    return 0
                if isinstance(event, grpc.RpcError):
                    if event.code() == grpc.StatusCode.CANCELLED:
                        return 0
                    message = describe_rpc_error(event, DAEMON, client.target(DAEMON), rpc)
                    if event.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        raise UsageError(message)
                    raise CommandFailed(message)
                data = to_dict(event)
                out.event(data, _leader_text(data))
            return 0
        finally:
            events.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _peers(args: argparse.Namespace, out: Output) -> int:
    import grpc

    from skyge.clients.connect import describe_rpc_error
    from skyge.v1 import lock_peer_pb2, lock_peer_pb2_grpc
    with node_client(args) as client:
        stub = lock_peer_pb2_grpc.LockPeerStub(client.channel(DAEMON))
        try:
            reply = stub.GetPeerState(lock_peer_pb2.GetPeerStateRequest(), timeout=args.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise CommandFailed(
                    "skyge-lock on this node keeps its locks in etcd (lock.cfg backend = "
                    "\"etcd\"): it has no peer links or election of its own; `skyge lock "
                    "authority` shows its quorum, `etcdctl endpoint status` etcd's") from None
            raise CommandFailed(describe_rpc_error(error, DAEMON, client.target(DAEMON),
                                                   "GetPeerState")) from None
    out.result(to_dict(reply))
    return 0


SLOT = ranged_int(0, SLOT_COUNT - 1)
LOCK = ranged_int(0, LOCKS_PER_SLOT - 1)


def _session_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a command that takes one lock in a session (test, run)."""
    parser.add_argument("-s", "--slot", type=SLOT, required=True,
                        help="slot 0-2047 (0-511 random, 512-1023 fifo, 1024-1535 stack, "
                             "1536-2047 priority)")
    parser.add_argument("-l", "--lock", type=LOCK, required=True, help="lock 0-8191")
    parser.add_argument("-p", "--priority", type=ranged_int(-2**31, 2**31 - 1), default=0,
                        help="waiter priority (slots 1536-2047 only; higher first)")
    parser.add_argument("-t", "--timeout-ms", type=ranged_int(0, 2**32 - 1), default=0,
                        help="give up after waiting this long, ms (default 0: wait forever)")
    parser.add_argument("-n", "--try", dest="try_only", action="store_true",
                        help="do not wait: fail (exit 1) at once if the lock is held")
    parser.add_argument("--label", default=None, help="label shown by inspect (max 64 chars)")


def register(groups: argparse._SubParsersAction) -> None:
    slot, lock = SLOT, LOCK
    group = groups.add_parser("lock", help="cluster-wide locks (buluos)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    test = commands.add_parser(
        "test", help="hold a lock until Ctrl+C, as the seed's test_d_lock",
        description="Ask for a lock and wait; print '<pid> process get lock' when granted; "
                    "Ctrl+C (or SIGTERM) releases it and hands it to the next waiter.")
    _session_arguments(test)
    test.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                      help="release after holding this long (default: until Ctrl+C)")
    test.set_defaults(handler=lock_test)

    run = commands.add_parser(
        "run", help="run a command while holding a lock (like flock)",
        description="Wait for the lock, run COMMAND with SKYGE_FENCING_TOKEN (and SKYGE_LOCK_SLOT, "
                    "SKYGE_LOCK) in its environment, give the lock back when it exits; exit with "
                    "its status. If the hold ends early the command is killed and the exit "
                    "status is 1. Example: skyge lock run -s 600 -l 1 -- /usr/local/bin/backup")
    _session_arguments(run)
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                     help="the command and its arguments")
    run.set_defaults(handler=lock_run)

    inspect = commands.add_parser("inspect", help="holder and waiters of one lock")
    inspect.add_argument("-s", "--slot", type=slot, required=True, help="slot 0-2047")
    inspect.add_argument("-l", "--lock", type=lock, required=True, help="lock 0-8191")
    inspect.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "Inspect",
                         _pb().InspectRequest(slot=args.slot, lock=args.lock), _lock_text))
    listing = commands.add_parser("list", help="locks in use")
    listing.add_argument("-s", "--slot", type=slot, default=None, help="only this slot")
    listing.set_defaults(handler=lambda args, out: show(
        args, out, DAEMON, "ListLocks",
        _pb().ListLocksRequest() if args.slot is None else _pb().ListLocksRequest(slot=args.slot),
        _list_text))
    commands.add_parser("authority", help="which node grants locks, and quorum").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "GetAuthority",
                                       _pb().GetAuthorityRequest(), _authority_text))
    expected = commands.add_parser(
        "expected", help="set the number of nodes the quorum is computed over",
        description="Like corosync-quorumtool -e: after nodes were removed for good, lower the "
                    "expected number of nodes so the survivors keep a majority.")
    expected.add_argument("votes", type=ranged_int(1, 64), help="expected nodes, 1-64")
    expected.set_defaults(handler=lambda args, out: show(
        args, out, DAEMON, "SetExpectedVotes",
        _pb().SetExpectedVotesRequest(expected_votes=args.votes), _authority_text))
    campaign = commands.add_parser("campaign", help="run for leader of a group until Ctrl+C")
    campaign.add_argument("-g", "--group", required=True, help="election group")
    campaign.add_argument("-c", "--candidate", default=None,
                          help="who runs (default: hostname and pid)")
    campaign.set_defaults(handler=lambda args, out: _leader_stream(
        args, out, "Campaign", _pb().CampaignRequest(
            group=args.group, candidate=args.candidate or f"{socket.gethostname()}:{os.getpid()}")))
    observe = commands.add_parser("observe", help="follow a group's leader")
    observe.add_argument("-g", "--group", required=True, help="election group")
    observe.set_defaults(handler=lambda args, out: _leader_stream(
        args, out, "Observe", _pb().ObserveRequest(group=args.group)))
    commands.add_parser("peers", help="election, lease and link state of the daemon").set_defaults(
        handler=_peers)
