"""`skyge` starts fast: building its parser loads no gRPC, protobuf, cryptography or daemon code
(bench/cli_startup.py measures the time; this guards the cause), and the commands that import
those themselves still run."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from skyge.clients.cli import heartbeat_commands, lab_commands, main

#: what `skyge --help` must not load: each costs 10-40 ms to import (grpc alone ~40 ms)
HEAVY = ("grpc", "google.protobuf", "cryptography", "psutil", "pyroute2", "shtab",
         "skyge.v1", "skyge.services", "skyge.clients.connect", "skyge.clients.lab")


def test_parsing_and_help_load_no_heavy_module():
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        from skyge.clients.cli.main import build_parser, main
        for argv in (["--help"], ["ha", "--help"], ["ha", "status", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv)
                except SystemExit:
                    pass
        build_parser().parse_args(["lock", "test", "-s", "1", "-l", "1"])
        print(json.dumps(sorted(sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = [name for name in json.loads(done.stdout)
              if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)]
    assert not loaded, (f"building the CLI parser loaded {', '.join(loaded)}: import them inside "
                        f"the command functions that use them (see clients/cli/main.py)")


def test_constants_copied_for_speed_match_their_source(monkeypatch, tmp_path):
    from skyge.clients import lab
    from skyge.clients.connect import default_root
    from skyge.services.heartbeat.wire import MAX_PATHS

    assert heartbeat_commands.MAX_PATHS == MAX_PATHS
    assert (lab_commands.DEFAULT_NAME, lab_commands.MAX_NODES, lab_commands.NICS) == \
        (lab.DEFAULT_NAME, lab.MAX_NODES, lab.NICS)
    monkeypatch.setenv("SKYGE_ROOT", str(tmp_path))
    assert main.build_parser().parse_args(["status"]).root == default_root() == str(tmp_path)


#: one command line per way a command reaches its daemon (unary, stream, session, other service)
OFFLINE = {
    "heartbeat": [["heartbeat", "show"], ["heartbeat", "watch"], ["heartbeat", "names"],
                  ["heartbeat", "stats"], ["hw-code"]],
    "bus": [["bus", "create", "-d", "1", "-n", "b"], ["bus", "list", "-d", "1"],
            ["bus", "delete", "-d", "1", "-n", "b"], ["bus", "init", "-d", "1"],
            ["bus", "send", "-d", "1", "-n", "b", "-m", "hi"],
            ["bus", "spy", "-d", "1", "-n", "b"]],
    "lock": [["lock", "test", "-s", "1", "-l", "1"],
             ["lock", "run", "-s", "1", "-l", "1", "--", "true"],
             ["lock", "inspect", "-s", "1", "-l", "1"], ["lock", "list"],
             ["lock", "list", "-s", "1"], ["lock", "authority"], ["lock", "expected", "3"],
             ["lock", "campaign", "-g", "g"],
             ["lock", "observe", "-g", "g"], ["lock", "peers"]],
    "ha": [["ha", "query", "-d", "1"], ["ha", "status"], ["ha", "status", "--watch"],
           ["ha", "svc", "-d", "1", "-s", "2", "-t", "fifo", "-a", "start"], ["ha", "stopall"],
           ["ha", "pulse", "-n", "mysql"], ["ha", "pulse", "-t", "stack", "-s", "3"]],
    "emon": [["emon", "show"], ["emon", "watch"], ["emon", "history", "cpu_load"],
             ["emon", "probes"], ["emon", "watermarks"], ["emon", "reload"], ["emon", "stats"]],
}


@pytest.mark.parametrize("daemon,argv", [(d, a) for d, argvs in OFFLINE.items() for a in argvs],
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_commands_import_what_they_need_and_report_a_daemon_down(daemon, argv, tmp_path,
                                                                 capsys):
    assert main.main(["--root", str(tmp_path), "--timeout", "5", *argv]) == 1
    error = capsys.readouterr().err
    assert f"cannot reach skyge-{daemon} at {tmp_path}/run/skyge/{daemon}.sock" in error, error


def test_status_imports_the_health_service_and_names_the_daemons_down(tmp_path, capsys):
    assert main.main(["--root", str(tmp_path), "status"]) == 1
    assert capsys.readouterr().err.strip() == \
        "skyge: not serving: heartbeat, bus, lock, ha, emon"


def test_ha_requests_carry_the_chosen_enum_values(monkeypatch):
    from skyge.clients.cli import ha_commands
    from skyge.v1 import ha_pb2

    sent = []
    monkeypatch.setattr(ha_commands, "_show", lambda args, out, rpc, request, *_, **__:
                        sent.append(request) or 0)
    for argv in (["ha", "svc", "-d", "1", "-s", "2", "-t", "fifo", "-a", "switch"],
                 ["ha", "pulse", "-t", "stack", "-s", "3"]):
        args = main.build_parser().parse_args(argv)
        args.handler(args, None)
    assert (sent[0].type, sent[0].action, sent[0].slot) == \
        (ha_pb2.TAKEOVER_FIFO, ha_pb2.ACTION_SWITCH, 2)
    assert (sent[1].type, sent[1].slot) == (ha_pb2.TAKEOVER_STACK, 3)
    assert [ha_pb2.TakeoverOrder.Value(name) for name in ha_commands.TYPES.values()]
    assert [ha_pb2.Action.Value(name) for name in ha_commands.ACTIONS.values()]


def test_lock_failure_reasons_read_as_words():
    from skyge.clients.cli.lock_commands import _fail_text, _lost_text
    from skyge.v1 import lock_pb2

    assert _fail_text(lock_pb2.FAIL_BUSY) == "the lock is held"
    assert _lost_text(lock_pb2.LOST_NODE_LEFT) == "node left"
    assert (_fail_text(99), _lost_text(99)) == ("failed", "lost")
