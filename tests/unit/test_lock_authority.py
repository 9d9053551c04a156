"""The lock protocol (services/lock/protocol/) on a simulated cluster (services/lock/sim.py):
votes and leases, asymmetric views, crashes, partitions, the two-node rule, recovery, tokens, and
a randomised run with faults whose history is checked."""
from __future__ import annotations

import itertools
import random

import pytest

from skyge.services.lock.protocol import MS, Authority, MemoryStore, Node
from skyge.services.lock.sim import Record, SimCluster, check_history
from skyge.v1 import lock_pb2 as lp
from skyge.v1 import lock_peer_pb2 as pp
from tests.unit.lock_timing import COMPACT

SETTLE = 200 * MS


def settled(size: int = 3, **kwargs) -> SimCluster:
    cluster = SimCluster(size, **{"timing": COMPACT, **kwargs})
    cluster.run(SETTLE)
    assert cluster.active_authority() is not None, "no authority after settling"
    return cluster


def first(cluster: SimCluster, session: int, kind: str) -> Record:
    found = cluster.of(session, kind)
    assert found, f"no {kind} for session {session:x}: {cluster.of(session)}"
    return found[0]


def run_checked(cluster: SimCluster, duration: int, step: int = 1 * MS) -> None:
    """Run, checking at every step that at most one node holds an authority lease."""
    end = cluster.now + duration
    while cluster.now < end:
        cluster.run(step)
        leases = cluster.authorities()
        assert len(leases) <= 1, f"two authorities at {cluster.now}: {leases}"


# ---- election and leases


def test_one_authority_and_everyone_follows_it():
    cluster = settled(3)
    authority = cluster.active_authority()
    assert authority == 1  # the lowest domain
    for domain in (1, 2, 3):
        node = cluster.node(domain)
        assert node.member.authority == 1 and node.member.connected
        assert node.vote_for == 1


def test_asymmetric_views_never_make_two_authorities():
    """1 sees {1,3}, 2 sees {2,3}, 3 sees everyone: lowest-I-see alone would elect 1 and 2."""
    cluster = SimCluster(3, seed=11, timing=COMPACT)
    cluster.set_view(1, {1, 3}, at=0)
    cluster.set_view(2, {2, 3}, at=0)
    cluster.set_view(3, {1, 2, 3}, at=0)
    run_checked(cluster, 400 * MS)
    assert cluster.authorities() == [1]
    sessions = [cluster.open(d) for d in (1, 2, 3)]
    for session in sessions:
        cluster.acquire(session, (600, 1))
    run_checked(cluster, 100 * MS)
    for session in sessions:
        if cluster.of(session, "granted"):
            cluster.release(session, (600, 1))
            run_checked(cluster, 20 * MS)
    assert check_history(cluster.records) == []


def test_flapping_views_keep_one_authority():
    cluster = SimCluster(5, seed=5, timing=COMPACT)
    rng = random.Random(3)
    for _ in range(40):
        for domain in range(1, 6):
            view = {domain} | {d for d in range(1, 6) if rng.random() < 0.7}
            cluster.set_view(domain, view, at=cluster.now + rng.randrange(0, 20 * MS))
        run_checked(cluster, 30 * MS)


def test_a_minority_never_elects():
    cluster = SimCluster(5, seed=2, timing=COMPACT)
    cluster.partition([1, 2], [3, 4, 5])
    run_checked(cluster, 300 * MS)
    assert cluster.authorities() == [3]


def test_vote_lease_outlasts_the_authority_lease():
    timing = COMPACT
    assert timing.vote_lease_counted_ns < timing.vote_lease_ns
    cluster = settled(3)
    authority = cluster.node(1)
    for domain in (2, 3):
        voter = cluster.node(domain)
        assert voter.promise_to == 1 and voter.promise_end >= authority.lease_end


def test_terms_are_persisted_and_grow():
    cluster = settled(3)
    term = cluster.node(1).member.term
    cluster.crash(1)
    cluster.run(SETTLE)
    assert cluster.node(2).member.term > term
    assert cluster.nodes[2].store.state["highest_term"] >= cluster.node(2).member.term


# ---- grants, order, fencing


@pytest.mark.parametrize("slot,expected", [(600, [2, 3, 4]), (1100, [4, 3, 2])])
def test_order_across_nodes(slot, expected):
    cluster = settled(3)
    sessions = {1: cluster.open(1), 2: cluster.open(2), 3: cluster.open(3), 4: cluster.open(2)}
    cluster.acquire(sessions[1], (slot, 7))
    cluster.run(5 * MS)
    for key in (2, 3, 4):
        cluster.acquire(sessions[key], (slot, 7))
        cluster.run(5 * MS)
    order, holder = [], 1
    for _ in range(3):
        cluster.release(sessions[holder], (slot, 7))
        cluster.run(10 * MS)
        holder = next(k for k in (2, 3, 4) if k not in order and
                      cluster.of(sessions[k], "granted"))
        order.append(holder)
    assert order == expected
    assert check_history(cluster.records) == []


def test_try_lock_and_timeout():
    cluster = settled(3)
    a, b, c = cluster.open(2), cluster.open(3), cluster.open(1)
    cluster.acquire(a, (700, 1))
    cluster.run(5 * MS)
    cluster.acquire(b, (700, 1), try_only=True)
    cluster.acquire(c, (700, 1), timeout_ms=30)
    cluster.run(50 * MS)
    assert first(cluster, b, "failed").reason == lp.FAIL_BUSY
    assert first(cluster, c, "failed").reason == lp.FAIL_TIMEOUT
    cluster.release(a, (700, 1))
    cluster.run(10 * MS)
    assert cluster.node(1).auth.table.holder((700, 1)) is None


def test_invalid_requests_fail_at_once():
    cluster = settled(3)
    session = cluster.open(2)
    cluster.acquire(session, (2048, 1))
    cluster.acquire(session, (600, 1), priority=3)
    cluster.acquire(session, (600, 2))
    cluster.run(5 * MS)
    cluster.acquire(session, (600, 2))
    failed = cluster.of(session, "failed")
    assert [r.reason for r in failed] == [lp.FAIL_INVALID] * 3


def test_session_end_passes_locks_on():
    cluster = settled(3)
    a, b = cluster.open(2), cluster.open(3)
    cluster.acquire(a, (600, 3))
    cluster.run(5 * MS)
    cluster.acquire(b, (600, 3))
    cluster.run(5 * MS)
    cluster.close(a)
    cluster.run(10 * MS)
    assert first(cluster, b, "granted").token > first(cluster, a, "granted").token


# ---- failures


def test_holder_node_crash_passes_the_lock_after_the_hold_lease_and_the_guard():
    timing = COMPACT
    cluster = settled(3, seed=4)
    holder, waiter = cluster.open(2), cluster.open(3)
    cluster.acquire(holder, (600, 1))
    cluster.run(3 * MS)
    cluster.acquire(waiter, (600, 1))
    cluster.run(10 * MS)
    crash = cluster.now
    cluster.crash(2)
    cluster.run(200 * MS)
    regrant = first(cluster, waiter, "granted").time - crash
    bound = timing.hold_lease_ns + timing.takeover_guard_ns
    assert bound - timing.idle_beat_ns <= regrant <= bound + 2 * MS, regrant / MS
    assert check_history(cluster.records) == []


def test_authority_crash_keeps_held_locks_and_waiter_order():
    cluster = settled(3, seed=8)
    held = cluster.open(2)  # holds a lock on a surviving node: must keep it
    own = cluster.open(1)  # on the authority: its lock passes on
    waiters = [cluster.open(3), cluster.open(2), cluster.open(3)]
    cluster.acquire(held, (600, 1))
    cluster.acquire(own, (600, 2))
    cluster.run(5 * MS)
    for session in waiters:
        cluster.acquire(session, (600, 2))
        cluster.run(3 * MS)
    crash = cluster.now
    cluster.crash(1)
    cluster.run(200 * MS)
    assert not cluster.of(held, "lost"), "a hold on a surviving node was lost"
    assert cluster.active_authority() == 2
    granted = first(cluster, waiters[0], "granted")
    bound = 45 * MS + COMPACT.takeover_guard_ns
    assert granted.time - crash <= bound, (granted.time - crash) / MS
    for before, after in itertools.pairwise(waiters):
        cluster.release(before, (600, 2))
        cluster.run(10 * MS)
        assert cluster.of(after, "granted"), "fifo order lost across the authority change"
    assert check_history(cluster.records) == []


def test_partition_minority_is_told_lost_before_the_majority_regrants():
    for minority in (1, 3):  # the authority's side, or another node
        cluster = settled(3, seed=minority)
        loser, winner = cluster.open(minority), cluster.open(2)
        cluster.acquire(loser, (600, 4))
        cluster.run(3 * MS)
        cluster.acquire(winner, (600, 4))
        cluster.run(10 * MS)
        cluster.partition([minority], [d for d in (1, 2, 3) if d != minority])
        run_checked(cluster, 300 * MS)
        lost = first(cluster, loser, "lost")
        assert lost.reason == lp.LOST_NO_QUORUM
        granted = first(cluster, winner, "granted")
        assert lost.time < granted.time
        # the minority refuses new work at once
        late = cluster.open(minority)
        cluster.acquire(late, (600, 5))
        cluster.run(5 * MS)
        assert first(cluster, late, "failed").reason == lp.FAIL_NO_QUORUM
        cluster.heal()
        cluster.run(SETTLE)
        assert cluster.node(minority).member.connected
        assert check_history(cluster.records) == []


def test_a_holder_cut_off_briefly_gets_its_lock_again_when_it_asks_again():
    """A node's view shrinks to itself for a moment: its session is told Lost at once (its HA
    stops the service) while the authority keeps the hold until the lease end. When the session
    asks again, it is granted again (a restart in place, no move to the waiter), never refused
    as a duplicate, and never while its earlier hold could still be counted."""
    cluster = settled(3, seed=4)
    holder, waiter = cluster.open(3), cluster.open(2)
    cluster.acquire(holder, (600, 1))
    cluster.run(5 * MS)
    granted = first(cluster, holder, "granted")
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    cluster.set_view(3, {3}, at=cluster.now)
    cluster.run(2 * MS)
    first(cluster, holder, "lost")
    cluster.set_view(3, {1, 2, 3}, at=cluster.now)
    cluster.run(2 * MS)
    cluster.acquire(holder, (600, 1))
    run_checked(cluster, 200 * MS)
    assert not cluster.of(holder, "failed")
    again = cluster.of(holder, "granted")[1]
    assert again.token > granted.token and again.time >= granted.valid_until
    assert not cluster.of(waiter, "granted")
    assert check_history(cluster.records) == []


def test_slow_round_trips_suspend_and_resume_the_same_term():
    """Round trips longer than the vote lease (an overloaded host): the authority cannot renew,
    suspends (grants nothing), and when answers come in time again a quorum for the same term
    lets it resume without a new term or recovery."""
    cluster = settled(3, seed=12)
    term = cluster.node(1).member.term
    cluster.latency = 12 * MS
    run_checked(cluster, 60 * MS)
    assert cluster.authorities() == []
    cluster.latency = 150_000
    run_checked(cluster, 100 * MS)
    assert cluster.node(1).member.term == term and cluster.active_authority() == 1
    assert any("regained" in line for line in cluster.log_of(1))
    session = cluster.open(2)
    cluster.acquire(session, (600, 1))
    cluster.run(5 * MS)
    assert cluster.of(session, "granted")


def test_long_authority_stall_moves_authority_safely():
    cluster = settled(3, seed=13)
    own, other, waiter = cluster.open(1), cluster.open(2), cluster.open(3)
    cluster.acquire(own, (600, 1))
    cluster.acquire(other, (600, 2))
    cluster.run(5 * MS)
    cluster.acquire(waiter, (600, 1))
    cluster.run(5 * MS)
    stalled = cluster.now
    cluster.stall(1, 150 * MS)
    run_checked(cluster, 300 * MS)
    assert cluster.active_authority() == 2
    # a frozen daemon cannot warn its sessions in time (the limit of any lease): the new holder's
    # fencing token is what lets the resource refuse the stale one
    lost, granted = first(cluster, own, "lost"), first(cluster, waiter, "granted")
    assert granted.token > first(cluster, own, "granted").token
    assert granted.time - stalled >= COMPACT.authority_grace_ns  # not before the lease + grace
    assert lost.time >= stalled + 150 * MS
    assert not cluster.of(other, "lost")
    assert check_history(cluster.records, excused=[(1, stalled, stalled + 150 * MS)]) == []


def test_daemon_restart_releases_its_locks_at_once():
    cluster = settled(3)
    holder, waiter = cluster.open(3), cluster.open(2)
    cluster.acquire(holder, (600, 6))
    cluster.run(3 * MS)
    cluster.acquire(waiter, (600, 6))
    cluster.run(5 * MS)
    # the daemon restarts (new instance) while the node stays a member
    cluster.kill(3)
    restart = cluster.now
    cluster.boot(3)
    cluster.run(100 * MS)
    assert first(cluster, waiter, "granted").time - restart < 40 * MS


def test_a_member_reset_during_recovery_leaves_no_wait_behind():
    """A member reported a wait not queued yet, then lost its lease before the new authority
    activated: the wait must not come back at activation (its session is gone)."""
    node = Node(1, 1, store=MemoryStore(), expected_nodes=3, timing=COMPACT)
    auth = Authority(node, 1, 0, 1, 0, 0)
    waiting = pp.PeerWaiting(session_id=7, name=pp.PeerLockName(slot=600, lock=1))
    report = pp.PeerReport(term=1, epoch=0, last=True, generation=1, waiting=[waiting])
    auth.on_data(3, pp.PeerData(report=report), 0)
    assert [entry.session for _, entry in auth.keyless] == [7]
    auth.reset_member(3, 0)
    assert auth.keyless == []


# ---- two-node rule


def test_two_nodes_lone_survivor_needs_the_reference_ip():
    for reachable in (True, False):
        cluster = settled(2, seed=3)
        cluster.reference_ok[2] = reachable
        holder, waiter = cluster.open(1), cluster.open(2)
        cluster.acquire(holder, (600, 1))
        cluster.run(3 * MS)
        cluster.acquire(waiter, (600, 1))
        cluster.run(10 * MS)
        cluster.crash(1)
        cluster.run(300 * MS)
        if reachable:
            assert cluster.authorities() == [2]
            assert cluster.of(waiter, "granted")
        else:
            assert cluster.authorities() == []
            assert first(cluster, waiter, "failed").reason == lp.FAIL_NO_QUORUM
            late = cluster.open(2)
            cluster.acquire(late, (600, 2))
            cluster.run(5 * MS)
            assert first(cluster, late, "failed").reason == lp.FAIL_NO_QUORUM
        assert check_history(cluster.records) == []


def test_two_nodes_isolated_side_without_reference_ip_steps_down():
    cluster = settled(2, seed=9)
    cluster.reference_ok.update({1: False, 2: True})
    a, b = cluster.open(1), cluster.open(2)
    cluster.acquire(a, (600, 1))
    cluster.run(3 * MS)
    cluster.acquire(b, (600, 1))
    cluster.run(10 * MS)
    cluster.partition([1], [2])
    run_checked(cluster, 300 * MS)
    assert cluster.authorities() == [2]
    assert first(cluster, a, "lost").time < first(cluster, b, "granted").time
    assert check_history(cluster.records) == []


# ---- tokens


def test_tokens_increase_across_authority_changes_and_a_whole_cluster_restart():
    cluster = settled(3, seed=6)
    tokens = []

    def grab(domain: int) -> None:
        session = cluster.open(domain)
        cluster.acquire(session, (900, 1))
        cluster.run(10 * MS)
        tokens.append(first(cluster, session, "granted").token)
        cluster.release(session, (900, 1))
        cluster.run(5 * MS)

    grab(2)
    grab(3)
    cluster.crash(1)
    cluster.run(SETTLE)
    grab(3)
    for domain in (2, 3):
        cluster.crash(domain)
    cluster.run(10 * MS)
    for domain in (1, 2, 3):
        cluster.boot(domain)
    cluster.run(SETTLE)
    grab(1)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens


def test_token_floor_is_persisted_before_use():
    cluster = settled(3)
    session = cluster.open(2)
    cluster.acquire(session, (600, 1))
    cluster.run(10 * MS)
    token = first(cluster, session, "granted").token
    floors = sorted(n.store.state.get("token_floor", 0) for n in cluster.nodes.values())
    assert floors[1] > token  # a majority persisted a floor above every granted token


def test_node_alone_without_expected_never_campaigns_blind():
    node = Node(1, 1, store=MemoryStore(), timing=COMPACT)
    node.tick(0)
    assert node.vote_for == 0 and not node.established  # no view: no candidate


# ---- randomised run with faults


@pytest.mark.parametrize("seed", [1234, 7, 2026])
def test_random_faults_keep_one_holder_increasing_tokens_and_no_starvation(seed):
    stats = random_run(seed)
    assert stats["granted"] > 40 and stats["faults"] >= 3, stats


def random_run(seed: int, steps: int = 120, *, fencing: bool = False) -> dict[str, int]:
    """Clients on every node take and give back three locks (random, stack, fifo order) while
    nodes crash and boot and the network splits and heals, with 2% datagram loss. Checked: at
    most one authority lease at any time, never two holders of a lock, tokens increasing, and at
    the end no client waits for a free lock."""
    rng = random.Random(seed)
    cluster = SimCluster(3, seed=seed, fencing=fencing, timing=COMPACT)
    cluster.loss = 0.02
    cluster.run(SETTLE)
    locks = [(600, 1), (1100, 1), (100, 1)]
    clients: dict[int, dict] = {}
    for domain in (1, 2, 3):
        for _ in range(2):
            clients[cluster.open(domain)] = {"domain": domain, "wants": None, "holds": None,
                                             "since": 0}

    def on_record(record: Record) -> None:
        client = clients.get(record.session)
        if client is None:
            return
        if record.kind == "granted":
            client["holds"], client["wants"], client["since"] = record.name, None, cluster.now
        elif record.kind in ("failed",):
            client["wants"] = None
        elif record.kind in ("lost",):
            client["holds"] = None
        elif record.kind == "ended":
            client["holds"] = client["wants"] = None
            client["dead"] = True

    cluster.handlers.append(on_record)
    faults = ["crash", "partition", "heal", "boot", "stall", "none"]
    crashed: set[int] = set()
    stalls: list[tuple[int, int, int]] = []
    done = 0
    for step in range(steps):
        for session, client in clients.items():
            if client.get("dead"):
                continue
            if client["holds"] and cluster.now - client["since"] > rng.randrange(2, 30) * MS:
                name = client["holds"]
                client["holds"] = None
                cluster.release(session, name)
            elif not client["holds"] and not client["wants"] and rng.random() < 0.5:
                client["wants"] = rng.choice(locks)
                cluster.acquire(session, client["wants"], timeout_ms=rng.choice([0, 0, 200]))
        if step % 15 == 7:
            fault = rng.choice(faults)
            done += fault != "none"
            if fault == "crash" and len(crashed) < 1:
                victim = rng.choice([d for d in (1, 2, 3) if d not in crashed])
                cluster.crash(victim)
                crashed.add(victim)
            elif fault == "partition":
                alone = rng.choice([1, 2, 3])
                cluster.partition([alone], [d for d in (1, 2, 3) if d != alone])
            elif fault == "heal":
                cluster.heal()
            elif fault == "stall":
                victim, length = rng.choice([1, 2, 3]), rng.randrange(10, 120) * MS
                cluster.stall(victim, length)
                stalls.append((victim, cluster.now, cluster.now + length))
            elif fault == "boot" and crashed:
                victim = crashed.pop()
                cluster.boot(victim)
                for _ in range(2):
                    clients[cluster.open(victim)] = {"domain": victim, "wants": None,
                                                     "holds": None, "since": 0}
        run_checked(cluster, rng.randrange(1, 15) * MS)
    # settle: heal everything; every live client releases; nobody may be left waiting on a free lock
    cluster.heal()
    for victim in list(crashed):
        cluster.boot(victim)
    cluster.loss = 0.0
    run_checked(cluster, SETTLE)
    for session, client in clients.items():
        if client["holds"] and not client.get("dead"):
            cluster.release(session, client["holds"])
            client["holds"] = None
    run_checked(cluster, SETTLE)
    problems = check_history(cluster.records, excused=stalls)
    assert problems == [], problems[:5]
    # no starvation: at the end no live client waits while its lock is free
    authority = cluster.active_authority()
    assert authority is not None
    table = cluster.node(authority).auth.table
    for name in locks:
        if table.holder(name) is None:
            assert table.waiters(name) == [], f"{name} is free but has waiters"
    waiting = [s for s, c in clients.items() if c["wants"] and not c.get("dead")]
    for session in waiting:
        name = clients[session]["wants"]
        assert table.holder(name) is not None, f"session {session:x} waits for free {name}"
    kinds = [r.kind for r in cluster.records]
    return {"granted": kinds.count("granted"), "lost": kinds.count("lost"),
            "failed": kinds.count("failed"), "faults": done}


# ---- elections (Campaign / Observe) on the same machinery


def campaign(cluster: SimCluster, domain: int, watcher: int, group: str, who: str) -> int:
    session = cluster.open(domain, who)
    node = cluster.node(domain)
    node.member.sessions[session].campaign = group
    node.watch(watcher, group, session, cluster.now)
    node.acquire(session, group, cluster.now)
    cluster._after(domain)
    return session


def leaders(cluster: SimCluster, watcher: int) -> list[tuple[str, int, bool]]:
    seen = [(e.leader, e.term, e.elected) for _, w, e in cluster.leader_log if w == watcher]
    return [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]


def test_election_one_leader_observers_follow_and_candidates_take_over_in_order():
    cluster = settled(3)
    observer = 100
    cluster.node(3).watch(observer, "db", 0, cluster.now)
    cluster._after(3)
    a = campaign(cluster, 1, 1, "db", "alpha")
    cluster.run(5 * MS)
    b = campaign(cluster, 2, 2, "db", "beta")
    cluster.run(5 * MS)
    c = campaign(cluster, 3, 3, "db", "gamma")
    cluster.run(5 * MS)
    assert leaders(cluster, 1)[-1][::2] == ("alpha", True)
    assert leaders(cluster, 2)[-1][::2] == ("alpha", False)
    assert leaders(cluster, observer)[-1][0] == "alpha"
    cluster.close(a)  # alpha resigns: beta (the first waiter) leads
    cluster.run(10 * MS)
    assert leaders(cluster, 2)[-1][::2] == ("beta", True)
    assert leaders(cluster, observer)[-1][0] == "beta"
    cluster.crash(2)  # beta's node dies: gamma leads, with a larger term
    cluster.run(SETTLE)
    terms = [t for leader, t, _ in leaders(cluster, observer) if leader]
    assert leaders(cluster, 3)[-1][::2] == ("gamma", True)
    assert terms == sorted(terms) and len(set(terms)) == len(terms)
    _ = (b, c)
