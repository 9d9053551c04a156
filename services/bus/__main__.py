"""skyge-bus: named message buses across the cluster.

Run as `skyge-bus` or `python -m skyge.services.bus`."""
import sys

from skyge.services.common.runner import contract_only_spec, run_daemon

SPEC = contract_only_spec(
    "bus", "Bus", "named message buses across the cluster")


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
