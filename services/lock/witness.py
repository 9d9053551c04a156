"""The lock daemon's side of the two-node witness (`skyge-witness`, services/witness/).

A lone node of two (the other out of its view, or its lock daemon silent) acts alone only while
the witness's vote is its own. The vote is counted from before the request was sent, shrunk by the
clock-rate allowance, and the request asks the witness to keep the vote from the other node for
this node's `switch_ns` after it ends: the time its holds may still be counted (see
services/witness/core.py). A node that holds no lock asks only after a delay, so the side that
runs the services keeps them when both ask at once.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from skyge.services.common.clock import boot_ns
from skyge.services.common.tls import Credentials, channel_factory
from skyge.v1 import common_pb2
from skyge.v1 import witness_pb2 as wp
from skyge.v1 import witness_pb2_grpc

from .protocol import MS

if TYPE_CHECKING:
    from .protocol import Node

TIMEOUT_S = 0.5

logger = logging.getLogger("skyge.lock")


class Witness:
    """Asks one witness for this node's vote; logs each change of answer once."""

    def __init__(self, address: str, holdover_ns: int, priority_delay_s: float,
                 tls: Credentials | None = None) -> None:
        self.address = address
        self._make_channel = channel_factory(tls)
        self.holdover_ms = -(-holdover_ns // MS)
        self.priority_delay_s = priority_delay_s
        self.held = False  # the last answer granted the vote
        self._channel: grpc.aio.Channel | None = None
        self._said = ""

    def priority_wait_s(self, node: Node) -> float:
        """How long to wait before asking: a node that holds no lock (and not the vote) lets
        the other side ask first."""
        if self.held or node.member.counts()[0]:
            return 0.0
        return self.priority_delay_s

    async def vote(self, node: Node, netid: int) -> int:
        """Ask for (or renew) the vote: the boot-clock time until which it is this node's, or 0
        when it is not (refused, or the witness did not answer)."""
        if self._channel is None:
            self._channel = self._make_channel(self.address)
        stub = witness_pb2_grpc.WitnessStub(self._channel)
        sent = boot_ns()
        try:
            reply = await stub.Vote(wp.VoteRequest(
                node=common_pb2.NodeId(netid=netid, domain=node.domain),
                holdover_ms=self.holdover_ms), timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            self.held = False
            self._say(logging.WARNING, f"two-node rule: the witness {self.address} did not "
                      f"answer ({error.code().name}): this lone node does not act alone")
            return 0
        if not reply.granted:
            self.held = False
            self._say(logging.WARNING, f"two-node rule: the witness refused its vote "
                      f"({reply.detail}): this lone node does not act alone")
            return 0
        self.held = True
        self._say(25, f"two-node rule: the witness {self.address} gave this node its vote "
                  f"({reply.valid_ms} ms, renewed while lone)")
        valid_ns = reply.valid_ms * MS
        return sent + valid_ns - valid_ns * node.timing.drift_ppm // 1_000_000

    def _say(self, level: int, text: str) -> None:
        if text != self._said:
            self._said = text
            logger.log(level, "%s", text)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
