#!/usr/bin/env python3
"""Generate the code of the gRPC contracts, protos/skyge/v1/*.proto: Python (committed), Go, Java.

Python (the default) is committed: for each X.proto it writes into the package, src/skyge/v1/:
    X_pb2.py, X_pb2.pyi           protoc's Python messages and type stubs (--python_out, --pyi_out)
    X_pb2_grpc.py                 grpc_tools' stubs, servicers, add_*_to_server (--grpc_python_out)
    X_pb2_grpc.pyi                mypy-protobuf's protoc-gen-mypy_grpc type stubs

Go and Java are generated on demand, not committed (clients/go and clients/java ignore them):
    --lang go     clients/go/skyge/v1/*.pb.go (package skygev1 of the module in clients/go/go.mod),
                  by grpc_tools' protoc with protoc-gen-go and protoc-gen-go-grpc
    --lang java   clients/java/src/main/java/com/skyge/v1/*.java, by Debian's protoc (grpc_tools'
                  protoc has no Java generator) with grpc-java's plugin; the code needs
                  protobuf-java of that protoc's version (3.21) and grpc-java
The plugins come from Debian packages (`deploy/install.sh` installs them), looked up on PATH.

Usage:
    python protos/generate.py           regenerate the Python code in place (and delete generated
                                        files whose .proto is gone)
    python protos/generate.py --check   regenerate into a temp folder and compare; exit 1 and
                                        list stale/missing/extra files if the tree is not fresh
    python protos/generate.py --lang go|java [--out DIR]
                                        write into DIR (default above), replacing the files an
                                        earlier run generated there

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
from dataclasses import dataclass
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent  # protos/: the include root ("skyge/v1/x.proto")
PACKAGE_DIR = Path("skyge") / "v1"
#: the packages the Python code is generated for: our contracts, and the copy of etcd's v3 API
#: the lock daemon's etcd backend calls (protos/vendor_etcd.py made it; not for Go and Java)
PYTHON_PACKAGES = (PACKAGE_DIR, Path("skyge") / "etcd")
#: the import root the Python code is generated into (src/skyge/v1: the package on disk)
PYTHON_ROOT = PROTO_ROOT.parent / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
PLUGIN = "protoc-gen-mypy_grpc"
REPO_ROOT = PROTO_ROOT.parent
GO_MOD = REPO_ROOT / "clients" / "go" / "go.mod"
DEFAULT_OUT = {"go": REPO_ROOT / "clients" / "go",
               "java": REPO_ROOT / "clients" / "java" / "src" / "main" / "java"}
#: what each language's generators write; an earlier run's files of that kind are replaced
OUTPUT_SUFFIX = {"go": ".pb.go", "java": ".java"}
INSTALL_HINT = "deploy/install.sh installs it"


class ToolError(RuntimeError):
    """A code generator is missing or failed."""


class MissingTool(ToolError):
    """A generator is not installed (tests skip on this one, never on a failure)."""


@dataclass(frozen=True)
class Tool:
    """An executable looked up on PATH under any of `names`, from the Debian `package`."""

    names: tuple[str, ...]
    package: str

    def find(self) -> str:
        for name in self.names:
            found = shutil.which(name)
            if found:
                return found
        raise MissingTool(f"{' or '.join(self.names)} not found on PATH; install the Debian "
                          f"package {self.package} ({INSTALL_HINT})")


PROTOC_GEN_GO = Tool(("protoc-gen-go",), "protoc-gen-go")
PROTOC_GEN_GO_GRPC = Tool(("protoc-gen-go-grpc",), "protoc-gen-go-grpc")
DEBIAN_PROTOC = Tool(("protoc",), "protobuf-compiler")
# upstream's name first, then the one Debian installs
PROTOC_GEN_GRPC_JAVA = Tool(("protoc-gen-grpc-java", "grpc_java_plugin"),
                            "protobuf-compiler-grpc-java-plugin")


def proto_files(packages: tuple[Path, ...] = (PACKAGE_DIR,)) -> list[Path]:
    """The .proto files of `packages`, relative to PROTO_ROOT, in a fixed order."""
    return sorted(p.relative_to(PROTO_ROOT) for package in packages
                  for p in (PROTO_ROOT / package).glob("*.proto"))


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


def run_protoc(command: list[str], protos: list[Path]) -> None:
    """Run a protoc command over the .proto files; echo its warnings, raise on failure."""
    if not protos:
        raise ToolError(f"no .proto files in {PROTO_ROOT / PACKAGE_DIR}")
    # Run from PROTO_ROOT with relative file names: nothing machine-specific reaches the output.
    result = subprocess.run([*command, *(p.as_posix() for p in protos)], cwd=PROTO_ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolError(f"protoc failed (exit {result.returncode}):\n"
                        f"{result.stderr.strip() or result.stdout.strip()}")
    for line in (result.stdout + result.stderr).splitlines():  # warnings, minus plugin chatter
        if line.strip() and not line.startswith("Writing mypy to "):
            print(f"protoc: {line}", file=sys.stderr)


def generate(out_root: Path) -> list[Path]:
    """Run protoc once over every .proto; return the generated files, relative to out_root."""
    protos = proto_files(PYTHON_PACKAGES)
    run_protoc([
        sys.executable, "-m", "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_include()}",
        f"--plugin={PLUGIN}={find_plugin()}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
    ], protos)
    generated = generated_files(out_root)
    expected = sorted(p.parent / (p.stem + suffix)
                      for p in protos for suffix in GENERATED_SUFFIXES)
    if generated != expected:
        missing = sorted(set(expected) - set(generated))
        raise ToolError(f"protoc did not produce {', '.join(map(str, missing)) or '?'}")
    return generated


def go_module() -> str:
    """The Go module path clients/go/go.mod declares: the protos' go_package lies inside it."""
    try:
        text = GO_MOD.read_text()
    except OSError as error:
        raise ToolError(f"cannot read {GO_MOD}: {error.strerror}") from None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "module":
            return words[1]
    raise ToolError(f"{GO_MOD} has no `module PATH` line")


def protoc_command(lang: str, out_root: Path) -> list[str]:
    """The protoc command (minus the .proto files) that writes `lang` code under out_root."""
    if lang == "go":
        # module=: files land under out_root by import path minus the module (skyge/v1/...)
        module = go_module()
        return [sys.executable, "-m", "grpc_tools.protoc",
                f"--proto_path={PROTO_ROOT}",
                f"--proto_path={well_known_include()}",
                f"--plugin=protoc-gen-go={PROTOC_GEN_GO.find()}",
                f"--plugin=protoc-gen-go-grpc={PROTOC_GEN_GO_GRPC.find()}",
                f"--go_out={out_root}", f"--go_opt=module={module}",
                f"--go-grpc_out={out_root}", f"--go-grpc_opt=module={module}"]
    # Debian's protoc finds the well-known types in /usr/include itself (libprotobuf-dev).
    return [DEBIAN_PROTOC.find(),
            f"--proto_path={PROTO_ROOT}",
            f"--plugin=protoc-gen-grpc-java={PROTOC_GEN_GRPC_JAVA.find()}",
            f"--java_out={out_root}",
            f"--grpc-java_out={out_root}"]


def generate_client(lang: str, out: Path) -> list[Path]:
    """Write `lang` (go, java) code into out; return the files written, relative to out.

    Generated into a temp folder first, so a failure leaves out untouched; then the files of the
    same kind that an earlier run left in those folders (from a .proto since removed) go.
    """
    with tempfile.TemporaryDirectory(prefix=f"skyge-{lang}-") as temp:
        fresh_root = Path(temp)
        run_protoc(protoc_command(lang, fresh_root), proto_files())
        fresh = sorted(p.relative_to(fresh_root) for p in fresh_root.rglob("*") if p.is_file())
        if not fresh:
            raise ToolError(f"protoc wrote no {lang} files")
        suffix = OUTPUT_SUFFIX[lang]
        for folder in sorted({rel.parent for rel in fresh}):
            target = out / folder
            target.mkdir(parents=True, exist_ok=True)
            for old in target.iterdir():
                if old.is_file() and old.name.endswith(suffix) and folder / old.name not in fresh:
                    old.unlink()
        for rel in fresh:
            shutil.copyfile(fresh_root / rel, out / rel)
    return fresh


def generated_files(root: Path) -> list[Path]:
    """The generated Python files under root (a fresh output or the package), relative to it."""
    return sorted(p.relative_to(root) for package in PYTHON_PACKAGES
                  if (root / package).is_dir() for p in (root / package).iterdir()
                  if p.is_file() and is_generated(p.name))


def existing_generated() -> list[Path]:
    return generated_files(PYTHON_ROOT)


def compare(fresh_root: Path, fresh: list[Path]) -> list[str]:
    """Differences between the tree and a fresh generation, one line each (empty = fresh)."""
    problems = []
    current = set(existing_generated())
    for rel in fresh:
        target = PYTHON_ROOT / rel
        if rel not in current:
            problems.append(f"missing: src/{rel.as_posix()}")
        elif not filecmp.cmp(fresh_root / rel, target, shallow=False):
            problems.append(f"stale:   src/{rel.as_posix()}")
    for rel in sorted(current - set(fresh)):
        problems.append(f"extra:   src/{rel.as_posix()} (no .proto generates it)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the generated Python files are not fresh")
    parser.add_argument("--lang", choices=("python", "go", "java"), default="python",
                        help="language to generate (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for go/java (default: clients/go, clients/java/src/main/java)")
    args = parser.parse_args(argv)
    if args.lang == "python":
        if args.out is not None:
            parser.error("--out is for --lang go and java: the Python code is committed in "
                         "the package (src/skyge/v1)")
    else:
        if args.check:
            parser.error(f"--check is for the committed Python code; {args.lang} code is "
                         f"generated on demand")
        out = (args.out or DEFAULT_OUT[args.lang]).resolve()
        try:
            written = generate_client(args.lang, out)
        except ToolError as error:
            print(f"generate.py: {error}", file=sys.stderr)
            return 2
        except OSError as error:
            print(f"generate.py: cannot write into {out}: {error}", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} {args.lang} files in {out}")
        return 0
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
            shutil.copyfile(out_root / rel, PYTHON_ROOT / rel)
        for rel in sorted(set(existing_generated()) - set(fresh)):
            (PYTHON_ROOT / rel).unlink()
        print(f"wrote {len(fresh)} files in "
              f"{', '.join(f'src/{p.as_posix()}' for p in PYTHON_PACKAGES)}"
              + (f" ({len(problems)} changed)" if problems else " (no change)"))
        return 0


if __name__ == "__main__":
    sys.exit(main())
