"""The alert rules and the Grafana dashboard shipped in deploy/ use only metrics the node's
scrape target (services/emon/metrics.py) exposes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import skyge.services.emon.metrics as metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exposed() -> set[str]:
    source = Path(metrics.__file__).read_text()
    gauges = set(re.findall(r'GaugeMetricFamily\("(skyge_\w+)"', source))
    counters = {f"{n}_total" for n in re.findall(r'CounterMetricFamily\("(skyge_\w+)"', source)}
    return gauges | counters


def used_in(text: str) -> set[str]:
    return set(re.findall(r"\b(skyge_[a-z_]+)\b", text)) - {"skyge_cluster"}


def test_the_alert_rules_use_exposed_metrics():
    rules = (DEPLOY / "prometheus" / "skyge-alerts.yml").read_text()
    used = used_in("\n".join(line for line in rules.splitlines() if "expr:" in line))
    assert used and used <= exposed(), used - exposed()


def test_the_dashboard_is_json_and_uses_exposed_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "skyge-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = used_in("\n".join(exprs))
    assert used and used <= exposed(), used - exposed()
