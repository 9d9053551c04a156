"""skyge-emon: CPU, memory and disk probes with watermarks that act.

Run as `skyge-emon` or `python -m skyge.services.emon`."""
import sys

from skyge.services.common.runner import contract_only_spec, run_daemon

SPEC = contract_only_spec(
    "emon", "Emon", "CPU, memory and disk probes with watermarks that act")


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
