"""skyge-lock: cluster-wide locks with ordered takeover and fencing tokens.

Run as `skyge-lock` or `python -m skyge.services.lock`."""
import sys

from skyge.services.common.runner import contract_only_spec, run_daemon

SPEC = contract_only_spec(
    "lock", "Lock", "cluster-wide locks with ordered takeover and fencing tokens")


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
