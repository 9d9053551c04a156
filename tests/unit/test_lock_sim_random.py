"""Never two owners, on a loaded host: the randomized ownership check of services/lock/sim.py.

Each case is one seed of `ownership_run`: HA-like holders of two locks on every node (one holds,
the others wait; holders move the lock now and then), every lock daemon stalled at random (most
0-10 ms, 5 % 25-80 ms, a few 100-500 ms; 30 % of them between computing and sending),
long-tailed datagram delays, 0.5 % loss, clock rates apart by up to `Timing.drift_ppm`, holders
that stop 1-20 ms after `Lost`, and after 2 simulated seconds crashes, partitions, killed and
stopped lock daemons; some cases with a fence command on every node (a fence powers its target
off), and two-node cases with a witness where both sides of a cut reach the reference IP (the
seed's rule alone gives two owners there: 30 of 40 seeds). The history must never show two valid
owners of a lock at any instant (nothing excused), nor a token that does not increase.

The timing is the protocol's defaults (`Timing()`), or the one in $SKYGE_LOCK_SIM_TIMING, e.g.
  SKYGE_LOCK_SIM_TIMING=beat=20ms,idle_beat=50ms,vote_lease=400ms,hold_lease=600ms \
      .venv/bin/python -m pytest -q tests/unit/test_lock_sim_random.py
(`python -m skyge.services.lock.sim --seeds N --size 2 3 5 [--fencing]` prints a summary with
the timelines of any overlap and the spurious-Lost rate.)
"""
from __future__ import annotations

import pytest

from skyge.services.lock.sim import Conditions, ownership_run, timing_from_env

TIMING = timing_from_env()
PLAIN, FENCING, WITNESS = (Conditions(), Conditions(fencing=True),
                           Conditions(witness=True, two_node_cut_hides_reference=False))
CASES = ([(3, seed, "plain") for seed in range(1, 81)]
         + [(2, seed, "plain") for seed in range(1, 31)]
         + [(5, seed, "plain") for seed in range(1, 21)]
         + [(3, seed, "fencing") for seed in range(1, 21)]
         + [(2, seed, "fencing") for seed in range(1, 11)]
         + [(2, seed, "witness") for seed in range(1, 21)])
CONDITIONS = {"plain": PLAIN, "fencing": FENCING, "witness": WITNESS}


@pytest.mark.parametrize("size,seed,variant", CASES,
                         ids=[f"{n}nodes-seed{seed}{'' if v == 'plain' else '-' + v}"
                              for n, seed, v in CASES])
def test_never_two_owners_under_stalls_delays_drift_and_faults(size, seed, variant):
    result = ownership_run(seed, size, timing=TIMING, conditions=CONDITIONS[variant])
    assert result.problems == [], "\n".join(result.timelines + result.problems)
    assert result.grants >= 4, f"only {result.grants} grants in {size} nodes, seed {seed}"
