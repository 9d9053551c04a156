"""skyge-emon: CPU, memory and disk probes with watermarks that act.

Run as `skyge-emon` or `python -m skyge.services.emon`."""
import sys

from skyge.services.common.runner import run_daemon
from skyge.services.emon.daemon import SPEC


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
