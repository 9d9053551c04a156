"""The witness daemon: the vote book (core.py) behind a thin gRPC servicer.

It runs on a third machine that both nodes of a two-node cluster reach (the lab runs it in its
gateway), needs no node identity of its own and keeps no state on disk: after a restart it votes
for nobody until every vote it may have given has run out (see core.py).
"""
from __future__ import annotations

import logging

import grpc

from skyge.services.common.clock import boot_ns
from skyge.services.common.config import Field, integer
from skyge.services.common.runner import DaemonApp, DaemonContext
from skyge.v1 import witness_pb2 as pb
from skyge.v1 import witness_pb2_grpc

from .core import MS, VoteBook

SERVICE = "skyge.v1.Witness"
MAX_NETID, MAX_DOMAIN = 1024, 64

FIELDS = (
    Field("vote_ms", integer(100, 60_000), default=1000,
          help="how long a vote lasts unless renewed, ms (nodes renew it every 200 ms)"),
    Field("max_holdover_ms", integer(0, 60_000), default=5000,
          help="the longest hold-over a node may ask for (its hold lease and guards), ms; a "
               "restarted witness votes for nobody for vote_ms + max_holdover_ms"),
)

logger = logging.getLogger("skyge.witness")


def _ms(ns: int) -> int:
    return max(0, -(-ns // MS))  # rounded up: a wait never ends early


class WitnessServicer(witness_pb2_grpc.WitnessServicer):
    def __init__(self, book: VoteBook) -> None:
        self.book = book
        self.holders: dict[int, int] = {}  # netid -> domain last logged as holding the vote

    async def Vote(self, request: pb.VoteRequest,
                   context: grpc.aio.ServicerContext) -> pb.VoteResponse:
        netid, domain = request.node.netid, request.node.domain
        if not 1 <= netid <= MAX_NETID:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"node.netid must be 1 to {MAX_NETID}, got {netid}")
        if not 1 <= domain <= MAX_DOMAIN:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"node.domain must be 1 to {MAX_DOMAIN}, got {domain}")
        try:
            verdict = self.book.vote(netid, domain, request.holdover_ms * MS, boot_ns())
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"holdover_ms: {error}")
        if verdict.granted and self.holders.get(netid) != domain:
            self.holders[netid] = domain
            logger.log(25, "cluster %d: node %d holds the vote", netid, domain)
        elif not verdict.granted and verdict.holder:
            logger.info("cluster %d: node %d refused: %s", netid, domain, verdict.detail)
        return pb.VoteResponse(granted=verdict.granted, valid_ms=verdict.valid_ns // MS,
                               holder_domain=verdict.holder,
                               retry_after_ms=_ms(verdict.retry_after_ns), detail=verdict.detail)

    async def Status(self, request: pb.WitnessStatusRequest,
                     context: grpc.aio.ServicerContext) -> pb.WitnessStatusResponse:
        now = boot_ns()
        clusters = [pb.ClusterVote(netid=netid, holder_domain=vote.holder,
                                   valid_ms=_ms(vote.valid_until_ns - now),
                                   reserved_ms=_ms(vote.reserved_until_ns - now),
                                   granted=vote.granted, refused=vote.refused)
                    for netid, vote in sorted(self.book.clusters.items())]
        return pb.WitnessStatusResponse(clusters=clusters,
                                        startup_hold_ms=_ms(self.book.startup_hold_ns(now)),
                                        vote_ms=self.book.vote_ns // MS)


class WitnessApp(DaemonApp):
    service_names = (SERVICE,)

    def __init__(self, ctx: DaemonContext) -> None:
        self.book = VoteBook(vote_ns=ctx.config["vote_ms"] * MS,
                             max_holdover_ns=ctx.config["max_holdover_ms"] * MS,
                             started_ns=boot_ns())
        logger.log(25, "witness: votes of %d ms; votes for nobody for the first %d ms",
                   ctx.config["vote_ms"], self.book.startup_hold_ns(boot_ns()) // MS)

    def register(self, server: grpc.aio.Server) -> None:
        witness_pb2_grpc.add_WitnessServicer_to_server(WitnessServicer(self.book), server)


def build(ctx: DaemonContext) -> WitnessApp:
    return WitnessApp(ctx)
