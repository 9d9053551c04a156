"""Pauses of the active node's daemons and of the whole node: is the service ever active on two
nodes, and does a short pause ever move it? Then the two-node cut (issue 13).

    python -m bench.pause_safety                      # every case, 2 trials each (<= ~15 min)
    python -m bench.pause_safety --trials 1 --pauses 50,1000 --targets lock,node
    python -m bench.pause_safety --backend etcd       # locks in etcd; the etcd member paused too

Setup (as bench.failover): a 3-node lab running all five skyge daemons; the demo service of
`skyge.clients.lab.demo` (fifo/0, floating IP 192.168.1.100 on eth0, a pid file) on every node;
a prober in the client namespace connecting to 192.168.1.100:8080 every 5 ms (every attempt
logged with its wall-clock start and end and the answer "n<node> token <fencing token>"); an
`ip -ts monitor address` in every node logging, with timestamps, every address added or removed.

Per trial: wait until the service runs with both other nodes waiting; the node answering the
prober is the active node. Pause a target there with SIGSTOP, sleep, SIGCONT: `lock` (its lock
daemon), `ha` (its HA daemon), `daemons` (all five; PIDs from their pid files, each checked to be
a process of the node), `node` (`LabNode.freeze()`/`thaw()`: every process of the node, the
address monitor too: nothing can remove an address there meanwhile, and its stamps after the
thaw may lag by a few ms, which only lengthens an overlap). Then wait, bounded, until
the cluster settled: every node reports the same placement (running, every other node waiting)
for 2 s and the prober was answered after the pause.

- moves (per case): trials during which the prober got any answer other than the one before the
  pause (another node, or a new fencing token: a restart), or after which the server's PID on
  the answering node differs. spurious_moves: such trials with pauses <= 200 ms.
- outage_ms_max (per case): the longest stretch between two answers to the prober, from the
  first SIGSTOP until the cluster settled.
- double_active: the floating IP on two nodes at once (from the monitors; a frozen or paused
  node still has its address, and that counts: the network sees it), plus the times the client
  was answered by a server after another one had answered in its place (A, B, then A again; a
  server is its answer: node and fencing token). double_active_ms: the longest such overlap
  (monitors) or stretch (client). Each is attributed to the trial in whose window (its SIGSTOP
  to the next trial's) it began; the timeline of such a trial, and of a spurious move, is printed.

Two-node cut: a 2-node lab (lock.cfg expected_nodes 2, the gateway as reference IPs: the seed's
two-node rule), every frame between n1 and n2 dropped on both networks (nftables in the lab's
switch, `set_loss(..., peer=)`), both still reaching the gateway, for 15 s; then healed and
watched until one node holds the floating IP (at most 15 s). two_node_*_double_active_ms: the
total time both nodes held the floating IP (monitors; a node crashed by the fence holds nothing
from the end of its crash). Variants: no fence, no witness (`two_node_unprotected_...`); lock.cfg
`fence_command` powering the lost node off through the lab (`skyge lab crash`); lock.cfg
`witness`: the skyge-witness the lab runs in its gateway, reachable from both sides.

`--backend etcd`: the locks are in an etcd of one member per node (`skyge.clients.lab.etcd`), and
one more target, `etcd`: the active node's etcd member (SIGSTOP by its PID; when it leads, a
paused leader). A node fenced meanwhile starts its member again at its boot. The two-node cut is
not run: the etcd backend refuses two-node clusters.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import NamedTuple
from collections.abc import Sequence

from skyge.clients.lab import GATEWAY_IPS, Lab, LabError, LabNode
from skyge.clients.lab.demo import DEMO_VIP, Prober, placement, start_node
from skyge.clients.lab.daemons import start_witness
from skyge.services.common.paths import DAEMONS, NodePaths
from skyge.services.ha.resources.script import PidfileError, read_pidfile

from bench._common import lab_name, note, result, rounded
from bench.failover import pidfile, ready, start_cluster
from skyge.clients.lab.etcd import SPAWN_NAME as ETCD_NAME
from skyge.clients.lab.etcd import members_of, start_member
from skyge.clients.lab.observe import (AddressMonitor, Interleaving, Overlap, holder_intervals,
                                       interleaved_answers, overlap_spans)

PAUSES_MS = (50, 200, 1000, 5000, 30000)
TARGETS = ("lock", "ha", "daemons", "node")
ETCD_TARGETS = (*TARGETS, "etcd")
TARGET_DAEMONS = {"lock": ("lock",), "ha": ("ha",), "daemons": DAEMONS}
#: a move after a pause this short (ms) is spurious: nothing failed
SHORT_PAUSE_MS = 200
#: settled = the same placement on every node for this long
STABLE_S = 2.0
SETTLE_TIMEOUT_S = 45.0
ANSWER_TIMEOUT_S = 10.0
CUT_S = 15.0
AFTER_HEAL_S = 15.0
#: time kept for the two-node part when the 3-node part runs out of its budget
TWO_NODE_RESERVE_S = 310.0


class TailingProber(Prober):
    """A Prober whose log is read incrementally: over a run of many minutes it grows by ~200
    lines a second, and the trials look at it every few tens of ms."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self._rows: list[tuple[int, int, bool, str]] = []
        self._starts: list[int] = []
        self._offset = 0

    def attempts(self) -> list[tuple[int, int, bool, str]]:
        if self.log.exists():
            with open(self.log, "rb") as log:
                log.seek(self._offset)
                chunk = log.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                try:
                    row = tuple(json.loads(line))
                except ValueError:
                    continue
                self._rows.append(row)  # type: ignore[arg-type]
                self._starts.append(row[0])
        return self._rows

    def first_answer_after(self, t0_ns: int, exclude: str | None = None
                           ) -> tuple[int, str] | None:
        rows = self.attempts()
        for _, end, ok, data in rows[bisect.bisect_left(self._starts, t0_ns):]:
            if ok and (exclude is None or not data.startswith(exclude + " ")):
                return end, data
        return None

    def last_answer(self) -> tuple[int, str] | None:
        """(end ns, answer) of the latest successful attempt."""
        return next(((end, data) for start, end, ok, data in reversed(self.attempts()) if ok),
                    None)


def answering_node(answer: str) -> str:
    return answer.split()[0]


def server_pid(lab: Lab, node: LabNode) -> int | None:
    """The demo server's PID on `node` from its pid file (None: no server there)."""
    try:
        return read_pidfile(pidfile(lab, node))
    except PidfileError:
        return None


def daemon_pids(node: LabNode, daemons: Sequence[str]) -> list[int]:
    """The PIDs of the node's daemons, from their pid files, each checked to be a process of the
    node (never a name lookup)."""
    members = set(node.pids())
    paths = NodePaths.at(node.root)
    pids = []
    for daemon in daemons:
        pid = read_pidfile(paths.pid_file(daemon))
        if pid not in members:
            raise LabError(f"{node.key}: pid {pid} of {paths.pid_file(daemon)} is not a process "
                           "of the node")
        pids.append(pid)
    return pids


class PauseTimes(NamedTuple):
    """Wall-clock ns of a pause: the first stop sent, everything stopped, the first continue
    sent, everything continued (a whole node takes some ms to freeze and thaw)."""

    stopping: int
    stopped: int
    resuming: int
    resumed: int


def pause(node: LabNode, target: str, seconds: float) -> PauseTimes:
    """SIGSTOP the target on `node`, sleep, SIGCONT. Always continues what it stopped."""
    if target == "node":
        stopping = time.time_ns()
        try:
            node.freeze()
            stopped = time.time_ns()
            time.sleep(seconds)
        finally:
            resuming = time.time_ns()
            if not node.crashed:  # (fenced while frozen: powered off, nothing to thaw)
                node.thaw()
        return PauseTimes(stopping, stopped, resuming, time.time_ns())
    pids = node.find(ETCD_NAME) if target == "etcd" else daemon_pids(node, TARGET_DAEMONS[target])
    fds = [os.pidfd_open(pid) for pid in pids]
    try:
        stopping = time.time_ns()
        try:
            for fd in fds:
                signal.pidfd_send_signal(fd, signal.SIGSTOP)
            stopped = time.time_ns()
            time.sleep(seconds)
        finally:
            resuming = time.time_ns()
            for fd in fds:
                signal.pidfd_send_signal(fd, signal.SIGCONT)
        return PauseTimes(stopping, stopped, resuming, time.time_ns())
    finally:
        for fd in fds:
            os.close(fd)


@dataclass
class Trial:
    """One pause of one target on the active node, and what the outside saw of it."""

    target: str
    pause_ms: int
    node: str  # the active node, paused
    answer_before: str
    pid_before: int | None
    times: PauseTimes
    window_end_ns: int = 0  # settled, or given up
    settled: bool = False
    answer_after: str | None = None
    pid_after: int | None = None
    moved: bool = False
    outage_ms: float | None = None

    @property
    def case(self) -> str:
        return f"{self.target}_{self.pause_ms}"

    @property
    def stopped_ns(self) -> int:
        """The trial's start: the first SIGSTOP."""
        return self.times.stopping

    @property
    def resumed_ns(self) -> int:
        return self.times.resumed

    @property
    def pause_actual_ms(self) -> float:
        """From the first stop sent to the last continue done (the longest any target paused)."""
        return (self.times.resumed - self.times.stopping) / 1e6


def outside_timeline(monitors: Sequence[AddressMonitor],
                     attempts: Sequence[tuple[int, int, bool, str]], start_ns: int, end_ns: int,
                     marks: Sequence[tuple[int, str, str]]) -> list[str]:
    """The floating IP's adds and removals on every node and each change of the client's
    answer in [start_ns, end_ns), with `marks` (time ns, who, what), as "+12.3 ms  n2  what"
    from start_ns."""
    entries = list(marks)
    for monitor in monitors:
        entries += [(t, monitor.node.key, f"{DEMO_VIP} {'added' if added else 'removed'}")
                    for t, added in monitor.events() if start_ns <= t < end_ns]
    previous = next((data for start, _, ok, data in reversed(attempts)
                     if ok and start < start_ns), None)
    for start, finish, ok, data in attempts:
        if ok and start_ns <= start < end_ns and data != previous:
            entries.append((finish, "client", f"answered {data!r}"))
            previous = data
    return [f"{(t - start_ns) / 1e6:+10.1f} ms  {where:<6} {what}"
            for t, where, what in sorted(entries)]


def longest_gap_ms(attempts: Sequence[tuple[int, int, bool, str]], start_ns: int,
                   end_ns: int) -> float:
    """The longest stretch in [start_ns, end_ns] between two answers to the prober."""
    previous, longest = start_ns, 0
    for _, end, ok, _ in attempts:
        if ok and start_ns < end <= end_ns:
            longest = max(longest, end - previous)
            previous = end
    return max(longest, end_ns - previous) / 1e6


class PauseRun:
    """One 3-node lab, its prober and monitors, the trials."""

    def __init__(self, lab: Lab, backend: str) -> None:
        self.lab = lab
        self.backend = backend
        self.monitors = [AddressMonitor(node, "0") for node in lab.nodes]
        self.boots = 0
        self.prober = TailingProber(lab)
        self.trials: list[Trial] = []

    def fresh_answer(self) -> str:
        found = self.prober.wait_answer_after(time.time_ns(), timeout=ANSWER_TIMEOUT_S)
        if found is None:
            raise LabError(f"the client got no answer in {ANSWER_TIMEOUT_S:g} s")
        return found[1]

    def settle(self, resumed_ns: int) -> tuple[bool, int]:
        """Wait (at most SETTLE_TIMEOUT_S) until every node reports the same placement, running
        with every other node waiting, for STABLE_S, and the prober was answered since
        `resumed_ns`. Returns (settled?, when)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        agreed, since = None, time.monotonic()
        while time.monotonic() < deadline:
            seen = {(p[0], p[1], tuple(p[2])) if p else None
                    for p in map(placement, self.lab.nodes)}
            current = seen.pop() if len(seen) == 1 else None
            ok = (current is not None and current[0] == "running"
                  and len(current[2]) == self.lab.size - 1)
            if not ok or current != agreed:
                agreed, since = (current if ok else None), time.monotonic()
            elif (time.monotonic() - since >= STABLE_S
                  and self.prober.first_answer_after(resumed_ns) is not None):
                return True, time.time_ns()
            time.sleep(0.1)
        return False, time.time_ns()

    def trial(self, target: str, pause_ms: int) -> Trial:
        ready(self.lab)
        answer = self.fresh_answer()
        node = self.lab.node(answering_node(answer))
        pid_before = server_pid(self.lab, node)
        trial = Trial(target, pause_ms, node.key, answer, pid_before,
                      pause(node, target, pause_ms / 1000))
        self.boot_if_fenced(node, trial.stopped_ns)
        trial.settled, trial.window_end_ns = self.settle(trial.resumed_ns)
        last = self.prober.last_answer()
        if last is not None and last[0] >= trial.resumed_ns:
            trial.answer_after = last[1]
            trial.pid_after = server_pid(self.lab, self.lab.node(answering_node(last[1])))
        attempts = self.prober.attempts()
        restarted = trial.pid_after is not None and trial.pid_after != trial.pid_before
        trial.moved = restarted or any(
            ok and data != answer for start, _, ok, data in attempts
            if trial.stopped_ns <= start <= trial.window_end_ns)
        trial.outage_ms = longest_gap_ms(attempts, trial.stopped_ns, trial.window_end_ns)
        self.trials.append(trial)
        note(f"{trial.case} on {node.key} (paused {trial.pause_actual_ms:.0f} ms): "
             f"{'settled' if trial.settled else 'NOT settled'} after "
             f"{(trial.window_end_ns - trial.resumed_ns) / 1e9:.1f} s; "
             f"{'MOVED' if trial.moved else 'stayed'} ({answer!r} -> {trial.answer_after!r}, "
             f"pid {trial.pid_before} -> {trial.pid_after}); outage {trial.outage_ms:.1f} ms")
        return trial

    def fence_ends(self) -> dict[str, list[int]]:
        """Node -> when each fence had it off (its address monitor died with it)."""
        found: dict[str, list[int]] = {}
        for node, stamp in self.lab.fence_log():
            found.setdefault(f"n{node}", []).append(stamp)
        return found

    def boot_if_fenced(self, node: LabNode, since_ns: int) -> None:
        """A node the others fenced (powered off) during the trial is powered on again, its
        daemons started and watched, so that the next trial finds three nodes."""
        if not any(f"n{n}" == node.key and at >= since_ns for n, at in self.lab.fence_log()):
            return
        deadline = time.monotonic() + SETTLE_TIMEOUT_S  # the lab records the crash after it
        while not node.crashed and time.monotonic() < deadline:
            time.sleep(0.05)
        self.boots += 1
        node.boot()
        if self.backend == "etcd":
            start_member(node, members_of(self.lab))
        self.monitors.append(AddressMonitor(node, f"b{self.boots}"))
        start_node(node, DAEMONS, extra_args=("-l", "LOG_NOTICE"))

    def double_active(self) -> dict[int, list[Overlap | Interleaving]]:
        """Per trial index (-1: before the first trial): the overlaps of the floating IP and
        the client's interleaved answers that began in its window."""
        attempts = self.prober.attempts()
        starts = [t.stopped_ns for t in self.trials]
        found: dict[int, list[Overlap | Interleaving]] = {}
        for overlap in overlap_spans(holder_intervals(self.monitors, self.fence_ends())):
            found.setdefault(bisect.bisect_right(starts, overlap.start_ns) - 1, []).append(overlap)
        for index, (start, end) in enumerate(zip(starts, [*starts[1:], 1 << 62], strict=True)):
            found.setdefault(index, []).extend(interleaved_answers(attempts, start, end))
        return {index: events for index, events in found.items() if events}

    def timeline(self, index: int) -> list[str]:
        """What the outside saw in a trial's window (until the next trial)."""
        trial, times = self.trials[index], self.trials[index].times
        end = (self.trials[index + 1].stopped_ns if index + 1 < len(self.trials)
               else time.time_ns())
        marks = [(times.stopping, "bench", f"SIGSTOP {trial.target} on {trial.node}"),
                 (times.stopped, "bench", "stopped"), (times.resuming, "bench", "SIGCONT"),
                 (times.resumed, "bench", "continued")]
        return outside_timeline(self.monitors, self.prober.attempts(), trial.stopped_ns, end,
                                marks)

    def stop(self) -> None:
        self.prober.stop()
        for monitor in self.monitors:
            with contextlib.suppress(LabError):
                monitor.stop()


def run_pauses(trials: int, pauses: Sequence[int], targets: Sequence[str],
               deadline: float, fence: bool = False, backend: str = "builtin") -> dict:
    """The 3-node part: every target x pause, `trials` times (round-robin, so a budget cut
    leaves every case with as many trials as possible)."""
    figures: dict = {}
    skipped, failed = 0, []
    with Lab.up(nodes=3, name=lab_name("ps")) as lab:
        start_cluster(lab, daemons=DAEMONS,
                      lock_config={"fence_command": lab.fence_command()} if fence else None,
                      backend=backend)
        bench = PauseRun(lab, backend)
        try:
            for round_ in range(1, trials + 1):
                for target in targets:
                    for pause_ms in pauses:
                        if time.monotonic() + pause_ms / 1000 + SETTLE_TIMEOUT_S > deadline:
                            skipped += 1
                            continue
                        note(f"round {round_}/{trials}: {target} paused {pause_ms} ms")
                        try:
                            bench.trial(target, pause_ms)
                        except LabError as error:
                            failed.append(f"{target}_{pause_ms}: {error}")
                            note(f"trial failed: {failed[-1]}\n{ha_log_tails(lab)}")
            time.sleep(STABLE_S)
        finally:
            bench.stop()
        events = bench.double_active()
        for event in events.get(-1, []):
            note(f"double active (start-up): {event}")
        for index, trial in enumerate(bench.trials):
            for event in events.get(index, []):
                note(f"double active ({trial.case}): {event}")
            if index in events or (trial.moved and trial.pause_ms <= SHORT_PAUSE_MS):
                note("\n".join([f"{trial.case}, timeline (from the SIGSTOP):",
                                  *bench.timeline(index)]))
    cases = list(dict.fromkeys(t.case for t in bench.trials))

    def per_case(value) -> dict:
        return {case: value([t for t in bench.trials if t.case == case]) for case in cases}

    index_of = {id(t): i for i, t in enumerate(bench.trials)}
    all_events = [e for found in events.values() for e in found]
    figures.update(
        double_active=len(all_events),
        double_active_ms=rounded(max((e.ms for e in all_events), default=0.0), 1),
        double_active_by_case=per_case(lambda ts: sum(len(events.get(index_of[id(t)], []))
                                                      for t in ts)),
        double_active_at_start_up=len(events.get(-1, [])),
        spurious_moves=sum(t.moved for t in bench.trials if t.pause_ms <= SHORT_PAUSE_MS),
        moves=per_case(lambda ts: sum(t.moved for t in ts)),
        outage_ms_max=per_case(lambda ts: rounded(max(t.outage_ms for t in ts), 1)),
        pause_actual_ms_max=per_case(lambda ts: rounded(max(t.pause_actual_ms for t in ts), 1)),
        trials_run=per_case(len),
        unsettled_trials=[t.case for t in bench.trials if not t.settled],
        trials_skipped_for_time=skipped,
        failed_trials=failed,
    )
    return figures


#: fence_priority_delay_ms of the "fence_priority" two-node variant: well above the lab fence's
#: run time (a `skyge lab crash`, ~0.3 s), as Pacemaker advises for priority-fencing-delay
PRIORITY_DELAY_MS = 2000

class LabFence:
    """The lab's own fence command (`Lab.fence_command`: the lost node is powered off) and when
    each fence had it off (the crashed node's address monitor dies with it)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.command = lab.fence_command()

    def crashes(self) -> dict[str, list[int]]:
        """Node -> wall ns at which its fence had it off."""
        found: dict[str, list[int]] = {}
        for node, stamp in self.lab.fence_log():
            found.setdefault(f"n{node}", []).append(stamp)
        return found


def ha_log_tails(lab: Lab, lines: int = 6) -> str:
    """The last lines of every node's HA log (for a trial that failed: the lab goes away)."""
    tails = []
    for node in lab.nodes:
        log = node.root / "var" / "log" / "skyge-ha.log"
        text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
        tails += [f"  {node.key} skyge-ha.log:"] + [f"    {line}" for line in text]
    return "\n".join(tails)


def cut_check(lab: Lab) -> dict[str, dict[str, bool] | str]:
    """Per node: does it reach the gateway, and the other node (one ping each)? "crashed" for a
    node the fence powered off meanwhile."""
    found: dict[str, dict[str, bool] | str] = {}
    for node in lab.nodes:
        peer = next(n for n in lab.nodes if n is not node)
        try:
            found[node.key] = {
                target: node.run(["ping", "-c", "1", "-W", "1", address],
                                 timeout=5).returncode == 0
                for target, address in (("gateway", GATEWAY_IPS[0]), ("peer", peer.public_ip))}
        except LabError:
            if not node.crashed:
                raise
            found[node.key] = "crashed"
    return found


def holders_now(monitors: Sequence[AddressMonitor], ends: dict[str, list[int]]) -> set[str]:
    now = time.time_ns()
    return {key for key, spans in holder_intervals(monitors, ends).items()
            if any(end >= now for _, end in spans)}


def two_node_cut(variant: str, cut_s: float) -> dict:
    """One 2-node lab, the cut between the nodes for `cut_s`, healed; what both held."""
    with Lab.up(nodes=2, name=lab_name("p2")) as lab:
        first, second = lab.nodes
        fence = LabFence(lab) if variant.startswith("fence") else None
        lock_config = {"expected_nodes": 2, "reference_ips": ":".join(GATEWAY_IPS)}
        if fence:
            lock_config["fence_command"] = fence.command
        if variant == "fence_priority":
            lock_config["fence_priority_delay_ms"] = PRIORITY_DELAY_MS
        if variant == "witness":
            lock_config["witness"] = start_witness(lab)
        start_cluster(lab, lock_config=lock_config)
        monitors = [AddressMonitor(node, "0") for node in lab.nodes]
        prober = TailingProber(lab)
        ends = fence.crashes if fence else dict
        try:
            active, _ = ready(lab)
            cut_ns = time.time_ns()
            lab.cut_between(first, second, 100)
            reached = cut_check(lab)
            time.sleep(max(0.0, cut_s - (time.time_ns() - cut_ns) / 1e9))
            lab.cut_between(first, second, 0)
            heal_ns = time.time_ns()
            note(f"two-node {variant}: cut {(heal_ns - cut_ns) / 1e9:.1f} s (reached in the cut: "
                 f"{reached}); holders at the heal: {sorted(holders_now(monitors, ends()))}")
            deadline, single_since = time.monotonic() + AFTER_HEAL_S, None
            while time.monotonic() < deadline:
                if len(holders_now(monitors, ends())) <= 1:
                    single_since = single_since or time.monotonic()
                    if time.monotonic() - single_since >= STABLE_S:
                        break
                else:
                    single_since = None
                time.sleep(0.1)
        finally:
            prober.stop()
            for monitor in monitors:
                if not monitor.node.crashed:
                    monitor.stop()
        spans = overlap_spans(holder_intervals(monitors, ends()))
        attempts = prober.attempts()
        answered_by = sorted({answering_node(d) for s, _, ok, d in attempts if ok and s >= cut_ns})
        late = interleaved_answers(attempts, cut_ns, 1 << 62)
        fenced = {key: [round((t - cut_ns) / 1e6, 1) for t in times]
                  for key, times in ends().items()}
        holders_after = sorted(holders_now(monitors, ends()))
        marks = [(cut_ns, "bench", "cut between n1 and n2"), (heal_ns, "bench", "healed")]
        marks += [(t, key, "fenced (crash done)") for key, times in ends().items() for t in times]
        note("\n".join([f"two-node {variant}, timeline (from the cut):",
                         *outside_timeline(monitors, attempts, cut_ns, time.time_ns(), marks)]))
    for span in spans:
        note(f"two-node {variant}: {span} (+{(span.start_ns - cut_ns) / 1e6:.1f} ms after the cut)")
    return {"double_active_ms": rounded(sum((s.ms for s in spans), 0.0), 1),
            "active_before": active.key, "reached_in_the_cut": reached,
            "client_answered_by_after_cut": answered_by,
            "client_interleaved": len(late),
            "fenced_ms_after_cut": fenced if fence else None,
            "holder_kept_the_service": holders_after == [active.key],
            "holders_after": holders_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2, help="trials per case (default 2)")
    parser.add_argument("--pauses", default=",".join(map(str, PAUSES_MS)),
                        help="pause lengths in ms, comma-separated (default: %(default)s)")
    parser.add_argument("--targets", default=None,
                        help=f"what to pause, comma-separated (default: {','.join(TARGETS)}; "
                             f"with --backend etcd also etcd)")
    parser.add_argument("--backend", choices=("builtin", "etcd"), default="builtin",
                        help="what grants the locks (default: builtin)")
    parser.add_argument("--fence", action="store_true",
                        help="the 3-node part with the lab's fence command: a node out of the "
                             "membership for fence_after_ms (250) is powered off, then taken "
                             "over (a whole node frozen longer than that is never beside its "
                             "successor)")
    parser.add_argument("--two-node", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the two-node cut (default: yes)")
    parser.add_argument("--cut-s", type=float, default=CUT_S,
                        help="length of the two-node cut, s (default %(default)g)")
    parser.add_argument("--budget-min", type=float, default=15.0,
                        help="no new pause trial starts when it could end after this "
                             "(default %(default)g min)")
    args = parser.parse_args()
    try:
        pauses = [int(p) for p in args.pauses.split(",") if p.strip()]
    except ValueError:
        parser.error("--pauses: integers (ms), comma-separated")
    allowed = ETCD_TARGETS if args.backend == "etcd" else TARGETS
    targets = ([t.strip() for t in args.targets.split(",") if t.strip()] if args.targets
               else list(allowed))
    if not 1 <= args.trials <= 20:
        parser.error("--trials: from 1 to 20")
    if not pauses or any(not 1 <= p <= 60_000 for p in pauses):
        parser.error("--pauses: from 1 to 60000 ms each")
    if not targets or any(t not in allowed for t in targets):
        parser.error(f"--targets: some of {', '.join(allowed)}")
    if not 1 <= args.cut_s <= 120:
        parser.error("--cut-s: from 1 to 120")
    two_node = args.two_node and args.backend == "builtin"
    deadline = time.monotonic() + args.budget_min * 60 - (TWO_NODE_RESERVE_S if two_node else 0)
    figures = run_pauses(args.trials, pauses, targets, deadline, fence=args.fence,
                         backend=args.backend)
    figures.update(trials=args.trials, pauses_ms=pauses, targets=targets, fenced=args.fence,
                   backend=args.backend)
    notes = []
    if two_node:
        detail = {}
        for variant in ("plain", "fence", "fence_priority", "witness"):
            try:
                detail[variant] = two_node_cut(variant, args.cut_s)
            except LabError as error:
                detail[variant] = {"double_active_ms": None, "failed": str(error)}
                notes.append(f"two-node {variant}: not measured: {error}")
                note(notes[-1])
        figures.update(
            two_node_unprotected_double_active_ms=detail["plain"]["double_active_ms"],
            two_node_double_active_ms={"fence": detail["fence"]["double_active_ms"],
                                       "fence_priority": detail["fence_priority"][
                                           "double_active_ms"],
                                       "witness": detail["witness"]["double_active_ms"]},
            two_node_holder_kept_the_service={
                v: detail[v].get("holder_kept_the_service") for v in detail},
            two_node_detail=detail, two_node_cut_s=args.cut_s)
        notes += ["two_node_double_active_ms.fence: lock.cfg fence_command = the lab's "
                  "(Lab.fence_command: the lost node is powered off)",
                  f"two_node_double_active_ms.fence_priority: the same with "
                  f"fence_priority_delay_ms = {PRIORITY_DELAY_MS} (the node holding no lock "
                  f"fences later, so the active side wins the race)",
                  "two_node_double_active_ms.witness: lock.cfg witness = the skyge-witness "
                  "the lab runs in its gateway (the node holding no lock asks it "
                  "witness_priority_delay_ms = 300 later)"]
    else:
        figures.update(two_node_unprotected_double_active_ms=None,
                       two_node_double_active_ms={"fence": None, "witness": None})
        notes.append("two-node cut not run (" + ("--no-two-node" if args.backend == "builtin"
                     else "the etcd backend refuses two-node clusters") + ")")
    figures["note"] = notes
    result(figures)


if __name__ == "__main__":
    main()
