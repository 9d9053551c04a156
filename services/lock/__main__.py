"""skyge-lock: cluster-wide locks with ordered takeover, quorum and fencing tokens (the seed's
buluos). Run as `skyge-lock` or `python -m skyge.services.lock`.

    skyge-lock -d -t all -l LOG_DEBUG -i "192.168.1.1:192.168.1.254"
"""
import sys

from skyge.services.common.runner import DaemonSpec, run_daemon
from skyge.services.lock.daemon import FIELDS, add_arguments, build

SPEC = DaemonSpec(
    name="lock",
    description="skyge lock daemon: cluster-wide locks with ordered takeover, quorum and fencing "
                "tokens (the seed's buluos)",
    build=build,
    config_fields=FIELDS,
    add_arguments=add_arguments,
)


def main() -> None:
    sys.exit(run_daemon(SPEC))


if __name__ == "__main__":
    main()
