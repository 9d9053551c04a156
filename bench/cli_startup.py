"""Start-up time of the `skyge` command (issue 16: at most 100 ms for parsing and --help).

    python -m bench.cli_startup [--runs 30] [--no-bytecode-cache]

Wall time of whole processes, as a user waits for them, each command `--runs` times in turn:

- help: `skyge --help`, `skyge ha --help` and `skyge ha status --help` (p50/p99 over all);
- python: `python -c pass` in the same interpreter, the floor under any command;
- rpc_error: `skyge ha status` on a node root with no daemon, until its one-line error: the path
  of every command that calls a daemon, whose imports (gRPC, protobuf) the help does not load;
- grpc_import: `import grpc` alone, inside one process (the largest part of rpc_error).

The console script next to this interpreter is run (`python -m skyge.clients.cli.main` if there
is none). Bytecode is cached in a private folder, after one warm-up run of each command, as it
is on an installed node; `--no-bytecode-cache` compiles the sources on every run instead (what
PYTHONDONTWRITEBYTECODE=1 costs).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import note, percentile, result, rounded

HELP = (["--help"], ["ha", "--help"], ["ha", "status", "--help"])
MAX_RUNS = 1000


def skyge_command() -> list[str]:
    script = Path(sys.executable).parent / "skyge"
    return [str(script)] if script.exists() else [sys.executable, "-m", "skyge.clients.cli.main"]


def wall_ms(argv: list[str], env: dict[str, str], expect: int = 0) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, not {expect}: "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30,
                        help=f"runs of each command (default 30, at most {MAX_RUNS})")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="compile the sources on every run (PYTHONDONTWRITEBYTECODE=1)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be 1 to {MAX_RUNS}")
    skyge = skyge_command()
    with tempfile.TemporaryDirectory(prefix="skyge-bench-") as scratch:
        env = dict(os.environ, SKYGE_ROOT=os.path.join(scratch, "node"))
        if args.no_bytecode_cache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
        rpc = [*skyge, "ha", "status"]
        grpc_import = [sys.executable, "-c", "import time; t = time.perf_counter(); import grpc; "
                                             "print((time.perf_counter() - t) * 1000)"]
        for command in HELP:  # warm-up: bytecode written, files in the page cache
            wall_ms([*skyge, *command], env)
        wall_ms(rpc, env, expect=1)
        helps: list[float] = []
        python: list[float] = []
        rpc_error: list[float] = []
        grpc_ms: list[float] = []
        for _ in range(args.runs):
            helps += [wall_ms([*skyge, *command], env) for command in HELP]
            python.append(wall_ms([sys.executable, "-c", "pass"], env))
            rpc_error.append(wall_ms(rpc, env, expect=1))
            grpc_ms.append(float(subprocess.run(grpc_import, env=env, capture_output=True,
                                                text=True, timeout=60, check=True).stdout))
    note(f"{' '.join(skyge)}: help p50 {percentile(helps, 50):.1f} ms, python alone "
         f"{percentile(python, 50):.1f} ms, ha status to its error {percentile(rpc_error, 50):.1f} "
         f"ms (import grpc {percentile(grpc_ms, 50):.1f} ms)")
    result({"help_p50_ms": rounded(percentile(helps, 50), 1),
            "help_p99_ms": rounded(percentile(helps, 99), 1),
            "python_p50_ms": rounded(percentile(python, 50), 1),
            "rpc_error_p50_ms": rounded(percentile(rpc_error, 50), 1),
            "grpc_import_p50_ms": rounded(percentile(grpc_ms, 50), 1),
            "bytecode_cache": not args.no_bytecode_cache, "runs": args.runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
