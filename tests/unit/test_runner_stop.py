"""A daemon whose stop takes long says where it waits (services/common/runner.py): a stop that
hangs is found from its log, not guessed at."""
from __future__ import annotations

import asyncio
import logging

import pytest

from skyge.services.common import runner


async def _waiting_for_the_lock_daemon() -> None:
    await asyncio.sleep(0.35)


class _SlowToStop:
    async def stop(self) -> None:
        await _waiting_for_the_lock_daemon()


def test_a_slow_stop_is_logged_with_where_it_waits(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runner, "STOP_REPORT_S", 0.05)
    logger = logging.getLogger("test.stop")
    with caplog.at_level(logging.WARNING, logger="test.stop"):
        asyncio.run(runner._stop_reporting(_SlowToStop(), logger))  # type: ignore[arg-type]
    reports = [r.getMessage() for r in caplog.records]
    assert 1 <= len(reports) <= 4, reports  # after 0.05, 0.15, 0.35, 0.75 s: not every 0.05
    assert "still stopping after" in reports[0]
    assert "stop (test_runner_stop.py" in reports[0]
    assert "_waiting_for_the_lock_daemon (test_runner_stop.py" in reports[0]


def test_a_quick_stop_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Quick:
        async def stop(self) -> None:
            await asyncio.sleep(0)

    logger = logging.getLogger("test.stop")
    with caplog.at_level(logging.WARNING, logger="test.stop"):
        asyncio.run(runner._stop_reporting(Quick(), logger))  # type: ignore[arg-type]
    assert caplog.records == []
