"""Between a `Node` and the wire: datagrams in, datagrams out (plain Python, no sockets).

`Links.receive` checks a datagram's netid, addressee and sender instance, hands the beat to the
node and the data, through the peer's `InChannel`, in order. `Links.flush` turns what the node
wants to send into `PeerDatagram`s: a beat goes on every path (it is small and the cheapest way to
learn which paths work); data goes, numbered, on the best path, and again after `rto_ns` until
acknowledged. Acknowledgements ride on whatever goes back, or alone after `ack_delay_ns`.

The daemon (`peer.py`) serializes and sends; the simulator in the tests does the same through a
virtual network, so both run this exact code.
"""
from __future__ import annotations

from dataclasses import dataclass

from skyge.v1 import lock_peer_pb2 as pp

from .protocol import MS, Node
from .channel import InChannel, OutChannel, pack

__all__ = ["Links", "Outgoing"]

US = 1_000


@dataclass(frozen=True)
class Outgoing:
    """One datagram to send: to `domain`, on every path (`all_paths`) or the best one.

    Rounds and periodic beats go on every path (they also tell which paths work); answers,
    confirmations and data on the best one (retransmissions on every path)."""

    domain: int
    datagram: pp.PeerDatagram
    all_paths: bool


class Links:
    """The data channels of one node with each peer, and datagram assembly."""

    def __init__(self, node: Node, *, rto_ns: int = 15 * MS, ack_delay_ns: int = 2 * MS,
                 budget_bytes: int = 1200) -> None:
        self.node = node
        self.rto_ns, self.ack_delay_ns, self.budget = rto_ns, ack_delay_ns, budget_bytes
        self.out: dict[int, OutChannel[pp.PeerData]] = {}
        self.inn: dict[int, InChannel] = {}
        self.instances: dict[int, int] = {}
        self.ack_owed: dict[int, int] = {}  # domain -> since
        self.dropped = 0

    def _reset(self, domain: int, instance: int) -> None:
        self.instances[domain] = instance
        self.out[domain] = OutChannel()
        self.inn[domain] = InChannel()
        self.ack_owed.pop(domain, None)

    def receive(self, datagram: pp.PeerDatagram, now: int) -> None:
        node = self.node
        frm = datagram.from_domain
        if datagram.netid != node.netid or datagram.to_domain != node.domain or \
                not 1 <= frm <= 64 or frm == node.domain:
            self.dropped += 1
            return
        if not node.on_peer_instance(frm, datagram.from_instance, now):
            self.dropped += 1
            return
        if self.instances.get(frm) != datagram.from_instance:
            self._reset(frm, datagram.from_instance)
        current = datagram.to_instance in (0, node.instance)
        if current and datagram.data_ack:
            self.out[frm].ack(datagram.data_ack, now)
        # data first: a member's report must be known before the beat that follows it
        if datagram.data:
            if datagram.to_instance != node.instance:
                self.dropped += 1  # meant for an earlier instance of this daemon (or unknown)
            else:
                for message in self.inn[frm].accept(datagram.first_seq, datagram.data):
                    node.on_data(frm, message, now)
                self.ack_owed.setdefault(frm, now)
        if datagram.HasField("beat"):
            node.on_beat(frm, datagram.beat, now)

    def _channel(self, domain: int) -> OutChannel[pp.PeerData]:
        if domain not in self.out:
            self._reset(domain, self.instances.get(domain, 0))
        return self.out[domain]

    def _datagram(self, domain: int) -> pp.PeerDatagram:
        node = self.node
        datagram = pp.PeerDatagram(netid=node.netid, from_domain=node.domain,
                                   from_instance=node.instance, to_domain=domain,
                                   to_instance=self.instances.get(domain, 0))
        inn = self.inn.get(domain)
        if inn is not None and inn.acked:
            datagram.data_ack = inn.acked
        self.ack_owed.pop(domain, None)
        return datagram

    def flush(self, now: int) -> list[Outgoing]:
        """Everything to send now (the node's beats and data, retransmissions, owed acks)."""
        node = self.node
        beats: dict[int, list[tuple[pp.Beat, bool]]] = {}
        for domain, beat, everywhere in node.out_beats:
            beats.setdefault(domain, []).append((beat, everywhere))
        node.out_beats.clear()
        for domain, data in node.out_data:
            self._channel(domain).push(data, data.ByteSize())
        node.out_data.clear()
        out: list[Outgoing] = []
        for domain in sorted(set(beats) | {d for d, c in self.out.items() if c.has_pending()}):
            channel = self._channel(domain)
            runs: list[tuple[int, list[pp.PeerData]]] = []
            if self.instances.get(domain):  # data only once the peer's instance is known
                first, batch = channel.take(now)
                if batch:
                    runs = pack(first, batch, self.budget)
            for first, messages in runs:  # data before beats (see receive)
                datagram = self._datagram(domain)
                datagram.first_seq = first
                datagram.data.extend(messages)
                out.append(Outgoing(domain, datagram, False))
            for beat, everywhere in beats.get(domain, ()):
                datagram = self._datagram(domain)
                datagram.beat.CopyFrom(beat)
                out.append(Outgoing(domain, datagram, everywhere))
        for domain, channel in self.out.items():
            if channel.retransmit_due(now, self.rto_ns) and self.instances.get(domain):
                first, batch = channel.retransmit(now)
                for run_first, messages in pack(first, batch, self.budget):
                    datagram = self._datagram(domain)
                    datagram.first_seq = run_first
                    datagram.data.extend(messages)
                    out.append(Outgoing(domain, datagram, True))
        for domain, since in list(self.ack_owed.items()):
            if now - since >= self.ack_delay_ns:
                out.append(Outgoing(domain, self._datagram(domain), False))
        return out

    def deadline(self) -> int | None:
        """When `flush` has something to do again (retransmission or owed ack)."""
        times = [t for c in self.out.values() if (t := c.deadline(self.rto_ns)) is not None]
        times += [since + self.ack_delay_ns for since in self.ack_owed.values()]
        return min(times) if times else None

    def unacked(self, domain: int) -> int:
        channel = self.out.get(domain)
        return len(channel.unacked) if channel else 0
