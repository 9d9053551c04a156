#!/usr/bin/env python3
"""Copy etcd's published v3 API protos into protos/skyge/etcd/, minus what only Go needs.

The lock daemon's etcd backend (services/lock/etcd/) talks to etcd with stubs that
protos/generate.py makes from these files, like our own contracts. etcd's protos import its
gRPC-gateway, OpenAPI and version annotations, which protoc needs only for those generators; this
drops them (imports, `option (...)` statements and blocks, `[(versionpb...)]` field options) and
points the imports at the copies. Messages, fields, services and package names are untouched, so
the wire format and the method paths (/etcdserverpb.KV/Range...) are etcd's own.

Usage: python protos/vendor_etcd.py ETCD_CHECKOUT   (a clone of github.com/etcd-io/etcd)
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent / "skyge" / "etcd"
#: etcd path -> our file name
SOURCES = {"api/etcdserverpb/rpc.proto": "rpc.proto",
           "api/mvccpb/kv.proto": "kv.proto",
           "api/authpb/auth.proto": "auth.proto"}
IMPORTS = {"etcd/api/mvccpb/kv.proto": "skyge/etcd/kv.proto",
           "etcd/api/authpb/auth.proto": "skyge/etcd/auth.proto"}
DROPPED_IMPORT = re.compile(r'^import "(etcd/api/versionpb|google/api|protoc-gen-openapiv2)/.*";\n',
                            re.MULTILINE)
FIELD_OPTION = re.compile(r'\s*\[\s*\(versionpb\.\w+\)\s*=\s*"[^"]*"\s*\]')
CUSTOM_OPTION = re.compile(r'^[ \t]*option \([\w.]+\)\s*=\s*', re.MULTILINE)


def strip(text: str) -> str:
    text = DROPPED_IMPORT.sub("", text)
    for old, new in IMPORTS.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    text = FIELD_OPTION.sub("", text)
    out: list[str] = []
    position = 0
    for match in CUSTOM_OPTION.finditer(text):
        if match.start() < position:
            continue
        out.append(text[position:match.start()])
        cursor = match.end()
        if text[cursor] == "{":  # a message literal: skip to its balanced end
            depth = 0
            while True:
                depth += {"{": 1, "}": -1}.get(text[cursor], 0)
                cursor += 1
                if depth == 0:
                    break
        end = text.index(";", cursor) + 1
        position = end + 1 if text[end:end + 1] == "\n" else end
    out.append(text[position:])
    return "".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    checkout = Path(argv[0])
    commit = subprocess.run(["git", "-C", str(checkout), "describe", "--tags", "--always"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    TARGET.mkdir(parents=True, exist_ok=True)
    for source, name in SOURCES.items():
        body = strip((checkout / source).read_text())
        header = (f"// etcd's {source} ({commit}), copied by protos/vendor_etcd.py without the\n"
                  f"// gateway, OpenAPI and version annotations. Apache License 2.0, (c) the etcd "
                  f"authors.\n")
        (TARGET / name).write_text(header + body)
        print(f"wrote {TARGET / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
