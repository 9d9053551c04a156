"""The CTS checker on hand-written records (pure: no lab)."""
from __future__ import annotations

from tests.cts import checker
from tests.cts.record import Event, Record, parse_line

MS = 1_000_000
S = 1000 * MS


def ev(t: int, source: str, kind: str, *args: str) -> Event:
    return Event(t, source, kind, args)


def test_the_record_round_trips_and_skips_partial_lines(tmp_path):
    record = Record(tmp_path / "record.log")
    stamp = record.note("crash", "n1")
    with open(record.path, "a") as f:
        f.write(f"{stamp + 1} n2 start 7\n{stamp + 2} n2 st")
    assert record.events() == [ev(stamp, "harness", "crash", "n1"),
                               ev(stamp + 1, "n2", "start", "7")]
    assert record.events(stamp + 1) == [ev(stamp + 1, "n2", "start", "7")]
    assert parse_line("garbage") is None


def test_a_clean_handover_is_not_double_active():
    events = [ev(0, "n1", "start", "1"), ev(100 * MS, "n1", "stop", "1"),
              ev(101 * MS, "n2", "start", "2")]
    intervals = checker.copies(events, now_ns=S)
    assert [(i.node, i.start_ns, i.end_ns, i.ended_by) for i in intervals] == [
        ("n1", 0, 100 * MS, "stop"), ("n2", 101 * MS, S, "running")]
    assert checker.overlaps(intervals) == []
    assert checker.running_nodes(intervals) == {"n2"}


def test_a_start_before_the_old_copy_stopped_is_double_active():
    events = [ev(0, "n1", "start", "1"), ev(50 * MS, "n2", "start", "2"),
              ev(80 * MS, "n1", "stop", "1"), ev(90 * MS, "n3", "start", "3")]
    found = checker.overlaps(checker.copies(events, now_ns=S))
    assert [(o.first.node, o.second.node, o.start_ns, o.end_ns) for o in found] == [
        ("n1", "n2", 50 * MS, 80 * MS), ("n2", "n3", 90 * MS, S)]


def test_a_crash_or_a_killed_server_ends_the_copy():
    events = [ev(0, "n1", "start", "1"), ev(10 * MS, "harness", "crash", "n1"),
              ev(60 * MS, "n2", "start", "2"), ev(70 * MS, "harness", "kill-server", "n2", "99"),
              ev(75 * MS, "n3", "start", "3"), ev(80 * MS, "n2", "stop", "2")]
    intervals = checker.copies(events, now_ns=S)
    assert [(i.node, i.end_ns, i.ended_by) for i in intervals] == [
        ("n1", 10 * MS, "crash"), ("n2", 70 * MS, "kill-server"), ("n3", S, "running")]
    assert checker.overlaps(intervals) == []


def frozen_takeover(stop_after_thaw_ns: int) -> list[Event]:
    return [ev(0, "n1", "start", "1"), ev(1 * S, "harness", "freeze", "n1"),
            ev(1 * S + 40 * MS, "n2", "start", "2"), ev(2 * S, "harness", "thaw", "n1"),
            ev(2 * S + stop_after_thaw_ns, "n1", "stop", "1")]


def test_a_frozen_copy_stopped_soon_after_the_thaw_ended_at_the_freeze():
    intervals = checker.copies(frozen_takeover(60 * MS), now_ns=5 * S)
    assert intervals[0].end_ns == 1 * S
    assert checker.overlaps(intervals) == []


def test_a_frozen_copy_still_running_a_second_after_the_thaw_is_double_active():
    intervals = checker.copies(frozen_takeover(checker.THAW_GRACE_NS + MS), now_ns=5 * S)
    assert intervals[0].end_ns == 3 * S + MS
    assert [(o.start_ns, o.end_ns) for o in checker.overlaps(intervals)] == [
        (1 * S + 40 * MS, 3 * S + MS)]


def test_a_copy_frozen_to_the_end_or_crashed_while_frozen_ended_at_the_freeze():
    still = [ev(0, "n1", "start", "1"), ev(1 * S, "harness", "freeze", "n1")]
    assert checker.copies(still, now_ns=5 * S)[0].end_ns == 1 * S
    crashed = [*still, ev(3 * S, "harness", "crash", "n1")]
    assert checker.copies(crashed, now_ns=5 * S)[0].end_ns == 1 * S


def test_a_freeze_without_a_takeover_changes_nothing():
    events = [ev(0, "n1", "start", "1"), ev(1 * S, "harness", "freeze", "n1"),
              ev(2 * S, "harness", "thaw", "n1"), ev(9 * S, "n1", "stop", "1")]
    assert checker.copies(events, now_ns=10 * S)[0].end_ns == 9 * S


def test_availability_leaves_out_the_expect_down_windows():
    events = [ev(10, "harness", "expect-down", "begin", "every", "node", "stopped"),
              ev(20, "harness", "expect-down", "end"),
              ev(40, "harness", "expect-down", "begin", "hard", "reset")]
    probes = [(5, 6, True, "n1 token 1"), (12, 13, False, "timeout"), (25, 26, False, "timeout"),
              (30, 31, True, "n2 token 2"), (45, 46, False, "timeout")]
    result = checker.availability(probes, events, since_ns=0, until_ns=50)
    assert (result.answered, result.expected, result.excluded) == (2, 3, 2)
    assert result.percent == 66.667


def test_the_probes_give_stale_answers_the_first_answer_and_the_longest_gap():
    probes = [(0, 1, True, "n1 token 4"), (2, 3, False, "timeout"), (4, 5, True, "n2 token 5"),
              (6, 7, True, "n1 token 4"), (8, 9, True, "n2 token 5")]
    assert checker.stale_answers(probes, 0, 10) == [
        "at 7: n1 answered with token 4 after n2 had answered with token 5"]
    assert checker.stale_answers(probes, 7, 10) == []
    assert checker.first_answer(probes, 2, ["n2"]) == (5, "n2")
    assert checker.first_answer(probes, 2, ["n3"]) is None
    assert checker.longest_gap(probes, 0, 20) == 11e-9  # 9 -> 20 without an answer
