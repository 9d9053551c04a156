"""HeartbeatCore driven as a cluster: several cores, a fake clock and an in-memory network with
per-path cuts and loss. No sockets, no threads, no sleeping: simulated seconds run in
milliseconds."""
from __future__ import annotations

import heapq
import itertools
import random
import re
from dataclasses import replace

import pytest

from skyge.services.heartbeat import wire
from skyge.services.heartbeat.core import (DEFAULT_MAX_RECEIVE_RATE_PER_S, DomainConflict,
                                           HeartbeatConfig, HeartbeatCore, LeaveReason, LinkDown,
                                           LinkUp, MemberJoined, MemberLeft, PathConfig, Timing)
from skyge.services.heartbeat.detector import FixedDetector
from skyge.services.heartbeat.names import NamePublished, NameTableFull, NameWithdrawn, Scope

MS = 1_000_000
SECOND = 1_000 * MS
KEY = b"cluster-key-for-tests-0123456789"
NETID = 1000
TIMING = Timing()
START_NS = 7_000 * SECOND  # a monotonic clock is never 0 at start


def address(path: int, domain: int) -> str:
    return f"10.{path}.0.{domain}"


def config(domain: int, *, netid: int = NETID, key: bytes | None = KEY, paths=(1, 2),
           static: bool = False, domains=(1, 2, 3), timing: Timing = TIMING) -> HeartbeatConfig:
    return HeartbeatConfig(
        netid=netid, domain=domain, key=key, timing=timing, grpc_ports={"heartbeat": 7100},
        paths={p: PathConfig(nic=f"eth{p - 1}", addresses=(address(p, domain),),
                             peers=tuple(address(p, d) for d in domains if d != domain)
                             if static else ())
               for p in paths})


class Network:
    """Delivers datagrams between cores after `latency_ns`, honouring cuts and loss per path.

    A broadcast (destination None) reaches every other node on that path, a unicast the node
    owning the address. `cut` holds (domain, path) pairs whose NIC is unplugged."""

    def __init__(self, seed: int = 1, latency_ns: int = 100_000) -> None:
        self.now = START_NS
        self.latency_ns = latency_ns
        self.cores: dict[int, HeartbeatCore] = {}
        self.events: dict[int, list] = {}
        self.cut: set[tuple[int, int]] = set()
        self.loss: dict[int, float] = {}
        self.tap: list[tuple[int, int, bytes]] = []  # (from domain, path, data): for replays
        self.drop_if = lambda sender, path, data: False
        self._rng = random.Random(seed)
        self._queue: list[tuple[int, int, int, int, bytes, str]] = []
        self._order = 0

    def add(self, cfg: HeartbeatConfig, incarnation: int | None = None) -> HeartbeatCore:
        core = HeartbeatCore(cfg, incarnation or self.now, self.now)
        self.cores[cfg.domain] = core
        self.events[cfg.domain] = []  # a new process: a new event log
        return core

    def remove(self, domain: int) -> None:
        """The process dies: no LEAVE, its datagrams in flight still arrive."""
        del self.cores[domain]

    def send(self, sender: int, out) -> None:
        for path, destination, data in out:
            self.tap.append((sender, path, data))
            if (sender, path) in self.cut or self.drop_if(sender, path, data):
                continue
            targets = ([d for d in self.cores if d != sender] if destination is None
                       else [int(destination.rsplit(".", 1)[1])])
            for target in targets:
                if self._rng.random() < self.loss.get(path, 0.0):
                    continue
                self._order += 1
                heapq.heappush(self._queue, (self.now + self.latency_ns, self._order, target,
                                             path, data, address(path, sender)))

    def inject(self, target: int, path: int, data: bytes) -> list:
        return self.cores[target].receive(path, data, "192.0.2.66", self.now)

    def run(self, duration_ns: int) -> None:
        until = self.now + duration_ns
        while True:
            wake = min(core.next_wakeup_ns() for core in self.cores.values())
            if self._queue:
                wake = min(wake, self._queue[0][0])
            if wake > until:
                self.now = until
                return
            self.now = max(self.now, wake)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, target, path, data, source = heapq.heappop(self._queue)
                if target in self.cores and (target, path) not in self.cut:
                    self.events[target] += self.cores[target].receive(path, data, source,
                                                                      self.now)
            for domain, core in list(self.cores.items()):
                if core.next_wakeup_ns() <= self.now:
                    self.events[domain] += core.tick(self.now)
                    self.send(domain, core.outgoing(self.now))

    def member_domains(self, domain: int) -> set[int]:
        return {m.node.domain for m in self.cores[domain].members()}

    def of_type(self, domain: int, kind) -> list:
        return [e for e in self.events[domain] if isinstance(e, kind)]


def cluster(n: int = 3, **kwargs) -> Network:
    net = Network()
    for domain in range(1, n + 1):
        net.add(config(domain, domains=tuple(range(1, n + 1)), **kwargs))
        net.run(3 * MS)  # staggered starts
    net.run(300 * MS)
    return net


def link(core: HeartbeatCore, peer: int, path: int):
    return next(link for link in core.links() if link.peer.domain == peer and link.path == path)


def assert_views_monotonic(net: Network) -> None:
    for events in net.events.values():
        views = [e.view_id for e in events if isinstance(e, (MemberJoined, MemberLeft))]
        assert views == sorted(set(views)), views


def test_three_nodes_converge_with_seed_style_link_names():
    net = cluster()
    for domain, core in net.cores.items():
        assert [m.node.domain for m in core.members()] == [1, 2, 3]
        assert [m.local for m in core.members()] == [d == domain for d in (1, 2, 3)]
        assert all(link.up for link in core.links()) and len(core.links()) == 4
        assert core.view_id == 3  # itself, then two joins
    texts = {e.text for e in net.of_type(3, LinkUp)}
    assert texts == {"Established link <1000.3:eth0-1000.2:eth0>",
                     "Established link <1000.3:eth1-1000.2:eth1>",
                     "Established link <1000.3:eth0-1000.1:eth0>",
                     "Established link <1000.3:eth1-1000.1:eth1>"}
    member = next(m for m in net.cores[1].members() if m.node.domain == 2)
    assert member.info.paths[1].addresses == ("10.2.0.2",)
    assert dict(member.info.grpc_ports) == {"heartbeat": 7100}
    assert not any(net.cores[d].stats.dropped for d in net.cores)


def test_interval_follows_cluster_size_and_rtt_is_measured():
    net = cluster()
    expected = max(Timing().min_interval_ns, -(-4 * SECOND // DEFAULT_MAX_RECEIVE_RATE_PER_S))
    assert net.cores[1].interval_ns == expected  # 4 links at 600/s: 6.67 ms
    rtt = link(net.cores[1], 2, 1).rtt_ns
    assert rtt is not None and abs(rtt - 2 * net.latency_ns) < 10_000


def test_interval_keeps_counting_failed_links_for_a_while_but_not_departed_ones():
    from skyge.services.heartbeat.core import RECENT_LINK_NS
    four_links = -(-4 * SECOND // DEFAULT_MAX_RECEIVE_RATE_PER_S)
    net = cluster()
    net.remove(3)  # crash: its links expire, yet they count for the interval for a while
    net.run(1 * SECOND)
    assert net.member_domains(1) == {1, 2}
    assert net.cores[1].interval_ns == four_links
    net.run(RECENT_LINK_NS)
    assert net.cores[1].interval_ns == Timing().min_interval_ns  # 2 links: 3.3 ms -> 5 ms floor
    net = cluster()
    net.send(3, net.cores[3].leave(net.now))  # a clean leave stops counting at once
    net.remove(3)
    net.run(50 * MS)
    assert net.cores[1].interval_ns == Timing().min_interval_ns


def test_a_lone_node_sends_at_the_discovery_interval_until_it_hears_a_peer():
    net = Network()
    lone = net.add(config(1))
    net.run(2 * SECOND)
    assert lone.interval_ns == Timing().discovery_interval_ns
    net.add(config(2))
    net.run(300 * MS)
    assert net.member_domains(1) == {1, 2}
    assert lone.interval_ns == Timing().min_interval_ns  # 2 links at 600/s: the 5 ms floor


def test_a_storm_of_expiring_links_does_not_shrink_the_interval():
    net = cluster(6)
    ten_links = -(-10 * SECOND // DEFAULT_MAX_RECEIVE_RATE_PER_S)
    assert net.cores[1].interval_ns == ten_links
    net.loss = {1: 0.9, 2: 0.9}  # receivers falling behind look like this: most datagrams late
    net.run(2 * SECOND)
    assert any(net.of_type(1, LinkDown))
    assert net.cores[1].interval_ns == ten_links


def test_one_path_cut_downs_only_that_link():
    net = cluster()
    views = {d: c.view_id for d, c in net.cores.items()}
    net.cut.add((3, 1))
    net.run(200 * MS)
    for domain in (1, 2):
        core = net.cores[domain]
        assert net.member_domains(domain) == {1, 2, 3}
        assert core.view_id == views[domain]
        assert not link(core, 3, 1).up and link(core, 3, 2).up
        down = net.of_type(domain, LinkDown)
        assert [e.text for e in down] == [f"Lost link <1000.{domain}:eth0-1000.3:eth0>"]
    assert not any(net.of_type(d, MemberLeft) for d in net.cores)
    net.cut.clear()
    net.run(100 * MS)
    assert link(net.cores[1], 3, 1).up
    assert link(net.cores[1], 3, 1).loss_percent == 0.0  # the outage is not counted as loss


def test_both_paths_cut_member_leaves_within_bound_and_rejoins():
    net = cluster()
    interval = net.cores[1].interval_ns
    bound = FixedDetector.DEFAULT_MISSES * interval + net.latency_ns
    cut_at = net.now
    net.cut |= {(3, 1), (3, 2)}
    net.run(200 * MS)
    for domain in (1, 2):
        [left] = net.of_type(domain, MemberLeft)
        assert left.member.node.domain == 3 and left.reason is LeaveReason.FAILED
        assert left.at_ns - cut_at <= bound
        assert net.member_domains(domain) == {1, 2}
    assert net.member_domains(3) == {3}
    assert {e.member.node.domain for e in net.of_type(3, MemberLeft)} == {1, 2}
    net.cut.clear()
    net.run(200 * MS)
    for domain in net.cores:
        assert net.member_domains(domain) == {1, 2, 3}
    assert_views_monotonic(net)
    assert net.cores[1].view_id == 5


def test_detection_time_median_for_three_nodes():
    """The issue's target: a crash seen by every peer in ~30 ms median."""
    delays = []
    for trial in range(10):
        net = cluster()
        net.run(trial * 700_000)  # crash at different phases of the heartbeat
        crash_at = net.now
        net.remove(3)
        net.run(100 * MS)
        delays += [net.of_type(d, MemberLeft)[0].at_ns - crash_at for d in (1, 2)]
    delays.sort()
    assert delays[len(delays) // 2] <= 30 * MS and delays[-1] <= 35 * MS


def test_restart_is_a_new_incarnation_never_silent():
    net = cluster()
    old = net.cores[3].incarnation
    net.remove(3)
    net.run(1 * MS)
    net.add(config(3), incarnation=old + 1)
    net.run(100 * MS)
    for domain in (1, 2):
        left = net.of_type(domain, MemberLeft)
        joined = [e for e in net.of_type(domain, MemberJoined) if e.member.node.domain == 3]
        assert [e.reason for e in left] == [LeaveReason.RESTARTED]
        assert [e.member.incarnation for e in joined] == [old, old + 1]
        assert joined[-1].view_id == left[0].view_id + 1
        member = next(m for m in net.cores[domain].members() if m.node.domain == 3)
        assert member.incarnation == old + 1
    assert_views_monotonic(net)


def test_clean_leave_is_immediate_and_final():
    net = cluster()
    net.drop_if = lambda sender, path, data: sender == 3 and path == 1  # held up on the way
    net.run(net.cores[3].interval_ns + 1)
    net.drop_if = lambda sender, path, data: False
    late = [data for sender, path, data in net.tap if sender == 3 and path == 1][-1]
    left_at = net.now
    net.send(3, net.cores[3].leave(net.now))
    assert net.cores[3].outgoing(net.now + SECOND) == []
    net.run(1 * MS)
    for domain in (1, 2):
        [left] = net.of_type(domain, MemberLeft)
        assert left.reason is LeaveReason.CLEAN
        assert left.at_ns - left_at <= net.latency_ns
        assert net.member_domains(domain) == {1, 2}
    # A heartbeat of that life arriving late (sent before the LEAVE) does not bring it back.
    assert net.inject(1, 1, late) == []
    assert net.member_domains(1) == {1, 2}
    assert net.cores[1].stats.dropped["after_leave"] >= 1


def test_hostile_and_broken_datagrams_are_counted_and_change_nothing():
    net = cluster()
    core = net.cores[1]
    view, members, accepted = core.view_id, net.member_domains(1), core.stats.accepted
    stranger = HeartbeatCore(config(5, netid=1001), START_NS, net.now)
    wrong_key = HeartbeatCore(config(5, key=b"not-the-cluster-key-000000000000"), START_NS, net.now)
    no_key = HeartbeatCore(config(5, key=None), START_NS, net.now)
    for intruder in (stranger, wrong_key, no_key):
        for path, _, data in intruder.outgoing(net.now):
            assert net.inject(1, path, data) == []
    # Each sent its start ANNOUNCE and a heartbeat on both paths.
    assert core.stats.dropped["foreign_netid"] == 4
    assert core.stats.dropped["bad_signature"] == 4
    assert core.stats.dropped["unsigned"] == 4
    # Replays of genuine datagrams of node 2 (already seen) are refused.
    captured = [(path, data) for sender, path, data in net.tap if sender == 2][-40:]
    for path, data in captured:
        assert net.inject(1, path, data) == []
    assert core.stats.dropped["replayed"] == len(captured)
    # Fuzz: random bytes and mutations of genuine datagrams never raise nor change membership.
    rng = random.Random(7)
    genuine = [data for _, _, data in net.tap[-200:]]
    for _ in range(3000):
        data = bytearray(rng.choice(genuine))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        assert net.inject(1, rng.choice((1, 2)), bytes(data)) == []
        assert net.inject(1, 1, rng.randbytes(rng.randrange(0, 120))) == []
    assert core.view_id == view and net.member_domains(1) == members
    assert core.stats.accepted == accepted
    net.run(100 * MS)  # and the real members are still there
    assert net.member_domains(1) == members and core.view_id == view


def test_replay_of_a_dead_node_does_not_resurrect_it():
    net = cluster()
    captured = [(path, data) for sender, path, data in net.tap if sender == 3]
    net.remove(3)
    net.run(100 * MS)
    assert net.member_domains(1) == {1, 2}
    dropped_before = net.cores[1].stats.dropped["replayed"]
    for path, data in captured:
        net.inject(1, path, data)
    assert net.member_domains(1) == {1, 2}
    assert net.cores[1].stats.dropped["replayed"] - dropped_before == len(captured)


def test_old_incarnation_replayed_after_restart_is_refused():
    net = cluster()
    old_life = [(path, data) for sender, path, data in net.tap if sender == 3][-20:]
    old = net.cores[3].incarnation
    net.remove(3)
    net.add(config(3), incarnation=old + 1)
    net.run(100 * MS)
    view = net.cores[1].view_id
    for path, data in old_life:
        assert net.inject(1, path, data) == []
    assert net.cores[1].view_id == view
    member = next(m for m in net.cores[1].members() if m.node.domain == 3)
    assert member.incarnation == old + 1


def test_straggler_of_the_old_life_on_a_path_that_missed_the_restart_is_refused():
    net = cluster()
    old = net.cores[3].incarnation
    net.cut.add((3, 2))
    net.remove(3)
    net.add(config(3), incarnation=old + 1)
    net.run(100 * MS)  # node 1 saw the new life on path 1 only
    assert next(m for m in net.cores[1].members() if m.node.domain == 3).incarnation == old + 1
    straggler = wire.encode(wire.Kind.HEARTBEAT, NETID, 3, 2, old, 10**6, net.now, 6 * MS, KEY)
    assert net.inject(1, 2, straggler) == []
    assert net.cores[1].stats.dropped["replayed"] == 1
    assert [link.path for link in net.cores[1].links()
            if link.peer.domain == 3 and link.up] == [1]


def test_looped_back_and_domain_conflict():
    net = cluster()
    own = [data for sender, path, data in net.tap if sender == 1 and path == 1][-1]
    assert net.inject(1, 1, own) == []
    assert net.cores[1].stats.dropped["looped_back"] == 1
    twin = HeartbeatCore(config(1), START_NS + 5, net.now)
    out = twin.outgoing(net.now)
    events = net.inject(1, 1, out[0][2]) + net.inject(1, 2, out[1][2])
    assert [type(e) for e in events] == [DomainConflict]  # reported once per impostor
    assert net.cores[1].stats.dropped["domain_conflict"] == 2
    wrong_path = out[0][2]  # a path-1 datagram read on path 2: NICs cabled to the wrong network
    assert net.inject(2, 2, wrong_path) == []
    assert net.cores[2].stats.dropped["path_mismatch"] == 1


def test_lossy_path_never_costs_membership():
    net = cluster()
    net.loss[1] = 0.20
    net.run(20 * SECOND)
    for domain in net.cores:
        assert not net.of_type(domain, MemberLeft)
        assert net.member_domains(domain) == {1, 2, 3}
    loss = link(net.cores[1], 2, 1).loss_percent
    assert 10 < loss < 30
    assert link(net.cores[1], 2, 2).loss_percent == 0.0


def test_names_propagate_node_scope_stays_and_departed_names_vanish():
    net = cluster()
    core = net.cores[1]
    shared, events = core.publish(0, 3695083521, 3695083521, Scope.CLUSTER, b"node-1",
                                  now_ns=net.now, unix_ns=1_700_000_000 * SECOND)
    assert [type(e) for e in events] == [NamePublished]
    private, _ = core.publish(1, 1, 1, Scope.NODE, b"local", now_ns=net.now, unix_ns=0)
    net.run(60 * MS)
    for domain in (2, 3):
        names = net.cores[domain].names
        assert names.lookup(0, 3695083521) == [shared]
        assert names.lookup(1) == []
        assert [e.publication for e in net.of_type(domain, NamePublished)] == [shared]
    assert core.names.lookup(1, 1) == [private]
    core.withdraw(shared.publication_id, now_ns=net.now)
    net.run(60 * MS)
    assert net.cores[2].names.lookup(0) == []
    again, _ = core.publish(0, 10, 20, Scope.CLUSTER, b"again", now_ns=net.now, unix_ns=0)
    net.run(60 * MS)
    assert net.cores[3].names.lookup(0, 15) == [again]
    net.remove(1)
    net.run(100 * MS)
    for domain in (2, 3):
        assert net.cores[domain].names.lookup(0) == []
        assert net.of_type(domain, NameWithdrawn)[-1].publication == again


def test_full_name_table_crosses_lossy_paths_in_chunks():
    net = cluster()
    core = net.cores[2]
    for i in range(256):
        core.publish(7, i, i, Scope.CLUSTER, bytes([i]) * 256, now_ns=net.now, unix_ns=i)
    with pytest.raises(NameTableFull) as refused:  # a quota (RESOURCE_EXHAUSTED), not a bad value
        core.publish(7, 999, 999, Scope.CLUSTER, b"x", now_ns=net.now, unix_ns=0)
    assert refused.value.field == "scope"
    net.loss[1] = net.loss[2] = 0.2
    net.run(1 * SECOND)
    for domain in (1, 3):
        names = net.cores[domain].names.lookup(7)
        assert [p.lower for p in names] == list(range(256))
        assert names[255].value == bytes([255]) * 256
    assert all(len(data) <= wire.MAX_DATAGRAM_BYTES for _, _, data in net.tap)


def test_lost_announce_is_repaired_by_want_before_the_refresh():
    net = Network()
    net.drop_if = lambda sender, path, data: (sender == 3 and data[3] == wire.Kind.ANNOUNCE
                                              and net.now < START_NS + 60 * MS)
    for domain in (1, 2, 3):
        net.add(config(domain))
    net.run(200 * MS)  # the 1 s refresh has not come yet
    for domain in (1, 2):
        assert net.member_domains(domain) == {1, 2, 3}
    assert net.cores[1].stats.dropped == {}


def test_static_peer_list_sends_unicast_to_each_peer():
    net = Network()
    for domain in (1, 2, 3):
        net.add(config(domain, static=True))
    net.run(100 * MS)
    assert all(net.member_domains(d) == {1, 2, 3} for d in net.cores)
    core = net.cores[1]
    sent_before = core.stats.paths[1].sent
    out = core.outgoing(core.next_wakeup_ns())
    assert {(path, dest) for path, dest, _ in out} == {
        (1, "10.1.0.2"), (1, "10.1.0.3"), (2, "10.2.0.2"), (2, "10.2.0.3")}
    assert core.stats.paths[1].sent - sent_before == 2  # one per destination


def test_broadcast_when_no_peer_list():
    core = HeartbeatCore(config(1), START_NS, START_NS)
    out = core.outgoing(START_NS)
    assert {dest for _, dest, _ in out} == {None}
    kinds = [wire.decode(data, KEY, NETID).kind for _, _, data in out]
    assert kinds == [wire.Kind.ANNOUNCE, wire.Kind.ANNOUNCE, wire.Kind.HEARTBEAT,
                     wire.Kind.HEARTBEAT]
    # Alone, it slows down toward the discovery interval, by at most 1.5x per heartbeat.
    assert core.next_wakeup_ns() == START_NS + int(Timing().min_interval_ns * 1.5)
    assert core.outgoing(START_NS + 1) == []
    assert core.stats.paths[2].sent == 2
    assert core.stats.paths[2].sent_bytes == sum(len(data) for path, _, data in out if path == 2)


def _peer_datagram(domain: int, path: int, kind: wire.Kind, sequence: int, now: int,
                   interval_ns: int) -> bytes:
    payload = b""
    if kind is wire.Kind.ANNOUNCE:
        info = wire.NodeInfo((wire.PathInfo(1, "eth0"), wire.PathInfo(2, "eth1")))
        payload = wire.encode_announce_payloads(info, 0, [])[0]
    return wire.encode(kind, NETID, domain, path, 99, sequence, now, interval_ns, KEY, payload)


def test_interval_grows_gradually_to_keep_64_nodes_cheap():
    now = START_NS
    core = HeartbeatCore(config(1), 1, now)
    for domain in range(2, 65):
        for path in (1, 2):
            core.receive(path, _peer_datagram(domain, path, wire.Kind.ANNOUNCE, 1, now,
                                              500 * MS), None, now)
    assert len(core.members()) == 64
    target = -(-126 * SECOND // DEFAULT_MAX_RECEIVE_RATE_PER_S)  # 126 links at 600/s: 210 ms
    announced = []
    for sequence in range(2, 22):
        now = core.next_wakeup_ns()
        for domain in range(2, 65):  # the peers stay alive
            for path in (1, 2):
                core.receive(path, _peer_datagram(domain, path, wire.Kind.HEARTBEAT, sequence,
                                                  now, 500 * MS), None, now)
        assert core.tick(now) == []
        for _, _, data in core.outgoing(now):
            d = wire.decode(data, KEY, NETID)
            if d.kind is wire.Kind.HEARTBEAT and d.path == 1:
                announced.append(d.interval_ns)
    assert announced[-1] == -(-target // 1000) * 1000
    assert all(b <= a * 1.5 + 1000 for a, b in itertools.pairwise(announced))
    assert len(set(announced)) > 5  # it ramped, it did not jump


def test_adaptive_detector_is_pluggable():
    from skyge.services.heartbeat.detector import AdaptiveDetector
    net = cluster(timing=Timing(detector=AdaptiveDetector))
    net.remove(3)
    net.run(200 * MS)
    for domain in (1, 2):
        assert [e.reason for e in net.of_type(domain, MemberLeft)] == [LeaveReason.FAILED]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=re.escape("netid: must be 1..1024")):
        config(1, netid=0)
    with pytest.raises(ValueError, match=re.escape("domain: must be 1..64")):
        config(65)
    with pytest.raises(ValueError, match="key: must be at least 16 bytes"):
        config(1, key=b"short")
    with pytest.raises(ValueError, match=re.escape("path: must be 1..8")):
        config(1, paths=(9,))
    with pytest.raises(ValueError, match="peers of path 1"):
        replace(config(1), paths={1: PathConfig(nic="eth0", peers=("node-2",))})
    with pytest.raises(ValueError, match="min_interval_ns"):
        Timing(min_interval_ns=0)
    with pytest.raises(ValueError, match="nic"):
        replace(config(1), paths={1: PathConfig(nic="a very long nic name")})
    core = HeartbeatCore(config(1), 1, START_NS)
    with pytest.raises(ValueError, match="path: 3 is not configured"):
        core.receive(3, b"", None, START_NS)
