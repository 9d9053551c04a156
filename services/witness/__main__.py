"""skyge-witness: the tie-breaking vote of two-node clusters, run on a third machine (like
corosync-qnetd). Run as `skyge-witness` or `python -m skyge.services.witness`.

    skyge-witness -d --listen 192.168.1.1:7415
"""
import sys

from skyge.services.common.paths import WITNESS_PORT
from skyge.services.common.runner import DaemonSpec, run_daemon
from skyge.services.witness.server import FIELDS, build

SPEC = DaemonSpec(
    name="witness",
    description="skyge witness: the tie-breaking vote of two-node clusters, on a third machine "
                "both nodes reach (like corosync-qnetd)",
    build=build,
    config_fields=FIELDS,
    port=WITNESS_PORT,
)


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
