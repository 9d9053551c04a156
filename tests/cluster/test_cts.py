"""The CTS scenarios (`tests.cts`) on one shared 3-node lab per lock backend (built-in, etcd)
with the real daemons, each once.

Each test runs one scenario from the baseline and asserts the runner's verdict: no double
activity, no stale answer, the service back on the expected node within the scenario's bound
(see `tests.cts.runner`). A failed scenario is followed by a hard reset, so the next test starts
from a clean cluster.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.cts.cluster import CtsCluster
from tests.cts.runner import run_scenario
from tests.cts.scenarios import SCENARIOS

from .conftest import unique_lab_name

pytestmark = pytest.mark.lab

SEED = 7


@pytest.fixture(scope="module", params=["builtin", "etcd"])
def cts(lab_support: None, request: pytest.FixtureRequest):
    """One lab per lock backend: every scenario runs against the built-in authority and against
    etcd (one member per node)."""
    cluster = CtsCluster.up(nodes=3, name=unique_lab_name(), backend=request.param)
    yield cluster
    cluster.down()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(cts: CtsCluster, name: str) -> None:
    verdict = run_scenario(cts, SCENARIOS[name], random.Random(f"{SEED}:{name}"))
    if not verdict.passed:
        if keep := os.environ.get("SKYGE_TEST_KEEP_LOGS"):  # see conftest: add the CTS record
            cts.save(Path(keep) / f"test_scenario_{name}" / "cts")
        pytest.fail(verdict.explain(), pytrace=False)
