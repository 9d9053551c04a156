"""Ownership under load with nothing failing: 3 nodes, 4 HA services, both cores hogged, 20 % loss
on one network path, for minutes. Nothing may change hands.

    python -m bench.stability --minutes 10

Setup: a 3-node lab running skyge-heartbeat, -bus, -lock and -ha (LOG_NOTICE); the demo service
of `skyge.clients.lab.demo` installed four times (fifo slots 0-3, ports 8080-8083, floating IPs
192.168.1.100-103 on eth0, checked every second as in the demo). n1's HA daemon starts first, so
it runs all four; n2 and n3 wait. Once every service runs with two waiters, the watchers start,
then the load: one busy loop per CPU at normal priority (bench._common.Hog) and 20 % of the
frames every node sends on eth1 (heartbeat path 2) dropped in the lab's switch. After
`--minutes` the load stops and the watchers are read. Progress goes to stderr every minute.

Watched from outside the daemons:

- service_moves: `ip -ts monitor address` in every node (bench.failover's AddressMonitor); a
  move is a floating IP added on a node other than the one that had it (the first holder: the
  node that had it when its monitor started). address_removals: a floating IP removed anywhere;
  double_active: two nodes holding one floating IP at once (the monitors' holding intervals).
- term_changes: the lock authority's term. Every node's lock daemon is asked over gRPC
  (Lock.GetAuthority, what `skyge lock authority` shows) every 0.5 s, and every "term N" in the
  lock daemons' log lines written during the run is read; term_changes = the highest term seen
  either way minus the term at the start (terms are cluster-wide and only grow, so this counts
  every new term, also those no poll caught). authority_gaps: polls answered with no authority
  (an election under way, or no quorum).
- false_downs: "left" events on every node's heartbeat WatchMembership stream, as
  bench.heartbeat_soak counts them (no node is stopped, so every one is false); link_flaps:
  link-down events there (expected under loss; not a failure).
- final_answers: after the load, the node each floating IP answers from, fetched once from the
  client namespace; final_answers_match says whether it is the monitors' last holder.

For each burst of moves, new terms, false downs and double holdings (the first five bursts), a
timeline goes to stderr: the address monitors' records and the daemons' log lines around it (HA
state changes, lock terms and lost locks, heartbeat warnings).
"""
from __future__ import annotations

import argparse
import re
import threading
import time
from dataclasses import dataclass

import grpc

from skyge.clients.lab import Lab, LabNode
from skyge.clients.lab.configs import configure_heartbeat
from skyge.clients.lab.demo import (CLUSTER_DAEMONS, fetch, install_demo_service, start_node,
                                    wait_members, wait_placement)
from skyge.services.common.paths import NodePaths
from skyge.v1 import lock_pb2, lock_pb2_grpc
from tests.cluster import heartbeat_support as hs

from bench._common import (Hog, address_moves, lab_name, log_lines, note, ownership_log_lines,
                           result, timeline)
from skyge.clients.lab.observe import AddressMonitor, holder_intervals, overlap_spans

#: service name -> (fifo slot, port, floating IP)
SERVICES = {f"demo{slot}": (slot, 8080 + slot, f"192.168.1.{100 + slot}") for slot in range(4)}
LOSSY_NIC = "eth1"
LOSS_PERCENT = 20.0
POLL_INTERVAL_S = 0.5
START_POLLS = 20
TERM_IN_LOG = r"\bterm (\d+)"
EXPLAIN_WINDOW_S = 5.0
EXPLAINED_MAX = 5  # timelines printed at most
TIMELINE_LINES_MAX = 80


@dataclass(frozen=True)
class AuthorityPoll:
    time_ns: int
    node: str
    authority: int  # domain; 0 = none
    term: int


class AuthorityPoller:
    """Lock.GetAuthority on every node every POLL_INTERVAL_S, in a thread."""

    def __init__(self, nodes: list[LabNode]) -> None:
        self.channels = {n.key: grpc.insecure_channel(f"unix:{NodePaths.at(n.root).socket('lock')}")
                         for n in nodes}
        self.polls: list[AuthorityPoll] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll_once(self) -> None:
        for key, channel in self.channels.items():
            try:
                info = lock_pb2_grpc.LockStub(channel).GetAuthority(
                    lock_pb2.GetAuthorityRequest(), timeout=2)
            except grpc.RpcError:
                self.failures += 1
                continue
            authority = info.authority.domain if info.HasField("authority") else 0
            self.polls.append(AuthorityPoll(time.time_ns(), key, authority, info.term))

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            self.poll_once()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for channel in self.channels.values():
            channel.close()


class Watchers:
    """Everything the bench records while the load runs."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.start_ns = time.time_ns()
        self.monitors = [AddressMonitor(node, "stab") for node in lab.nodes]
        self.first_holders = holders_now(lab)
        self.heartbeat = hs.watches(lab.nodes)
        self.authority = AuthorityPoller(list(lab.nodes))
        for _ in range(START_POLLS):
            self.authority.poll_once()
            if self.authority.polls:
                break
            time.sleep(POLL_INTERVAL_S)
        else:
            raise RuntimeError("no lock daemon answered GetAuthority: no term to start from")
        self.start_term = max(p.term for p in self.authority.polls)
        self.authority.start()

    def moves(self) -> dict[str, list]:
        """Per floating IP, its moves so far."""
        return {vip: address_moves({m.node.key: m.events(vip) for m in self.monitors},
                                   self.first_holders.get(vip))
                for _, _, vip in SERVICES.values()}

    def removals(self) -> list[tuple[int, str, str]]:
        return [(t, m.node.key, vip) for _, _, vip in SERVICES.values() for m in self.monitors
                for t, added in m.events(vip) if not added]

    def holders(self) -> dict[str, str | None]:
        """Per floating IP, the last node it was added on (or the first holder)."""
        return {vip: max(((t, m.node.key) for m in self.monitors for t, added in m.events(vip)
                          if added), default=(0, self.first_holders.get(vip)))[1]
                for _, _, vip in SERVICES.values()}

    def logged_terms(self) -> list[tuple[int, int, str]]:
        """(time, term, node) of every "term N" in the lock daemons' logs during the run."""
        found = []
        for node in self.lab.nodes:
            log = node.root / "var" / "log" / "skyge-lock.log"
            for t, line in log_lines(log, TERM_IN_LOG, self.start_ns):
                found += [(t, int(term), node.key) for term in re.findall(TERM_IN_LOG, line)]
        return found

    def term_changes(self) -> list[tuple[int, int, str]]:
        """(time first seen, term, where) of every term above the start's, polls and logs."""
        seen: dict[int, tuple[int, str]] = {}
        sightings = [(p.time_ns, p.term, f"{p.node} poll") for p in self.authority.polls]
        for t, term, where in sorted(sightings + [(t, term, f"{k} log")
                                                  for t, term, k in self.logged_terms()]):
            if term > self.start_term and term not in seen:
                seen[term] = (t, where)
        return [(t, term, where) for term, (t, where) in sorted(seen.items())]

    def downs(self) -> list[tuple[str, hs.Seen]]:
        """(node whose stream said it, event) of every member reported down."""
        return [(self.lab.node(domain).key, e) for domain, w in self.heartbeat.items()
                for e in w.snapshot() if e.kind == "left"]

    def link_flaps(self) -> int:
        return sum(e.kind == "link" and not e.up for w in self.heartbeat.values()
                   for e in w.snapshot())

    def stop(self) -> list[str]:
        """Stop every watcher; the errors of the membership streams, if any."""
        self.authority.stop()
        errors = [f"{self.lab.node(d).key}: {w.error}" for d, w in self.heartbeat.items()
                  if w.error]
        hs.close_all(self.heartbeat)
        for monitor in self.monitors:
            monitor.stop()
        return errors


def holders_now(lab: Lab) -> dict[str, str]:
    """Floating IP -> the node that has it now (`ip addr` in every node)."""
    found = {}
    for node in lab.nodes:
        listed = node.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], timeout=10).stdout
        found.update({ip: node.key for ip in re.findall(r" inet ([0-9.]+)/", listed)})
    return {vip: found[vip] for _, _, vip in SERVICES.values() if vip in found}


def start(lab: Lab) -> None:
    """Daemons on every node; the four services running on n1, n2 and n3 waiting."""
    configure_heartbeat(lab)
    for name, (slot, port, vip) in SERVICES.items():
        install_demo_service(lab, slot=slot, name=name, port=port, vip=vip)
    for node in lab.nodes:  # membership and locks first
        start_node(node, CLUSTER_DAEMONS[:-1], extra_args=("-l", "LOG_NOTICE"))
    wait_members(lab.node(1), lab.size)
    for node in lab.nodes:
        start_node(node, ("ha",), extra_args=("-l", "LOG_NOTICE"))
    for slot, _, _ in SERVICES.values():
        wait_placement(lab.node(lab.size), lambda p: p[0] == "running" and len(p[2]) == 2,
                       slot=slot, what="running with 2 waiters", timeout=60)


def incidents(events: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """(time, what) events grouped: one group per burst (no gap over EXPLAIN_WINDOW_S)."""
    groups: list[list[tuple[int, str]]] = []
    for event in sorted(events):
        if groups and event[0] - groups[-1][-1][0] <= EXPLAIN_WINDOW_S * 1e9:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def explain(watch: Watchers, group: list[tuple[int, str]]) -> None:
    """One burst of changes with the daemons' log lines and the address monitors' records around
    it, to stderr."""
    lab, first, last = watch.lab, group[0][0], group[-1][0]
    since, until = first - int(EXPLAIN_WINDOW_S * 1e9), last + int(EXPLAIN_WINDOW_S * 1e9)
    entries = ownership_log_lines({n.key: n.root for n in lab.nodes}, since, until)
    entries += [(t, m.node.key, f"{vip} {'added' if added else 'removed'}")
                for _, _, vip in SERVICES.values() for m in watch.monitors
                for t, added in m.events(vip) if since <= t <= until]
    entries += [(t, "bench", f">>> {what}") for t, what in group]
    lines = timeline(entries, first, TIMELINE_LINES_MAX)
    note(f"{len(group)} change(s) from {group[0][1]}; timeline (ms from it):\n  "
         + "\n  ".join(lines))


def progress(watch: Watchers, minute: float, minutes: float) -> None:
    moves = sum(len(m) for m in watch.moves().values())
    note(f"{minute:.1f}/{minutes:g} min: term {watch.start_term} +{len(watch.term_changes())}, "
         f"service moves {moves}, address removals {len(watch.removals())}, false downs "
         f"{len(watch.downs())}, link flaps {watch.link_flaps()}")


def run(minutes: float) -> dict:
    with Lab.up(nodes=3, name=lab_name("st")) as lab:
        start(lab)
        watch = Watchers(lab)
        try:
            with Hog() as hog:
                for node in lab.nodes:
                    node.set_loss(LOSSY_NIC, LOSS_PERCENT, "out")
                try:
                    end = time.monotonic() + minutes * 60
                    while (left := end - time.monotonic()) > 0:
                        time.sleep(min(left, 60))
                        progress(watch, minutes - max(end - time.monotonic(), 0) / 60, minutes)
                finally:
                    for node in lab.nodes:
                        node.clear_loss(LOSSY_NIC)
            time.sleep(POLL_INTERVAL_S * 2)
            answers = {vip: fetch(lab.client, vip, port) for _, port, vip in SERVICES.values()}
            moves, removals, holders = watch.moves(), watch.removals(), watch.holders()
            terms, downs = watch.term_changes(), watch.downs()
            gaps = sum(p.authority == 0 for p in watch.authority.polls)
            polls, poll_failures = len(watch.authority.polls), watch.authority.failures
            flaps = watch.link_flaps()
            double = {vip: overlap_spans(holder_intervals(watch.monitors, {}, vip))
                      for _, _, vip in SERVICES.values()}
            changes = ([(m.time_ns, f"{vip} moved {m.source} -> {m.target}")
                        for vip, found in moves.items() for m in found]
                       + [(t, f"term {term} (first seen: {where})") for t, term, where in terms]
                       + [(seen.time_unix_ns, f"n{seen.domain} down (as {key} saw it)")
                          for key, seen in downs]
                       + [(o.start_ns, f"{vip} on {' and '.join(o.nodes)} for {o.ms:.1f} ms")
                          for vip, found in double.items() for o in found])
            for group in incidents(changes)[:EXPLAINED_MAX]:
                explain(watch, group)
        finally:
            stream_errors = watch.stop()
    final = {vip: (answer.split()[0] if answer else None) for vip, answer in answers.items()}
    figures = {
        "term_changes": max((term for _, term, _ in terms), default=watch.start_term)
                        - watch.start_term,
        "service_moves": sum(len(found) for found in moves.values()),
        "false_downs": len(downs),
        "start_term": watch.start_term,
        "address_removals": len(removals),
        "double_active": sum(len(found) for found in double.values()),
        "authority_gaps": gaps,
        "authority_polls": polls,
        "authority_poll_failures": poll_failures,
        "link_flaps": flaps,
        "final_answers": final,
        "final_answers_match": final == holders,
        "minutes": minutes, "services": len(SERVICES), "loss_percent": LOSS_PERCENT,
        "hog_processes": hog.count,
    }
    if stream_errors:
        figures.update(false_downs=None,
                       note=f"a membership stream failed, downs not fully seen: {stream_errors}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes: must be more than 0 and at most 1440")
    try:
        figures = run(args.minutes)
    except Exception as error:
        note(f"the run failed: {type(error).__name__}: {error}")
        figures = {"term_changes": None, "service_moves": None, "false_downs": None,
                   "minutes": args.minutes,
                   "note": f"the run failed: {type(error).__name__}: {error}"}
    result(figures)


if __name__ == "__main__":
    main()
