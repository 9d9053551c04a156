"""Fixtures for tests on the virtual cluster: labs with unique names, always taken down.

Tests that use them are skipped (not failed) where the lab cannot run: not root, or no
`ip netns` / nsenter / unshare / nft.

With SKYGE_TEST_KEEP_LOGS=DIR, a failed test leaves the logs of every lab up at that moment
(daemons, service scripts, fences) in DIR/TEST/LAB: the labs themselves are always taken down.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest

from skyge.clients.lab import Lab, cleanup_stale, owned_labs

#: every test lab is called "t" + 7 hex digits, so runs (even concurrent ones) never collide
TEST_PREFIX = "t"


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "nsenter", "unshare", "nft", "ping"):
        if shutil.which(tool) is None:
            return f"the lab needs {tool}, which is not installed"
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`ip netns` is unavailable: {error}"
    if done.returncode != 0:
        return f"`ip netns` is unavailable: {done.stderr.decode(errors='replace').strip()}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep the evidence of a failed test (see the module's docstring) before fixtures end."""
    outcome = yield
    report = outcome.get_result()
    keep = os.environ.get("SKYGE_TEST_KEEP_LOGS")
    if keep and report.failed and report.when == "call":
        test = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.name)
        for lab in owned_labs():
            lab.save_logs(Path(keep) / test / lab.name)


def unique_lab_name() -> str:
    return f"{TEST_PREFIX}{uuid.uuid4().hex[:7]}"


@pytest.fixture(scope="session")
def lab_support() -> Iterator[None]:
    """Skip when the lab cannot run; once per session, remove test labs of crashed runs."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    cleanup_stale(prefix=TEST_PREFIX)  # only labs whose owner process is gone
    yield


@pytest.fixture
def new_lab_name(lab_support: None) -> Callable[[], str]:
    """Factory of unique lab names, for tests that manage a lab's life themselves."""
    return unique_lab_name


@pytest.fixture
def make_lab(lab_support: None) -> Iterator[Callable[..., Lab]]:
    """Factory: `make_lab(nodes=3, **Lab.up options)` -> a fresh lab, taken down after the test."""
    labs: list[Lab] = []

    def factory(nodes: int = 3, **options: object) -> Lab:
        options.setdefault("name", unique_lab_name())
        lab = Lab.up(nodes=nodes, **options)  # type: ignore[arg-type]
        labs.append(lab)
        return lab

    yield factory
    for lab in labs:
        lab.down()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A fresh 3-node lab."""
    return make_lab(3)
