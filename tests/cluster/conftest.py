"""Fixtures for tests on the virtual cluster: labs with unique names, always taken down.

Tests that use them are skipped (not failed) where the lab cannot run: not root, or no
`ip netns` / nsenter / unshare / nft.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Callable, Iterator

import pytest

from skyge.clients.lab import Lab, cleanup_stale

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
