"""skyge-ha: user services run where their lock is held, with floating IPs and shared disks.

Run as `skyge-ha` or `python -m skyge.services.ha`."""
import sys

from skyge.services.common.runner import run_daemon
from skyge.services.ha.daemon import SPEC


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
