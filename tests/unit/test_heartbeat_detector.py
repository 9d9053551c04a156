"""Both failure detectors: steady and jittery links never trigger, silence triggers in bound."""
from __future__ import annotations

import random

import pytest

from skyge.services.heartbeat.detector import DETECTORS, AdaptiveDetector, FixedDetector

MS = 1_000_000
INTERVAL = 6_667 * 1000  # a 3-node, 2-path cluster at 600 datagrams/s
START = 10**12


def feed(detector, arrivals: list[tuple[int, int]], interval: int = INTERVAL) -> int:
    """Feed (time, lost) arrivals; fail if the detector had declared the link down before any
    of them. Returns the last arrival time."""
    for at, lost in arrivals:
        deadline = detector.deadline()
        assert deadline is None or at < deadline, f"false down at {at - START} ns"
        assert not detector.is_down(at - 1)
        detector.arrival(at, interval, lost)
    return arrivals[-1][0]


def steady(count: int, jitter: float = 0.0, loss: float = 0.0, seed: int = 1):
    rng = random.Random(seed)
    arrivals, lost = [], 0
    for i in range(1, count + 1):
        if rng.random() < loss:
            lost += 1
            continue
        arrivals.append((START + i * INTERVAL + int(rng.uniform(-jitter, jitter) * INTERVAL),
                         lost))
        lost = 0
    return arrivals


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_steady_arrivals_never_trigger(name):
    feed(DETECTORS[name](), steady(5000))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_jitter_within_bounds_does_not_trigger(name):
    feed(DETECTORS[name](), steady(5000, jitter=0.4))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_nothing_is_down_before_the_first_arrival(name):
    detector = DETECTORS[name]()
    assert detector.deadline() is None and not detector.is_down(START)


def test_fixed_silence_triggers_at_misses_times_interval():
    detector = FixedDetector()
    last = feed(detector, steady(100))
    bound = max(FixedDetector.DEFAULT_MIN_TIMEOUT_NS, FixedDetector.DEFAULT_MISSES * INTERVAL)
    assert detector.deadline() == last + bound
    assert not detector.is_down(last + bound - 1)
    assert detector.is_down(last + bound)


def test_fixed_floor_applies_to_fast_peers():
    detector = FixedDetector(misses=3, min_timeout_ns=20 * MS)
    detector.arrival(START, 1 * MS)
    assert detector.deadline() == START + 20 * MS
    with pytest.raises(ValueError, match="misses"):
        FixedDetector(misses=0)


def test_fixed_follows_the_announced_interval():
    detector = FixedDetector()
    detector.arrival(START, 200 * MS)  # a 64-node cluster's interval
    assert detector.deadline() == START + 4 * 200 * MS


def test_adaptive_silence_triggers_faster_than_fixed_on_a_clean_link():
    adaptive, fixed = AdaptiveDetector(), FixedDetector()
    last = feed(adaptive, steady(3000, jitter=0.05))
    feed(fixed, steady(3000, jitter=0.05))
    assert adaptive.tolerated_losses() == AdaptiveDetector.DEFAULT_MIN_MISSES
    assert adaptive.deadline() < fixed.deadline()
    assert adaptive.deadline() - last <= 3 * INTERVAL
    assert adaptive.is_down(adaptive.deadline())


def test_adaptive_widens_under_loss_and_stays_steady():
    detector = AdaptiveDetector()
    feed(detector, steady(30000, loss=0.2, seed=3))  # feed() fails on any false down
    assert 0.15 < detector.loss_rate < 0.25
    assert detector.tolerated_losses() >= 8
    # ...but never beyond its cap: silence is still detected.
    assert detector.timeout_ns() <= AdaptiveDetector.DEFAULT_MAX_MISSES * INTERVAL


def test_adaptive_widens_when_arrivals_come_late():
    calm, loaded = AdaptiveDetector(), AdaptiveDetector()
    feed(calm, steady(2000, jitter=0.02))
    rng = random.Random(9)
    # A descheduled sender: now and then a datagram comes 1.5 intervals late.
    late = [(START + i * INTERVAL + (int(1.5 * INTERVAL) if rng.random() < 0.05 else 0), 0)
            for i in range(1, 2001)]
    feed(loaded, late)
    assert loaded.timeout_ns() > calm.timeout_ns() + INTERVAL


def test_adaptive_forgets_an_outage_once_arrivals_resume():
    detector = AdaptiveDetector()
    last = feed(detector, steady(1000))
    lateness, loss = detector.lateness_mean_ns, detector.loss_rate
    detector.arrival(last + 50 * INTERVAL + 3 * MS, INTERVAL, lost=49)  # back after an outage
    assert detector.lateness_mean_ns == lateness  # the outage is not taken for jitter
    assert detector.loss_rate > loss


def test_adaptive_rejects_nonsense_settings():
    with pytest.raises(ValueError, match="false_down_probability"):
        AdaptiveDetector(false_down_probability=0)
    with pytest.raises(ValueError, match="min_misses"):
        AdaptiveDetector(min_misses=5, max_misses=3)
