"""skyge-bus: named message buses across the cluster.

Run as `skyge-bus` or `python -m skyge.services.bus`."""
import sys

from skyge.services.bus.daemon import SPEC
from skyge.services.common.runner import run_daemon


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
