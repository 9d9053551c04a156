"""The docs say what the code does: every RPC they name exists in the contracts, every option
they name exists in a config schema, every metric they name is exported, and docs/CONFIG.md is
what the schemas generate."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyge.services.common import config_docs
from skyge.v1 import (bus_pb2, common_pb2, emon_pb2, ha_pb2, heartbeat_pb2, lock_pb2,
                      lock_peer_pb2, witness_pb2)

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md"])
CONTRACTS = (bus_pb2, common_pb2, emon_pb2, ha_pb2, heartbeat_pb2, lock_pb2, lock_peer_pb2,
             witness_pb2)
RPCS = {name: set(service.methods_by_name) for module in CONTRACTS
        for name, service in module.DESCRIPTOR.services_by_name.items()}
#: `Service.Method` or grpcurl's `Service/Method`
SERVICE_NAMES = "|".join(sorted(RPCS, key=len, reverse=True))
RPC_MENTION = re.compile(rf"\b({SERVICE_NAMES})[./]([A-Z]\w*)")
#: a backticked word that reads like an option: snake_case ending as our options do
OPTION_LIKE = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:ms|timeout|file|command|listen|"
                         r"interval|dir|script|ips|priority))`")
#: `key = value;` inside a fenced block: a config file example
CONFIG_LINE = re.compile(r"\s*([a-z][a-z0-9_-]*)\s*=\s*[^=].*;")
METRIC = re.compile(r"`(skyge_[a-z_]+)")


def proto_fields() -> set[str]:
    names: set[str] = set()

    def walk(message) -> None:
        names.update(f.name for f in message.fields)
        for nested in message.nested_types:
            walk(nested)

    for module in CONTRACTS:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            walk(message)
    return names


def fenced_lines(text: str):
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            yield line


def test_config_reference_is_generated_from_the_schemas():
    assert (REPO / "docs" / "CONFIG.md").read_text() == config_docs.render(), (
        "docs/CONFIG.md is stale: python -m skyge.services.common.config_docs > docs/CONFIG.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_rpc_named_in_the_docs_exists(doc):
    missing = sorted({m.group(0) for m in RPC_MENTION.finditer(doc.read_text())
                      if m.group(2) not in RPCS[m.group(1)]})
    assert not missing, f"{doc.name} names RPCs the contracts do not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_option_named_in_the_docs_exists(doc):
    text = doc.read_text()
    options = config_docs.option_names()
    known = options | proto_fields()
    inline = {m.group(1) for m in OPTION_LIKE.finditer(text)} - known
    examples = {m.group(1) for line in fenced_lines(text)
                if (m := CONFIG_LINE.match(line))} - options
    assert not inline, f"{doc.name} names options no schema has: {sorted(inline)}"
    assert not examples, f"{doc.name} has config examples with unknown options: {sorted(examples)}"


def test_every_metric_named_in_the_docs_is_exported():
    source = (REPO / "services" / "emon" / "metrics.py").read_text()
    named = {m.group(1).removesuffix("_total") for doc in DOCS
             for m in METRIC.finditer(doc.read_text())}
    assert named, "the docs name no metric: the pattern is broken"
    missing = sorted(name for name in named if f'"{name}' not in source)
    assert not missing, f"metrics named in the docs that metrics.py does not export: {missing}"
