"""Failure detectors for one link (one peer, one path): fed arrivals, asked for a deadline.

Two strategies share one interface so the lab can measure both and the config can pick one:

- `FixedDetector`: down after `max(min_timeout, misses × interval)` of silence. Predictable:
  the detection bound is known in advance. Pays for it with link flaps on lossy paths
  (at 20% loss, 4 losses in a row happen every few seconds at 150 datagrams/s).
- `AdaptiveDetector`: the timeout follows what the link does. It tolerates as many consecutive
  losses as the measured loss rate makes plausible, plus the measured lateness (mean + k·stddev
  of delay beyond the expected arrival, e.g. a descheduled sender). Faster than fixed on clean
  links, steadier on lossy or loaded ones, but its bound moves with the conditions.

`interval_ns` is the sender's announced interval carried in each datagram (its promise for the
next one), `lost` the datagrams the sequence numbers say went missing before this one. Splitting
the gap into loss and lateness is why `lost` is passed in: a gap of 3 intervals means something
else when two datagrams were lost than when one datagram came late.
"""
from __future__ import annotations

import math
from typing import Protocol
from collections.abc import Callable

__all__ = ["DETECTORS", "AdaptiveDetector", "FailureDetector", "FixedDetector"]

MS = 1_000_000


class FailureDetector(Protocol):
    def arrival(self, now_ns: int, interval_ns: int, lost: int = 0) -> None:
        """A datagram arrived at `now_ns`; `lost` datagrams before it never did."""

    def deadline(self) -> int | None:
        """When the link is down if nothing else arrives (None before the first arrival)."""

    def is_down(self, now_ns: int) -> bool:
        """True once `now_ns` reached the deadline."""


class FixedDetector:
    """Down when nothing arrived for `max(min_timeout_ns, misses × interval)`."""

    __slots__ = ("_deadline", "min_timeout_ns", "misses")

    DEFAULT_MISSES = 4
    DEFAULT_MIN_TIMEOUT_NS = 20 * MS

    def __init__(self, *, misses: int = DEFAULT_MISSES,
                 min_timeout_ns: int = DEFAULT_MIN_TIMEOUT_NS) -> None:
        if misses < 1:
            raise ValueError(f"misses: must be >= 1, got {misses}")
        self.misses, self.min_timeout_ns = misses, min_timeout_ns
        self._deadline: int | None = None

    def arrival(self, now_ns: int, interval_ns: int, lost: int = 0) -> None:
        self._deadline = now_ns + max(self.min_timeout_ns, self.misses * interval_ns)

    def deadline(self) -> int | None:
        return self._deadline

    def is_down(self, now_ns: int) -> bool:
        return self._deadline is not None and now_ns >= self._deadline


class AdaptiveDetector:
    """timeout = m × interval + mean(lateness) + k × stddev(lateness), floored at
    `min_timeout_ns`, capped at `max_misses × interval` (the worst detection time it may take).

    m is the smallest number of consecutive losses whose probability at the measured loss rate p
    stays under `false_down_probability` (p^m <= target, at least `min_misses`): on a clean link
    m is 2–3, at 20% loss m is 9. Lateness is the arrival time beyond `(lost + 1) × interval`
    after the previous arrival. Both estimates are exponentially weighted (~256 datagrams for
    loss, ~64 for lateness) and start from pessimistic priors so a new link is not trigger-happy.
    """

    __slots__ = (
        "_deadline",
        "_interval_ns",
        "_last_arrival_ns",
        "false_down_probability",
        "k",
        "lateness_mean_ns",
        "lateness_var",
        "loss_rate",
        "max_misses",
        "min_misses",
        "min_timeout_ns",
    )

    DEFAULT_K = 4.0
    DEFAULT_FALSE_DOWN_PROBABILITY = 1e-6
    DEFAULT_MIN_MISSES = 2
    DEFAULT_MAX_MISSES = 10
    DEFAULT_MIN_TIMEOUT_NS = 15 * MS
    PRIOR_LOSS_RATE = 0.01
    PRIOR_LATENESS_STDDEV_NS = 1 * MS
    LOSS_WEIGHT = 1 / 256
    LATENESS_WEIGHT = 1 / 64

    def __init__(self, *, k: float = DEFAULT_K,
                 false_down_probability: float = DEFAULT_FALSE_DOWN_PROBABILITY,
                 min_misses: int = DEFAULT_MIN_MISSES, max_misses: int = DEFAULT_MAX_MISSES,
                 min_timeout_ns: int = DEFAULT_MIN_TIMEOUT_NS) -> None:
        if not 0 < false_down_probability < 1:
            raise ValueError(f"false_down_probability: must be in (0, 1), "
                             f"got {false_down_probability}")
        if not 1 <= min_misses <= max_misses:
            raise ValueError(f"min_misses/max_misses: need 1 <= min <= max, "
                             f"got {min_misses}/{max_misses}")
        self.k, self.false_down_probability = k, false_down_probability
        self.min_misses, self.max_misses = min_misses, max_misses
        self.min_timeout_ns = min_timeout_ns
        self.loss_rate = self.PRIOR_LOSS_RATE
        self.lateness_mean_ns = 0.0
        self.lateness_var = float(self.PRIOR_LATENESS_STDDEV_NS) ** 2
        self._last_arrival_ns: int | None = None
        self._interval_ns = 0
        self._deadline: int | None = None

    def arrival(self, now_ns: int, interval_ns: int, lost: int = 0) -> None:
        if self._last_arrival_ns is not None:
            keep = 1 - self.LOSS_WEIGHT
            # `lost` ones then one zero, in closed form (lost can be large after an outage).
            self.loss_rate = (1 - (1 - self.loss_rate) * keep ** lost) * keep
            # Early arrivals (an ANNOUNCE between two heartbeats) say nothing about lateness.
            lateness = max(0, now_ns - self._last_arrival_ns - (lost + 1) * self._interval_ns)
            if lost <= self.max_misses:  # an outage says nothing about scheduling jitter
                delta = lateness - self.lateness_mean_ns
                self.lateness_mean_ns += self.LATENESS_WEIGHT * delta
                self.lateness_var = (1 - self.LATENESS_WEIGHT) * (
                    self.lateness_var + self.LATENESS_WEIGHT * delta * delta)
        self._last_arrival_ns, self._interval_ns = now_ns, interval_ns
        self._deadline = now_ns + self.timeout_ns()

    def tolerated_losses(self) -> int:
        p = min(max(self.loss_rate, 1e-12), 0.999)
        needed = math.ceil(math.log(self.false_down_probability) / math.log(p))
        return min(max(needed, self.min_misses), self.max_misses)

    def timeout_ns(self) -> int:
        margin = max(self.lateness_mean_ns, 0.0) + self.k * math.sqrt(self.lateness_var)
        timeout = self.tolerated_losses() * self._interval_ns + int(margin)
        cap = max(self.min_timeout_ns, self.max_misses * self._interval_ns)
        return min(max(timeout, self.min_timeout_ns), cap)

    def deadline(self) -> int | None:
        return self._deadline

    def is_down(self, now_ns: int) -> bool:
        return self._deadline is not None and now_ns >= self._deadline


DETECTORS: dict[str, Callable[..., FailureDetector]] = {
    "fixed": FixedDetector,
    "adaptive": AdaptiveDetector,
}
