"""docs/CONFIG.md, generated from the schemas the daemons validate their files with, so the
list of options, defaults and ranges cannot drift from the code.

    python -m skyge.services.common.config_docs > docs/CONFIG.md

`tests/unit/test_docs.py` fails when the file is not what this prints.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from skyge.services.common.config import Field, Schema, boolean
from skyge.services.common.runner import DaemonSpec, config_schema

#: (module holding the daemon's SPEC, its file) in the order a node starts them
DAEMON_SPECS = (
    ("skyge.services.heartbeat.daemon", "heartbeat.cfg"),
    ("skyge.services.bus.daemon", "bus.cfg"),
    ("skyge.services.lock.__main__", "lock.cfg"),
    ("skyge.services.ha.daemon", "ha.cfg"),
    ("skyge.services.emon.daemon", "emon.cfg"),
    ("skyge.services.witness.__main__", "witness.cfg"),
)


def _spec(module: str) -> DaemonSpec:
    spec = importlib.import_module(module).SPEC
    assert isinstance(spec, DaemonSpec)
    return spec


def table_meanings(doc: str) -> dict[str, str]:
    """The meaning column of an rst-style option table in a module docstring (the first one:
    option, default, meaning; continuation lines indented), by option name."""
    meanings: dict[str, str] = {}
    rules = 0
    column = 0  # where the meaning column starts (from the first rule's third run of '=')
    current = ""
    for line in doc.splitlines():
        if line.startswith("====="):
            rules += 1
            column = column or line.index("=", line.index(" ", line.index(" =") + 2))
            continue
        if rules != 2 or not line.strip():  # between the heading's rule and the closing one
            continue
        if not line.startswith(" "):
            current = line.split()[0]
            meanings[current] = line[column:].strip()
        elif current:
            meanings[current] += " " + line.strip()
    return meanings


def other_schemas() -> list[tuple[str, str, Schema]]:
    """(file, where it lives, schema) of the files that are not a daemon's own config."""
    from dataclasses import replace

    from skyge.services.emon.probes import _SCHEMA_FIELDS as PROBE_FIELDS
    from skyge.services.ha import service_config
    meanings = table_meanings(service_config.__doc__ or "")
    service_schema = Schema([f if f.help else replace(f, help=meanings.get(f.name, ""))
                             for f in service_config.SCHEMA.fields])
    return [
        ("service.cfg (HA)", "ROOT/etc/skyge/ha/slots/{random,fifo,stack}/N/service.cfg: one "
                             "service (see services/ha/service_config.py for the seed's meanings)",
         service_schema),
        ("probe.cfg (emon)", "ROOT/etc/skyge/emon/probes/NAME/probe.cfg: a plug-in probe",
         Schema(list(PROBE_FIELDS))),
    ]


def schemas() -> list[tuple[str, str, Schema]]:
    """Every file kind with a schema: (file, where, schema)."""
    daemons = []
    for module, file in DAEMON_SPECS:
        spec = _spec(module)
        daemons.append((file, f"ROOT/etc/skyge/{file}: skyge-{spec.name}", config_schema(spec)))
    return daemons + other_schemas()


def option_names() -> set[str]:
    """Every option (and alias) any of these files accepts."""
    return {name for _, _, schema in schemas() for f in schema.fields
            for name in (f.name, *f.aliases)}


def _default(field: Field) -> str:
    if field.required:
        return "required"
    value: Any = field.default
    if value is None or value == () or value == []:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _allowed(field: Field) -> str:
    if field.convert is boolean:
        return "yes or no"
    return str(getattr(field.convert, "allowed", ""))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(fields: Iterable[Field]) -> list[str]:
    rows = ["| option | default | allowed | meaning |", "|---|---|---|---|"]
    for f in fields:
        name = f"`{f.name}`" + "".join(f" (also `{a}`)" for a in f.aliases)
        rows.append(f"| {name} | {_cell(_default(f))} | {_cell(_allowed(f))} | "
                    f"{_cell(f.help)} |")
    return rows


def render() -> str:
    lines = ["# Configuration files", "",
             "Generated from the schemas in the code by `python -m "
             "skyge.services.common.config_docs > docs/CONFIG.md`; do not edit by hand "
             "(tests/unit/test_docs.py checks it is fresh). Every file is libconfig text "
             "(`key = value;`); an unknown option or a value out of range is refused with the "
             "file, line, option and the allowed range, and a daemon that cannot read its file "
             "does not start. Daemons re-read their file on SIGHUP (`systemctl reload`).", ""]
    for file, where, schema in schemas():
        lines += [f"## {file}", "", f"{where}.", "", *_table(schema.fields), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
