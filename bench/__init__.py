"""Benchmarks on the virtual cluster lab. Run from the repository root as root, e.g.
`python -m bench.heartbeat_detect --trials 20`; each prints its figures last, as one line
`RESULT {json}`."""
