"""skyge-heartbeat: membership over UDP on every heartbeat NIC, link state, the cluster name
table. Run as `skyge-heartbeat` or `python -m skyge.services.heartbeat`."""
import sys

from skyge.services.common.runner import run_daemon
from skyge.services.heartbeat.daemon import SPEC


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
