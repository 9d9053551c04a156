#!/usr/bin/env python3
"""Regenerate the Python code of the gRPC contracts: protos/skyge/v1/*.proto -> *_pb2*.py(i).

For each X.proto it writes, next to it:
    X_pb2.py, X_pb2.pyi           protoc's Python messages and type stubs (--python_out, --pyi_out)
    X_pb2_grpc.py                 grpc_tools' stubs, servicers, add_*_to_server (--grpc_python_out)
    X_pb2_grpc.pyi                mypy-protobuf's protoc-gen-mypy_grpc type stubs

Usage:
    python protos/generate.py           regenerate in place (and delete generated files whose
                                        .proto is gone)
    python protos/generate.py --check   regenerate into a temp folder and compare; exit 1 and
                                        list stale/missing/extra files if the tree is not fresh

Needs grpcio-tools and mypy-protobuf (the `test` extra). Output depends only on the .proto files
and the tool versions, so a check on another machine passes when the versions match.
Exit status: 0 fresh/written, 1 not fresh (--check), 2 tools missing or protoc failed.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent  # protos/: the include root ("skyge/v1/x.proto")
PACKAGE_DIR = Path("skyge") / "v1"
SOURCE_DIR = PROTO_ROOT / PACKAGE_DIR
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
PLUGIN = "protoc-gen-mypy_grpc"


class ToolError(RuntimeError):
    """A code generator is missing or failed."""


def proto_files() -> list[Path]:
    """The .proto files, relative to PROTO_ROOT, in a fixed order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in SOURCE_DIR.glob("*.proto"))


def is_generated(name: str) -> bool:
    return name.endswith(GENERATED_SUFFIXES)


def find_plugin() -> str:
    """mypy-protobuf's gRPC stub plugin: next to this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / PLUGIN
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(PLUGIN)
    if found:
        return found
    raise ToolError(f"{PLUGIN} not found next to {sys.executable} nor on PATH; "
                    f"install mypy-protobuf (pip install 'skyge[test]')")


def well_known_include() -> str:
    """grpc_tools' bundled include folder (google/protobuf/*.proto)."""
    try:
        import grpc_tools
    except ImportError:
        raise ToolError("grpcio-tools is not installed for "
                        f"{sys.executable} (pip install 'skyge[test]')") from None
    return str(Path(grpc_tools.__file__).resolve().parent / "_proto")


def generate(out_root: Path) -> list[Path]:
    """Run protoc once over every .proto; return the generated files, relative to out_root."""
    protos = proto_files()
    if not protos:
        raise ToolError(f"no .proto files in {SOURCE_DIR}")
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_include()}",
        f"--plugin={PLUGIN}={find_plugin()}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(p.as_posix() for p in protos),
    ]
    # Run from PROTO_ROOT with relative file names: nothing machine-specific reaches the output.
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolError(f"protoc failed (exit {result.returncode}):\n"
                        f"{result.stderr.strip() or result.stdout.strip()}")
    for line in (result.stdout + result.stderr).splitlines():  # warnings, minus plugin chatter
        if line.strip() and not line.startswith("Writing mypy to "):
            print(f"protoc: {line}", file=sys.stderr)
    generated = sorted(p.relative_to(out_root) for p in (out_root / PACKAGE_DIR).iterdir()
                       if p.is_file() and is_generated(p.name))
    expected = sorted(PACKAGE_DIR / (p.stem + suffix)
                      for p in protos for suffix in GENERATED_SUFFIXES)
    if generated != expected:
        missing = sorted(set(expected) - set(generated))
        raise ToolError(f"protoc did not produce {', '.join(map(str, missing)) or '?'}")
    return generated


def existing_generated() -> list[Path]:
    return sorted(p.relative_to(PROTO_ROOT) for p in SOURCE_DIR.iterdir()
                  if p.is_file() and is_generated(p.name))


def compare(fresh_root: Path, fresh: list[Path]) -> list[str]:
    """Differences between the tree and a fresh generation, one line each (empty = fresh)."""
    problems = []
    current = set(existing_generated())
    for rel in fresh:
        target = PROTO_ROOT / rel
        if rel not in current:
            problems.append(f"missing: protos/{rel.as_posix()}")
        elif not filecmp.cmp(fresh_root / rel, target, shallow=False):
            problems.append(f"stale:   protos/{rel.as_posix()}")
    for rel in sorted(current - set(fresh)):
        problems.append(f"extra:   protos/{rel.as_posix()} (no .proto generates it)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the generated files are not fresh")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skyge-protos-") as temp:
        out_root = Path(temp)
        try:
            fresh = generate(out_root)
        except ToolError as error:
            print(f"generate.py: {error}", file=sys.stderr)
            return 2
        problems = compare(out_root, fresh)
        if args.check:
            if problems:
                print("generated code is not fresh; run `python protos/generate.py`:",
                      file=sys.stderr)
                for line in problems:
                    print(f"  {line}", file=sys.stderr)
                return 1
            print(f"generated code is fresh ({len(fresh)} files)")
            return 0
        for rel in fresh:
            shutil.copyfile(out_root / rel, PROTO_ROOT / rel)
        for rel in sorted(set(existing_generated()) - set(fresh)):
            (PROTO_ROOT / rel).unlink()
        print(f"wrote {len(fresh)} files in protos/{PACKAGE_DIR.as_posix()}"
              + (f" ({len(problems)} changed)" if problems else " (no change)"))
        return 0


if __name__ == "__main__":
    sys.exit(main())
