"""`skyge ca ...`: the cluster's certificate authority (mutual TLS on every TCP port).

    skyge ca init                         # once per cluster: ROOT/etc/skyge/ca/{ca.crt,ca.key}
    skyge ca issue --node 1               # this node: ROOT/etc/skyge/tls/{ca.crt,node.crt,node.key}
    skyge ca issue --node 2 --out n2-tls  # another node: copy n2-tls/* to its /etc/skyge/tls/
"""
from __future__ import annotations

import argparse
from pathlib import Path

from skyge.clients.cli.arguments import DOMAIN, ranged_int
from skyge.clients.cli.output import CommandFailed, Output, UsageError

DAYS = ranged_int(1, 36500)


def register(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("ca", help="the cluster's certificate authority (TLS between nodes)",
                              description=__doc__.split("\n\n")[0])
    group.set_defaults(daemon_target=None)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser("init", help="make the cluster CA (once per cluster)",
                               description="Make the cluster's CA: ca.crt goes to every node, "
                                           "ca.key stays on this machine (it signs certificates).")
    init.add_argument("--dir", help="where to keep the CA (default: ROOT/etc/skyge/ca)")
    init.add_argument("--name", default="skyge cluster",
                      help="the CA's name (default: %(default)s)")
    init.add_argument("--days", type=DAYS, default=None, help="lifetime (default: 3650)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing CA (every certificate it signed stops working)")
    init.set_defaults(handler=init_ca)

    issue = commands.add_parser(
        "issue", help="make a node's, the witness's or an administrator's certificate",
        description="Sign a certificate with the cluster CA and write it, its key and ca.crt "
                    "into a folder: a node's /etc/skyge/tls, or an administrator's folder for "
                    "`skyge --socket HOST:PORT --cert FOLDER/NAME ...`.")
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--node", type=DOMAIN, metavar="DOMAIN", help="a node (its domain, 1-64)")
    who.add_argument("--witness", action="store_true", help="the two-node witness")
    who.add_argument("--admin", metavar="NAME", help="an administrator (a-z, 0-9, '-')")
    issue.add_argument("--ca", help="the CA's folder (default: ROOT/etc/skyge/ca)")
    issue.add_argument("--out", help="folder to write into (default: ROOT/etc/skyge/tls for a "
                                     "node or the witness, ./ for an administrator)")
    issue.add_argument("--days", type=DAYS, default=None, help="lifetime (default: 825)")
    issue.set_defaults(handler=issue_cert)


def _ca_folder(args: argparse.Namespace, given: str | None) -> Path:
    from skyge.services.common.paths import NodePaths
    return Path(given) if given else NodePaths.at(args.root).etc / "ca"


def init_ca(args: argparse.Namespace, out: Output) -> int:
    from skyge.services.common import pki
    folder = _ca_folder(args, args.dir)
    try:
        ca = pki.Authority.create(folder, args.name, days=args.days or pki.CA_DAYS,
                                  force=args.force)
    except pki.PkiError as error:
        raise CommandFailed(str(error)) from None
    out.result({"ca_cert": str(folder / pki.CA_CERT), "ca_key": str(folder / pki.CA_KEY),
                "not_after": ca.cert.not_valid_after_utc.isoformat()},
               f"made the cluster CA {args.name!r} in {folder}: {pki.CA_KEY} (0600) stays here, "
               f"`skyge ca issue` writes {pki.CA_CERT} to every node with its certificate")
    return 0


def issue_cert(args: argparse.Namespace, out: Output) -> int:
    from skyge.services.common import pki
    from skyge.services.common.paths import NodePaths
    from skyge.services.common.tls import TLS_FOLDER, Identity
    try:
        if args.node is not None:
            identity = Identity.node(args.node)
        elif args.witness:
            identity = Identity("witness")
        else:
            identity = Identity.admin(args.admin)
    except ValueError as error:
        raise UsageError(f"--admin: {error}") from None
    if args.out:
        folder = Path(args.out)
    elif identity.serves:
        folder = NodePaths.at(args.root).etc / TLS_FOLDER
    else:
        folder = Path(".")
    name = "node" if identity.serves else identity.name
    try:
        ca = pki.Authority.load(_ca_folder(args, args.ca))
        issued = ca.issue(identity, days=args.days or pki.CERT_DAYS)
        pki.install(folder, ca.cert_pem, issued, cert_name=name)
    except pki.PkiError as error:
        raise CommandFailed(str(error)) from None
    except OSError as error:
        raise CommandFailed(f"--out: cannot write into {folder}: {error.strerror}") from None
    files = {"ca_cert": str(folder / pki.CA_CERT), "cert": str(folder / f"{name}.crt"),
             "key": str(folder / f"{name}.key")}
    where = ("restart the node's daemons to use it" if identity.serves
             else f"use it with `skyge --socket HOST:PORT --cert {folder / name} ...`")
    out.result({"identity": identity.dns_name, **files},
               f"issued {identity} ({identity.dns_name}) into {folder}: {where}")
    return 0
