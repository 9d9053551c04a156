"""The time scale of the lock protocol's scenario tests.

The protocol is scale-free (every rule compares durations from one `Timing`), and these
scenarios were written, with their bounds in ms, for a compact scale: 20 ms vote leases, 40 ms
hold leases. They keep it, so each bound still says what it meant; the daemon's defaults (hundreds
of ms, sized to ride out pauses) are exercised by the randomized simulation and the lab tests.
"""
from __future__ import annotations

from skyge.services.lock.protocol import MS, Timing

COMPACT = Timing(beat_ns=5 * MS, idle_beat_ns=20 * MS, vote_lease_ns=20 * MS,
                 hold_lease_ns=40 * MS, authority_grace_ns=15 * MS, early_ns=5 * MS,
                 takeover_guard_ns=15 * MS, switch_ns=75 * MS, candidate_silence_ns=15 * MS,
                 acquire_grace_ns=1000 * MS)
