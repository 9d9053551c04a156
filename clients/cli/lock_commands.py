"""`skyge lock ...`: cluster locks and elections (the seed's buluos and test_d_lock)."""
from __future__ import annotations

import argparse

from skyge.clients.cli.arguments import ranged_int
from skyge.clients.cli.rpc import show
from skyge.v1 import lock_pb2 as pb

DAEMON = "lock"
SLOT_COUNT, LOCKS_PER_SLOT = 2048, 8192


def register(groups: argparse._SubParsersAction) -> None:
    slot, lock = ranged_int(0, SLOT_COUNT - 1), ranged_int(0, LOCKS_PER_SLOT - 1)
    group = groups.add_parser("lock", help="cluster-wide locks (buluos)")
    group.set_defaults(daemon_target=DAEMON)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    inspect = commands.add_parser("inspect", help="holder and waiters of one lock")
    inspect.add_argument("-s", "--slot", type=slot, required=True, help="slot 0-2047")
    inspect.add_argument("-l", "--lock", type=lock, required=True, help="lock 0-8191")
    inspect.set_defaults(handler=lambda args, out: show(args, out, DAEMON, "Inspect",
                         pb.InspectRequest(slot=args.slot, lock=args.lock)))
    commands.add_parser("list", help="locks in use").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "ListLocks", pb.ListLocksRequest()))
    commands.add_parser("authority", help="which node grants locks, and quorum").set_defaults(
        handler=lambda args, out: show(args, out, DAEMON, "GetAuthority", pb.GetAuthorityRequest()))
