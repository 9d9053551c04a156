"""The simulator's model of a loaded host (services/lock/sim.py) and its history checker: clocks
that drift, stalls before sending, client calls that wait for a stalled daemon, long-tailed
delays, the holder's reaction time, and ownership that ends at Lost + reaction or valid_until."""
from __future__ import annotations

import pytest

from skyge.services.lock.protocol import MS, Timing
from skyge.services.lock.sim import (Clock, Record, SimCluster, check_history, find_overlaps,
                                     timing_from_text)
from tests.unit.lock_timing import COMPACT

NAME = (600, 1)


def settled(size: int = 3, **kwargs) -> SimCluster:
    cluster = SimCluster(size, timing=COMPACT, **kwargs)
    for _ in range(50):
        cluster.run(20 * MS)
        if cluster.active_authority() is not None:
            return cluster
    raise AssertionError("no authority after 1 s")


def granted_within(cluster: SimCluster, session: int, bound_ns: int) -> Record:
    end = cluster.now + bound_ns
    while cluster.now < end and not cluster.of(session, "granted"):
        cluster.run(1 * MS)
    found = cluster.of(session, "granted")
    assert found, cluster.of(session)
    return found[0]


# ---- the model


@pytest.mark.parametrize("rate_ppm", [-5000, 0, 7])
def test_a_drifting_clock_first_shows_a_reading_at_the_instant_when_gives(rate_ppm):
    clock = Clock(123_456_789, rate_ppm)
    for reading in range(clock.read(0), clock.read(0) + 5 * MS, 999_983):
        at = clock.when(reading)
        assert clock.read(at) >= reading > clock.read(at - 1)


def test_drifting_clocks_elect_one_authority_and_hand_a_lock_over():
    cluster = settled(3, seed=4, drift_ppm=COMPACT.drift_ppm // 2)
    assert {cluster.local(d) - cluster.now for d in (1, 2, 3)} != {0}  # own clocks, not global
    holder, waiter = cluster.open(2), cluster.open(3)
    cluster.acquire(holder, NAME)
    granted_within(cluster, holder, 20 * MS)
    cluster.acquire(waiter, NAME)
    cluster.run(5 * MS)
    cluster.release(holder, NAME)
    granted_within(cluster, waiter, 20 * MS)
    assert check_history(cluster.records) == []


def test_a_stall_before_sending_holds_what_the_step_produced():
    """The acquire's step runs (the member computes its datagram) and then the daemon is
    descheduled: the request leaves, and the grant comes back, only after the stall."""
    cluster = settled(3, seed=5)
    session = cluster.open(2)
    cluster.stall(2, 30 * MS, before_send=True)
    asked = cluster.now
    cluster.acquire(session, NAME)
    assert cluster.stall_log[-1] == (2, asked, asked + 30 * MS, True)
    assert granted_within(cluster, session, 50 * MS).time >= asked + 30 * MS


def test_client_calls_wait_for_a_stalled_daemon():
    cluster = settled(3, seed=6)
    session = cluster.open(3)
    cluster.stall(3, 25 * MS)
    asked = cluster.now
    cluster.acquire(session, NAME)
    assert granted_within(cluster, session, 50 * MS).time >= asked + 25 * MS


def test_a_long_tail_delays_some_datagrams_within_its_cap():
    cluster = SimCluster(2, seed=7, tail_fraction=1.0, tail_scale_ns=1 * MS,
                         tail_cap_ns=50 * MS)
    cluster.queue.clear()
    for _ in range(2000):
        cluster._send(1, 2, b"", 1)
    delays = sorted(at - cluster.now for at, *_ in cluster.queue)
    assert delays[-1] <= cluster.latency + cluster.jitter + 50 * MS
    assert delays[len(delays) // 2] < 2 * MS < delays[-len(delays) // 20]  # a tail, p95 > 2 ms


def test_a_lost_hold_is_owned_for_the_reaction_time_after():
    cluster = settled(3, seed=8, reaction_ns=(7 * MS, 7 * MS))
    session = cluster.open(2)
    cluster.acquire(session, NAME)
    granted_within(cluster, session, 20 * MS)
    cluster.stop(2)
    cluster.run(5 * MS)
    assert [r.reaction for r in cluster.of(session, "lost")] == [7 * MS]


# ---- the checker


def rec(time_ms: float, session: int, kind: str, *, token: int = 0, until_ms: float = 0,
        reaction_ms: float = 0) -> Record:
    return Record(int(time_ms * MS), session >> 56 or 1, session, kind,
                  NAME if kind in ("granted", "lost", "releasing") else None, token,
                  valid_until=int(until_ms * MS), reaction=int(reaction_ms * MS))


A, B = 1 << 56, 2 << 56


def test_a_grant_during_the_old_holders_reaction_is_two_owners():
    history = [rec(0, A, "granted", token=1), rec(10, A, "lost", reaction_ms=5),
               rec(12, B, "granted", token=2)]
    [overlap] = find_overlaps(history, until=20 * MS)
    assert (overlap.start, overlap.end, overlap.to_the_end) == (12 * MS, 15 * MS, False)
    assert check_history([*history[:2], rec(15, B, "granted", token=2)]) == []
    [overlap] = find_overlaps(history[:1] + history[2:], until=20 * MS)  # A never stopped
    assert (overlap.length, overlap.to_the_end) == (8 * MS, True)


def test_a_crash_during_the_reaction_after_lost_ends_the_ownership_at_once():
    """A holder told Lost stops within its reaction time, unless its node is powered off first
    (a fence): then it holds nothing from that instant (simulation seed 5111 with a fence
    command flagged a grant at the instant of the fence as an overlap)."""
    history = [rec(0, A, "granted", token=1), rec(10, A, "lost", reaction_ms=5),
               rec(12, A, "ended"), rec(12, B, "granted", token=2)]
    assert check_history(history) == []
    broken = [*history[:2], rec(12, A, "ended", reaction_ms=8), rec(12, B, "granted", token=2)]
    [overlap] = find_overlaps(broken, until=20 * MS)  # the Lost's reaction ends first
    assert (overlap.start, overlap.end) == (12 * MS, 15 * MS)


def test_ownership_ends_at_valid_until_and_renewals_extend_it():
    history = [rec(0, A, "granted", token=1, until_ms=10), rec(12, B, "granted", token=2),
               rec(20, A, "lost")]
    assert check_history(history) == []  # A stopped at 10 (its deadline), before B
    renewed = [*history[:1], rec(5, A, "renewed", until_ms=30), *history[1:]]
    [overlap] = find_overlaps(renewed)
    assert (overlap.start, overlap.end) == (12 * MS, 20 * MS)


def test_a_grant_that_arrives_expired_makes_no_owner():
    """A Granted held back (a stall before sending) until past its valid_until: its holder
    never owns, so neither its overlap nor its older token counts."""
    history = [rec(0, B, "granted", token=5), rec(20, A, "granted", token=3, until_ms=15)]
    assert check_history(history) == []
    assert check_history([*history[:1], rec(20, A, "granted", token=3)]) != []


def test_excused_freezes_still_work_for_daemons_without_a_deadline():
    history = [rec(0, A, "granted", token=1), rec(12, B, "granted", token=2), rec(30, A, "lost")]
    assert check_history(history) != []
    assert check_history(history, excused=[(1, 5 * MS, 30 * MS)]) == []


def test_timing_reads_from_text_with_units_and_refuses_unknown_fields():
    timing = timing_from_text("beat=20ms, idle_beat_ns=50000000,vote_lease=0.4s,hold_lease=600ms")
    assert (timing.beat_ns, timing.idle_beat_ns, timing.vote_lease_ns, timing.hold_lease_ns) == (
        20 * MS, 50 * MS, 400 * MS, 600 * MS)
    assert timing_from_text("") == Timing()
    with pytest.raises(ValueError, match="no Timing field"):
        timing_from_text("lease=1ms")


# ---- a property of the protocol that only a deadline gives


def test_a_frozen_holder_is_past_its_valid_until_before_its_lock_passes_on():
    """A holder's lock daemon freezes (whatever the phase of its beats and renewals), its clock
    slow and the authority's fast by the drift the protocol allows: the lock passes on only
    after the holder's valid_until (default Timing: ~50 ms after, early_ns + takeover_guard)."""
    timing = Timing()
    half = timing.drift_ppm // 2
    margins = []
    for phase_ms in range(0, 200, 10):
        cluster = SimCluster(3, seed=9, timing=timing,
                             clocks={1: Clock(10**9, half), 3: Clock(7 * 10**9, -half)})
        cluster.run(1000 * MS)
        holder, waiter = cluster.open(3), cluster.open(2)
        cluster.acquire(holder, NAME)
        cluster.run(10 * MS)
        cluster.acquire(waiter, NAME)
        cluster.run((100 + phase_ms) * MS)
        cluster.stall(3, 3 * timing.hold_lease_ns)
        granted = granted_within(cluster, waiter, 2 * timing.hold_lease_ns)
        told = cluster.of(holder, "granted") + cluster.of(holder, "renewed")
        margins.append(granted.time - max(r.valid_until for r in told))
        assert check_history(cluster.records) == []
    assert min(margins) > 0, [m / MS for m in margins]


@pytest.mark.parametrize("fault", ["crash", "kill"])
def test_members_beat_only_the_authority_and_still_elect_a_successor(fault):
    """An established authority rounds every authority beat (50 ms) and says whom it heard
    (`live_bits`); its members answer on every path, which stands in for their idle beats, and
    do not beat each other: a member's datagrams do not grow with the cluster. The relayed
    liveness still tells every member who may succeed: the authority's crash (or its lock daemon
    killed, the node still in the membership) is followed by the lowest member as the new
    authority once the vote promises end, and it grants."""
    timing = Timing()
    cluster = SimCluster(6, timing=timing, seed=5)
    for _ in range(100):
        cluster.run(20 * MS)
        if cluster.active_authority() is not None:
            break
    authority = cluster.active_authority()
    assert authority is not None
    cluster.run(timing.peer_beat_ns)  # the greetings of a new instance are over
    sent: dict[tuple[int, int], int] = {}
    send = cluster._send

    def counting(src: int, dst: int, data: bytes, path: int) -> None:
        sent[src, dst] = sent.get((src, dst), 0) + 1
        send(src, dst, data, path)

    cluster._send = counting  # type: ignore[method-assign]
    cluster.run(2000 * MS)
    members = [d for d in range(1, 7) if d != authority]
    rounds = 2.0 * 2 * 1e9 / timing.authority_beat_ns  # 2 s on 2 paths
    to_authority = [sent.get((m, authority), 0) for m in members]
    from_authority = [sent.get((authority, m), 0) for m in members]
    to_members = [sent.get((m, other), 0) for m in members for other in members if other != m]
    assert all(rounds * 0.9 <= n <= rounds * 1.2 for n in to_authority), to_authority
    assert all(rounds * 0.9 <= n <= rounds * 1.2 for n in from_authority), from_authority
    assert max(to_members) == 0, to_members
    getattr(cluster, fault)(authority)
    failed = cluster.now
    for _ in range(100):
        cluster.run(5 * MS)
        if cluster.active_authority() not in (None, authority):
            break
    successor = cluster.active_authority()
    assert successor == min(members)
    assert cluster.now - failed <= timing.vote_lease_ns + 150 * MS, (cluster.now - failed) / MS
    session = cluster.open(members[-1] if members[-1] != successor else members[0])
    cluster.acquire(session, NAME)
    granted_within(cluster, session, 2000 * MS)
    assert check_history(cluster.records) == []


def _settled_at_defaults(size: int) -> SimCluster:
    cluster = SimCluster(size, timing=Timing(), seed=5)
    cluster.run(1000 * MS)
    assert cluster.active_authority() is not None
    return cluster


def test_a_member_cut_from_the_authority_alone_hears_the_others_and_runs_for_nothing():
    """Lock datagrams between the authority (1) and member 3 are lost, the membership unchanged.
    Node 2, relayed by the authority, still beats node 3, which the authority does not vouch
    for: node 3 votes quietly for node 2 rather than propose term after term, and the authority
    keeps its term through the heal."""
    cluster = _settled_at_defaults(3)
    assert cluster.active_authority() == 1
    cluster.blocked = {(1, 3), (3, 1)}
    cluster.run(5000 * MS)
    assert cluster.node(3).highest_term == cluster.node(2).seen_term == 1  # nothing proposed
    cluster.blocked = set()
    cluster.run(2000 * MS)
    assert cluster.active_authority() == 1 and cluster.node(1).auth.term == 1


def test_a_node_that_stops_running_says_so_to_every_peer_despite_the_relay():
    """A restarted node 1 whose view lacks the authority (2) for 500 ms runs for authority in
    vain, then follows node 2 (and takes its relay) and stops running: every peer hears that at
    once, none keeps counting it a candidate (nor beating it every idle beat)."""
    cluster = _settled_at_defaults(5)
    cluster.kill(1)
    cluster.run(1500 * MS)
    assert cluster.active_authority() == 2
    cluster.boot(1)
    cluster.set_view(1, {1, 3, 4, 5}, at=cluster.now + 26 * MS)
    cluster.set_view(1, {1, 2, 3, 4, 5}, at=cluster.now + 500 * MS)
    cluster.run(1000 * MS)
    assert cluster.active_authority() == 2 and cluster.node(1).cand_term == 0
    assert [cluster.node(d).peers[1].candidate_term for d in (3, 4, 5)] == [0, 0, 0]


@pytest.mark.parametrize("beat_ms", [20, 60, 100])
def test_every_beat_the_config_allows_still_makes_a_timing(beat_ms):
    """lock.cfg beat_ms takes 1-1000: an established authority never rounds more often than
    the beat, and a beat longer than the idle beat is still a valid timing."""
    timing = Timing(beat_ns=beat_ms * MS)
    assert timing.authority_beat_ns == max(beat_ms * MS, 50 * MS)
