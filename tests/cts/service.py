"""The CTS service: the demo's TCP server behind a floating IP, a pulser, and a user script that
writes every start, stop and status check to the shared record.

Files (under ``LAB_ROOT/LAB/cts/``, seen by every node): ``server.py`` (the demo's server: it
answers each connection with "n<domain> token <fencing token>" and writes its pid file),
``pulser.py`` (calls Ha.Pulse on the node's HA daemon every `PULSE_INTERVAL_S`), ``service.sh``
(the seed contract ``start|stop|status``, exit 0 = ok), ``isolated-nN.sh`` (node N's isolation
script: one record line), ``faults/nN/`` (marker files that make the script misbehave on node N:
`STATUS_HANGS`, `START_EXITS_2`) and the record itself.

Per node, the pid files live in the node's own ``run/cts/`` (emptied when the node boots, like a
real /run), so the service.cfg of each node names its own `pidfile`.

The record gets a ``died`` line the moment the server process exits (``watch.py``, started with
it, waits on its pidfd), whoever ended it: the ``stop`` line of the script comes later, after
its shell started and polled, and would make a copy look longer-lived than it was.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from skyge.clients.lab import GATEWAY_IPS, Lab, LabNode
from skyge.clients.lab.configs import write_daemon_config, write_service_config
from skyge.clients.lab.demo import DEMO_PORT, DEMO_VIP, SERVER_CODE

__all__ = [
    "CHECK_INTERVAL_S",
    "FAILURE_BACKOFF_MAX_S",
    "PORT",
    "PULSE_TIMEOUT_MS",
    "SERVICE_SLOT",
    "SERVICE_TYPE",
    "START_EXITS_2",
    "STATUS_HANGS",
    "STATUS_TIMEOUT_S",
    "VIP",
    "ServiceFiles",
    "install",
]

SERVICE_TYPE, SERVICE_SLOT = "fifo", 0
VIP, PORT = DEMO_VIP, DEMO_PORT
#: the seed's default check interval: a death seen only by `status` takes up to this long
CHECK_INTERVAL_S = 3
STATUS_TIMEOUT_S = 2
PULSE_TIMEOUT_MS = 1000
PULSE_INTERVAL_S = 0.1
#: the longest back-off after a failure (the default 60 s would stall the next scenarios)
FAILURE_BACKOFF_MAX_S = 4
#: fault markers (files under faults/nN/)
STATUS_HANGS = "status-hangs"
START_EXITS_2 = "start-exits-2"

# Runs on the node where the service runs (started by `service.sh start`): a user heartbeat on
# the node's HA daemon. Failed calls (daemon restarting, feature not built) are simply retried.
PULSER_CODE = r'''
import os, sys, time
import grpc
from skyge.v1 import ha_pb2, ha_pb2_grpc
socket_path, kind, slot, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
os.setsid()
request = ha_pb2.PulseRequest(type=ha_pb2.TakeoverOrder.Value("TAKEOVER_" + kind.upper()),
                              slot=slot)
options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
           ("grpc.max_reconnect_backoff_ms", 500)]
with grpc.insecure_channel("unix:" + socket_path, options=options) as channel:
    pulse = ha_pb2_grpc.HaStub(channel).Pulse
    while True:
        try:
            pulse(request, timeout=interval)
        except grpc.RpcError:
            pass
        time.sleep(interval)
'''

# Started with the server (in its own session, so the script's end does not touch it): writes the
# record's `died` line the moment the server exits, on the shared clock.
WATCH_CODE = r'''
import os, select, sys, time
pidfile, record, node, token = sys.argv[1:5]
os.setsid()
try:
    fd = os.pidfd_open(int(open(pidfile).read().split()[0]))
except (OSError, ValueError, IndexError):
    sys.exit(0)
select.select([fd], [], [])
with open(record, "a") as out:
    out.write(f"{time.time_ns()} {node} died {token}\n")
'''

SCRIPT = r'''#!/bin/sh
# skyge CTS service: a TCP server on port {port} and its pulser; every start, stop and status
# check is written to the shared record
DIR="{dir}"
RECORD="{record}"
PY="{python}"
FAULTS="$DIR/faults/n$SKYGE_DOMAIN"
RUN="$SKYGE_ROOT/run/cts"
SERVER_PID="$RUN/server.pid"
PULSER_PID="$RUN/pulser.pid"
note() {{
  printf '%s n%s %s %s\n' "$(date +%s%N)" "$SKYGE_DOMAIN" "$1" "$SKYGE_FENCING_TOKEN" >> "$RECORD"
}}
# a live process (a zombie waiting for its reaper is dead)
live() {{ kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }}
# ours PIDFILE PROGRAM: the pid file names a live process running $DIR/PROGRAM
ours() {{ [ -f "$1" ] && live "$(cat "$1")" && grep -qsaF "$DIR/$2" "/proc/$(cat "$1")/cmdline"; }}
# finish PIDFILE PROGRAM SIGNAL: signal it, SIGKILL after 1 s, return once it is gone (polled
# every 5 ms: the stop line is written at most a few ms after the death)
finish() {{
  if ours "$1" "$2"; then
    pid="$(cat "$1")"; kill -"$3" "$pid" 2>/dev/null
    i=0; while live "$pid" && [ $i -lt 200 ]; do sleep 0.005; i=$((i+1)); done
    kill -KILL "$pid" 2>/dev/null
    i=0; while live "$pid" && [ $i -lt 400 ]; do sleep 0.005; i=$((i+1)); done
    live "$pid" && return 1
  fi
  rm -f "$1"
}}
case "$1" in
  start)
    [ -e "$FAULTS/{start_exits_2}" ] && exit 2
    ours "$SERVER_PID" server.py && exit 0
    mkdir -p "$RUN"
    note start
    if ! "$PY" -I -S "$DIR/server.py" {port} "$SKYGE_DOMAIN" "$SKYGE_FENCING_TOKEN" \
        "$SERVER_PID"; then
      finish "$SERVER_PID" server.py KILL && note stop
      exit 1
    fi
    "$PY" -I -S "$DIR/watch.py" "$SERVER_PID" "$RECORD" "n$SKYGE_DOMAIN" \
      "$SKYGE_FENCING_TOKEN" </dev/null >/dev/null 2>&1 &
    "$PY" -I "$DIR/pulser.py" "$SKYGE_ROOT/run/skyge/ha.sock" "$SKYGE_TYPE" "$SKYGE_SLOT" \
      {pulse_interval} </dev/null >/dev/null 2>&1 &
    echo $! > "$PULSER_PID"
    exit 0 ;;
  stop)
    finish "$PULSER_PID" pulser.py KILL
    finish "$SERVER_PID" server.py TERM || exit 1
    note stop; exit 0 ;;
  status)
    [ -e "$FAULTS/{status_hangs}" ] && exec sleep 3600
    note status
    ours "$SERVER_PID" server.py && exit 0; exit 1 ;;
esac
exit 1
'''

ISOLATION_SCRIPT = """#!/bin/sh
printf '%s {node} isolated\\n' "$(date +%s%N)" >> "{record}"
"""


class ServiceFiles:
    """Where the service's files are for one lab."""

    def __init__(self, lab: Lab) -> None:
        self.folder = lab.root / "cts"
        self.record = self.folder / "record.log"
        self.script = self.folder / "service.sh"

    def fault_marker(self, node: LabNode, fault: str) -> Path:
        return self.folder / "faults" / node.key / fault

    def run_dir(self, node: LabNode) -> Path:
        return node.root / "run" / "cts"

    def server_pid(self, node: LabNode) -> int | None:
        return _read_pid(self.run_dir(node) / "server.pid")

    def pulser_pid(self, node: LabNode) -> int | None:
        return _read_pid(self.run_dir(node) / "pulser.pid")

    def isolation_script(self, node: LabNode) -> Path:
        return self.folder / f"isolated-{node.key}.sh"


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def install(lab: Lab) -> ServiceFiles:
    """Write the programs and scripts, and on every node slots/fifo/0/service.cfg and ha.cfg."""
    files = ServiceFiles(lab)
    files.folder.mkdir(parents=True, exist_ok=True)
    (files.folder / "server.py").write_text(SERVER_CODE)
    (files.folder / "pulser.py").write_text(PULSER_CODE)
    (files.folder / "watch.py").write_text(WATCH_CODE)
    files.script.write_text(SCRIPT.format(
        port=PORT, dir=files.folder, record=files.record, python=sys.executable,
        pulse_interval=PULSE_INTERVAL_S, start_exits_2=START_EXITS_2, status_hangs=STATUS_HANGS))
    files.script.chmod(0o755)
    for node in lab.nodes:
        (files.folder / "faults" / node.key).mkdir(parents=True, exist_ok=True)
        isolation = files.isolation_script(node)
        isolation.write_text(ISOLATION_SCRIPT.format(node=node.key, record=files.record))
        isolation.chmod(0o755)
        values: dict[str, Any] = {
            "name": "cts", "desc": "skyge CTS service", "script": str(files.script),
            "onstart": "yes", "fip": f"eth0-{VIP}-255.255.255.0-192.168.1.255:",
            "start_timeout": 10, "stop_timeout": 10, "check_interval": CHECK_INTERVAL_S,
            "check_failures": 1, "status_timeout": STATUS_TIMEOUT_S, "restarts": 0,
            "pidfile": str(files.run_dir(node) / "server.pid"),
            "pulse_timeout_ms": PULSE_TIMEOUT_MS, "failure_backoff_max": FAILURE_BACKOFF_MAX_S,
        }
        write_service_config(node, SERVICE_TYPE, SERVICE_SLOT, values)
        write_daemon_config(node, "ha", {"reference_ips": ":".join(GATEWAY_IPS),
                                         "isolation_script": str(isolation)})
    return files
