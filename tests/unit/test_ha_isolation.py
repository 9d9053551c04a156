"""The isolation monitor (services/ha/isolation.py) with a scripted reference-IP probe."""
from __future__ import annotations

import asyncio

from skyge.services.ha import isolation
from skyge.services.ha.isolation import IsolationMonitor


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), 10))


class Probe:
    """Answers the pings from a list (the last answer repeats); counts them."""

    def __init__(self, *answers: bool) -> None:
        self.answers, self.calls = list(answers), 0

    async def __call__(self, addresses, timeout_s) -> bool:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def monitor(probe: Probe, ips=("192.168.1.1",)) -> tuple[IsolationMonitor, list[str]]:
    fired: list[str] = []

    async def on_isolated(detail: str) -> None:
        fired.append(detail)

    return IsolationMonitor(list(ips), on_isolated, ping=probe), fired


def test_a_node_that_loses_every_peer_and_reaches_no_reference_ip_is_isolated_once(monkeypatch):
    monkeypatch.setattr(isolation, "CHECK_S", 0.01)

    async def scenario():
        m, fired = monitor(Probe(False))
        m.update(2)
        m.update(0)
        await asyncio.sleep(0.1)
        assert m.isolated and len(fired) == 1 and "192.168.1.1" in fired[0]
        m.update(1)  # a peer again: the episode ends
        assert not m.isolated and not m.alone
        m.update(0)  # a new episode fires again
        await asyncio.sleep(0.1)
        assert len(fired) == 2
        await m.close()

    run(scenario)


def test_a_node_that_reaches_a_reference_ip_is_not_isolated_until_it_does_not(monkeypatch):
    monkeypatch.setattr(isolation, "CHECK_S", 0.01)

    async def scenario():
        probe = Probe(True, True, True, False)
        m, fired = monitor(probe)
        m.update(1)
        m.update(0)
        await asyncio.sleep(0.2)
        assert probe.calls >= 4 and m.isolated and len(fired) == 1
        await m.close()

    run(scenario)


def test_no_check_without_reference_ips_nor_before_a_first_peer():
    async def scenario():
        probe = Probe(False)
        never_peered, fired = monitor(probe)
        never_peered.update(0)  # a single-node cluster is never isolated
        no_ips, fired_too = monitor(probe, ips=())
        no_ips.update(1)
        no_ips.update(0)  # nothing can be told without reference IPs
        await asyncio.sleep(0.05)
        assert probe.calls == 0 and not fired and not fired_too
        assert not never_peered.alone and not no_ips.alone

    run(scenario)
