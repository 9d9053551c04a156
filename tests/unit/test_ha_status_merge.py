"""How `Ha.Status` merges the lock table with the members' own views (services/ha/server.py,
`merge_status`, pure): the holder is where a service runs, its waiters in lock order are the
takeover order, the holder's view gives state/since/reason, and without a lock table the nodes'
views stand in."""
from __future__ import annotations

from skyge.services.ha.server import merge_status
from skyge.v1 import common_pb2, ha_pb2 as pb, lock_pb2


def view(domain: int, state: int, *, holds: bool = False, token: int = 0, since: int = 0,
         reason: str = "", fails: int = 0, type: int = pb.TAKEOVER_FIFO, slot: int = 0,
         name: str = "mysql") -> pb.LocalService:
    return pb.LocalService(
        config=pb.ServiceConfig(type=type, slot=slot, name=name, domain=domain),
        status=pb.NodeServiceStatus(domain=domain, state=state, holds_lock=holds,
                                    fencing_token=token, since_unix_ns=since or domain,
                                    reason=reason or f"reason {domain}", fail_count=fails))


def holder(domain: int, label: str = "ha:fifo/0:mysql", token: int = 0) -> lock_pb2.Holder:
    return lock_pb2.Holder(node=common_pb2.NodeId(netid=1000, domain=domain), label=label,
                           fencing_token=token)


def lock(holder_: lock_pb2.Holder | None, *waiters: lock_pb2.Holder,
         slot: int = 512, number: int = 0) -> lock_pb2.LockState:
    state = lock_pb2.LockState(slot=slot, lock=number, waiters=list(waiters))
    if holder_ is not None:
        state.holder.CopyFrom(holder_)
    return state


def test_holder_runs_it_and_waiters_are_in_lock_order():
    views = {1: [view(1, pb.SERVICE_RUNNING, holds=True, token=7, since=100, reason="running")],
             2: [view(2, pb.SERVICE_WAITING, fails=1)], 3: [view(3, pb.SERVICE_WAITING)]}
    locks = {("fifo", 0): lock(holder(1, token=7), holder(3), holder(2))}
    [status] = merge_status(views, locks)
    assert (status.state, status.active_domain, list(status.waiting_domains)) == (
        pb.SERVICE_RUNNING, 1, [3, 2])
    assert (status.fencing_token, status.since_unix_ns, status.reason) == (7, 100, "running")
    assert status.fail_count == 1 and [n.domain for n in status.nodes] == [1, 2, 3]


def test_other_sessions_on_the_same_lock_are_not_services():
    views = {1: [view(1, pb.SERVICE_WAITING)]}
    locks = {("fifo", 0): lock(holder(2, label="test_d_lock"), holder(1))}
    [status] = merge_status(views, locks)
    assert (status.state, status.active_domain, list(status.waiting_domains)) == (
        pb.SERVICE_WAITING, 0, [1])


def test_stopped_by_command_keeps_the_lock():
    views = {1: [view(1, pb.SERVICE_STOPPED, holds=True, token=4, reason="stopped")],
             2: [view(2, pb.SERVICE_WAITING)]}
    [status] = merge_status(views, {("fifo", 0): lock(holder(1, token=4), holder(2))})
    assert (status.state, status.active_domain, list(status.waiting_domains)) == (
        pb.SERVICE_STOPPED, 1, [2])


def test_granted_but_not_yet_seen_by_its_supervisor_is_starting():
    views = {2: [view(2, pb.SERVICE_WAITING)]}
    [status] = merge_status(views, {("fifo", 0): lock(holder(2, token=9))})
    assert (status.state, status.active_domain, status.fencing_token) == (
        pb.SERVICE_STARTING, 2, 9)


def test_holder_whose_ha_daemon_did_not_answer():
    views = {2: [view(2, pb.SERVICE_WAITING)]}
    [status] = merge_status(views, {("fifo", 0): lock(holder(3, token=5), holder(2))})
    assert (status.state, status.active_domain, status.fencing_token) == (
        pb.SERVICE_RUNNING, 3, 5)
    assert "did not answer" in status.reason


def test_nobody_holds_or_waits():
    released = {1: [view(1, pb.SERVICE_RELEASED)], 2: [view(2, pb.SERVICE_RELEASED)]}
    assert merge_status(released, {})[0].state == pb.SERVICE_RELEASED
    mixed = {1: [view(1, pb.SERVICE_RELEASED)], 2: [view(2, pb.SERVICE_STOPPED, since=50)]}
    [status] = merge_status(mixed, {})
    assert status.state == pb.SERVICE_STOPPED and status.reason == "on 2: reason 2"
    failed = {1: [view(1, pb.SERVICE_FAILED, since=9, reason="start failed")],
              2: [view(2, pb.SERVICE_STOPPED, since=99)]}
    [status] = merge_status(failed, {})
    assert status.state == pb.SERVICE_FAILED and status.reason == "on 1: start failed"


def test_without_a_lock_table_the_nodes_views_stand_in():
    views = {1: [view(1, pb.SERVICE_RUNNING, holds=True, token=3)],
             3: [view(3, pb.SERVICE_WAITING)], 2: [view(2, pb.SERVICE_WAITING)]}
    [status] = merge_status(views, None)
    assert (status.state, status.active_domain, list(status.waiting_domains)) == (
        pb.SERVICE_RUNNING, 1, [2, 3])


def test_sorted_by_type_then_slot_and_filtered():
    views = {1: [view(1, pb.SERVICE_STOPPED, type=pb.TAKEOVER_STACK, slot=2, name="smb"),
                 view(1, pb.SERVICE_STOPPED, type=pb.TAKEOVER_FIFO, slot=0, name="mysql"),
                 view(1, pb.SERVICE_STOPPED, type=pb.TAKEOVER_RANDOM, slot=1, name="bind")]}
    assert [s.name for s in merge_status(views, {})] == ["bind", "mysql", "smb"]
    assert [s.name for s in merge_status(views, {}, only=("stack", 2))] == ["smb"]
