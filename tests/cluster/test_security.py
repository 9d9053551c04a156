"""Only the cluster drives the cluster: mutual TLS on every TCP port of a running lab cluster.

Seen from outside: a stranger in the client namespace (the public network, no certificate of the
cluster's CA) is refused on every daemon's port; an administrator with a certificate of the CA
drives the cluster from there; a node whose certificate comes from another CA cannot reach its
peers' daemons (its bus calls to a bus owned elsewhere fail) while its neighbours can.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import sys
import sysconfig
from pathlib import Path

import pytest

from skyge.clients.lab import Lab, public_ip
from skyge.clients.lab.configs import config_path, write_daemon_config
from skyge.clients.lab.daemons import start_daemons
from skyge.services.common import access, pki
from skyge.services.common.paths import TCP_PORTS, NodePaths
from skyge.services.common.tls import TLS_FOLDER, Identity
from tests.cluster import heartbeat_support as hs
from tests.cluster import lock_support as ls
from tests.cluster.conftest import unique_lab_name
from tests.cluster.test_bus import wait_routes

pytestmark = pytest.mark.lab

SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]

#: run in a namespace: the health check on every port of one address, as a plain client, a TLS
#: client without certificate and (argv[3], optional) a client with the certificate PREFIX
PROBE = r"""
import json, sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from skyge.services.common.tls import SERVER_NAME
host, ports, ca = sys.argv[1], json.loads(sys.argv[2]), open(sys.argv[3], "rb").read()
prefix = sys.argv[4] if len(sys.argv) > 4 else None
modes = {"plain": lambda t: grpc.insecure_channel(t),
         "tls_without_certificate": lambda t: grpc.secure_channel(
             t, grpc.ssl_channel_credentials(ca), [("grpc.ssl_target_name_override", SERVER_NAME)])}
if prefix:
    creds = grpc.ssl_channel_credentials(ca, open(prefix + ".key", "rb").read(),
                                         open(prefix + ".crt", "rb").read())
    modes["certificate"] = lambda t: grpc.secure_channel(
        t, creds, [("grpc.ssl_target_name_override", SERVER_NAME)])
out = {}
for mode, make in modes.items():
    for name, port in ports.items():
        with make(f"{host}:{port}") as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
                out[f"{mode} {name}"] = "OK"
            except grpc.RpcError as error:
                out[f"{mode} {name}"] = error.code().name
print(json.dumps(out))
"""
DAEMONS = ("heartbeat", "bus", "lock", "ha", "emon")


@pytest.fixture(scope="module")
def cluster(lab_support: None):
    lab = Lab.up(nodes=3, name=unique_lab_name())
    try:
        hs.start_cluster(lab)
        for node in lab.nodes:
            start_daemons(node, DAEMONS[1:], extra_args=("-l", "LOG_INFO"))
        wait_routes(lab)
        yield lab
    finally:
        lab.down()


def probe(lab: Lab, host, prefix: Path | None = None, ca: Path | None = None) -> dict[str, str]:
    ports = {d: TCP_PORTS[d] for d in DAEMONS}
    argv = [sys.executable, "-c", PROBE, public_ip(1), json.dumps(ports),
            str(ca or lab.root / "ca" / pki.CA_CERT), *([str(prefix)] if prefix else [])]
    done = host.run(argv, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def issue(lab: Lab, ca_folder: Path, identity: Identity, folder: Path, name: str) -> Path:
    ca = (pki.Authority.load(ca_folder) if (ca_folder / pki.CA_CERT).exists()
          else pki.Authority.create(ca_folder))
    pki.install(folder, ca.cert_pem, ca.issue(identity), cert_name=name)
    return folder / name


def test_a_stranger_is_refused_on_every_port_and_an_administrator_drives_the_cluster(cluster):
    lab = cluster
    stranger = issue(lab, lab.root / "other-ca", Identity.node(1), lab.root / "stranger", "node")
    alice = issue(lab, lab.root / "ca", Identity.admin("alice"), lab.root / "alice", "alice")
    answers = probe(lab, lab.client, stranger, ca=lab.root / "ca" / pki.CA_CERT)
    assert answers and set(answers.values()) == {"UNAVAILABLE"}, answers  # refused in TLS
    answers = probe(lab, lab.client, alice)
    assert {k: v for k, v in answers.items() if k.startswith("certificate")} == {
        f"certificate {d}": "OK" for d in DAEMONS}
    assert {v for k, v in answers.items() if not k.startswith("certificate")} == {"UNAVAILABLE"}

    socket = f"{public_ip(1)}:{TCP_PORTS['ha']}"
    status = lab.client.run([*SKYGE, "--socket", socket, "--cert", str(alice), "-o", "json",
                             "ha", "status"], timeout=60)
    assert status.returncode == 0, status.stderr
    plain = lab.client.run([*SKYGE, "--root", str(lab.root / "client-root"), "--socket", socket,
                            "ha", "stopall"], timeout=60)
    assert plain.returncode == 1 and "cannot reach skyge-ha" in plain.stderr, plain
    bad = lab.client.run([*SKYGE, "--socket", socket, "--cert", str(lab.root / "nobody"),
                          "ha", "status"], timeout=60)
    assert bad.returncode == 2 and "--cert" in bad.stderr and "cannot read" in bad.stderr, bad


def test_a_node_with_a_certificate_of_another_ca_reaches_no_peer(make_lab):
    lab = make_lab(3)
    n1, n2, n3 = lab.nodes
    issue(lab, lab.root / "other-ca", Identity.node(3), n3.root / "etc" / "skyge" / TLS_FOLDER,
          "node")
    hs.start_cluster(lab)
    for node in lab.nodes:
        start_daemons(node, ["bus"], extra_args=("-l", "LOG_INFO"))
    created = n1.run([*SKYGE, "bus", "create", "-d", "1", "-n", "Owned"], timeout=60)
    assert created.returncode == 0, created.stderr
    deadline_runs = 40  # n2 reaches n1's bus once its membership knows n1's bus port
    for _ in range(deadline_runs):
        sent = n2.run([*SKYGE, "bus", "send", "-d", "1", "-n", "Owned", "-m", "from n2"],
                      timeout=60)
        if sent.returncode == 0:
            break
    assert sent.returncode == 0, sent.stderr
    refused = n3.run([*SKYGE, "--timeout", "5", "bus", "send", "-d", "1", "-n", "Owned",
                      "-m", "from n3"], timeout=60)
    assert refused.returncode != 0 and "from n3" not in refused.stdout
    received = n1.run([*SKYGE, "-o", "json", "bus", "spy", "-d", "1", "-n", "Owned", "--from",
                       "1", "--count", "1"], timeout=60)
    assert received.returncode == 0 and json.loads(received.stdout)["data"] == "from n2"


def _set_keys(node, key_file: str, other: str | None) -> None:
    """heartbeat.cfg's key settings (the lock daemon follows them), then SIGHUP both daemons."""
    from skyge.services.common.config import parse_config
    values = {s.key: s.value for s in parse_config(config_path(node, "heartbeat").read_text())}
    values["key_file"] = key_file
    values.pop("accept_key_file", None)
    if other:
        values["accept_key_file"] = other
    write_daemon_config(node, "heartbeat", values)
    for daemon in ("heartbeat", "lock"):
        reloads = _log(node, daemon).count("cluster keys reloaded")
        pid = int((node.root / "run" / "skyge" / f"{daemon}.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        hs.wait_for(f"{node.key}: skyge-{daemon} reloads its keys",
                    lambda daemon=daemon, reloads=reloads:
                    _log(node, daemon).count("cluster keys reloaded") > reloads, 20)


def _log(node, daemon: str) -> str:
    name = {"heartbeat": "heartbeat.log", "lock": "skyge-lock.log"}[daemon]
    path = node.root / "var" / "log" / name
    return path.read_text(errors="replace") if path.exists() else ""


def _received(node) -> int:
    return sum(p.datagrams_received for p in hs.stats(node).paths)


def _refused(node) -> int:
    return hs.stats(node).dropped.get("bad_signature", 0)


def test_the_cluster_key_rotates_without_a_stop_then_the_old_key_is_refused(make_lab):
    lab = make_lab(3)
    ls.start_cluster(lab)
    term = ls.authority(lab.node(1)).term
    holder = ls.Client(lab.node(1))
    holder.acquire(900, 1)
    holder.wait("granted")
    watches = [hs.Watch(node) for node in lab.nodes]
    for node in lab.nodes:
        key = node.root / "etc" / "skyge" / "rotated.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
    shared = (lab.node(1).root / "etc" / "skyge" / "rotated.key").read_bytes()
    for node in lab.nodes:
        (node.root / "etc" / "skyge" / "rotated.key").write_bytes(shared)
    refused = {node.key: _refused(node) for node in lab.nodes}
    for node in lab.nodes:  # the three steps of services/common/keys.py, node after node
        _set_keys(node, "heartbeat.key", "rotated.key")
    for node in lab.nodes:
        _set_keys(node, "rotated.key", "heartbeat.key")
    for node in lab.nodes:
        _set_keys(node, "rotated.key", None)
    for node in lab.nodes:  # a few hundred datagrams under the new key alone
        floor = _received(node) + 300
        hs.wait_for(f"{node.key} hears its peers",
                    lambda node=node, floor=floor: _received(node) >= floor, 30)
    assert {node.key: _refused(node) for node in lab.nodes} == refused
    assert [e for w in watches for e in w.events if e.kind == "left"] == []
    assert not holder.of("lost") and ls.authority(lab.node(1)).term == term

    n3 = lab.node(3)  # back to the old key alone: its datagrams are refused, it is cut off
    _set_keys(n3, "heartbeat.key", None)
    hs.wait_for("n1 sees n3 leave", lambda: any(
        e.kind == "left" and e.domain == 3 for e in watches[0].events), 30)
    assert _refused(lab.node(1)) > refused["n1"]
    holder.close()
    for watch in watches:
        watch.close()


#: the CLI as a user who is not root: the venv's site-packages on the interpreter the venv was made
#: from (a non-root user may not reach the venv's own link to it, e.g. under /root)
AS_USER = ("import site, sys; site.addsitedir(sys.argv.pop(1)); "
           "from skyge.clients.cli.main import main; sys.exit(main())")


def test_the_skyge_group_reads_without_root_and_changes_nothing(cluster):
    lab = cluster
    gid = access.group_id()
    assert gid is not None, "deploy/install.sh creates the skyge group"
    n1 = lab.node(1)
    site_packages = sysconfig.get_paths()["purelib"]
    python = os.path.realpath(sys.executable)
    if not os.access(python, os.X_OK) or os.path.realpath(sys.prefix).startswith("/root"):
        python = "/usr/bin/python3"  # the base interpreter under /root is root's alone
    user = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
            python, "-c", AS_USER, site_packages, "--root", str(n1.root)]
    status = n1.run([*user, "-o", "json", "ha", "status"], timeout=60)
    assert status.returncode == 0, status.stderr
    assert "services" in json.loads(status.stdout)
    members = n1.run([*user, "heartbeat", "show"], timeout=60)
    assert members.returncode == 0, members.stderr
    stop = n1.run([*user, "ha", "stopall"], timeout=60)
    assert stop.returncode == 1 and "root only" in stop.stderr, stop
    expected = n1.run([*user, "lock", "expected", "4"], timeout=60)
    assert expected.returncode == 1 and "root only" in expected.stderr, expected
    paths = NodePaths.at(n1.root)
    for daemon in DAEMONS:
        main, reader = paths.socket(daemon), paths.read_socket(daemon)
        assert (stat.S_IMODE(main.stat().st_mode), main.stat().st_gid) == (0o600, 0)
        assert (stat.S_IMODE(reader.stat().st_mode), reader.stat().st_gid) == (0o660, gid)
    assert stat.S_IMODE(paths.run.stat().st_mode) == 0o710
    # not in the group: not even the read-only sockets
    stranger = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                *user[5:]]
    refused = n1.run([*stranger, "ha", "status"], timeout=60)
    assert refused.returncode == 1, refused


#: run in a namespace: GET https://HOST:PORT/metrics with the client certificate PREFIX (or none)
SCRAPE = r"""
import ssl, sys, urllib.request
url, ca, prefix = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # nodes are scraped by address; the CA is what is checked
if prefix:
    context.load_cert_chain(prefix + ".crt", prefix + ".key")
try:
    print(urllib.request.urlopen(url, context=context, timeout=10).read().decode())
except Exception as error:
    print("REFUSED", type(error).__name__, error)
    sys.exit(3)
"""


def test_each_node_is_a_prometheus_target_for_holders_of_a_cluster_certificate(cluster):
    from prometheus_client.parser import text_string_to_metric_families
    lab = cluster
    prometheus = issue(lab, lab.root / "ca", Identity.admin("prometheus"),
                       lab.root / "prometheus", "prometheus")
    url = f"https://{public_ip(1)}:9664/metrics"
    ca = str(lab.root / "ca" / pki.CA_CERT)
    stranger = lab.client.run([sys.executable, "-c", SCRAPE, url, ca], timeout=60)
    assert stranger.returncode == 3 and "REFUSED" in stranger.stdout, stranger
    scraped = lab.client.run([sys.executable, "-c", SCRAPE, url, ca, str(prometheus)],
                             timeout=60)
    assert scraped.returncode == 0, scraped.stdout + scraped.stderr
    samples = {}
    for family in text_string_to_metric_families(scraped.stdout):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("skyge_members", ())] == 3 and samples[("skyge_quorate", ())] == 1
    assert samples[("skyge_lock_term", ())] >= 1
    published = {dict(k[1])["bus"]: v for k, v in samples.items()
                 if k[0] == "skyge_bus_published_messages_total"}
    assert published and {dict(k[1])["bus"] for k in samples
                          if k[0] == "skyge_bus_missed_messages_total"} == set(published)
    links = {k: v for k, v in samples.items() if k[0] == "skyge_link_up"}
    assert sorted(links) == sorted(("skyge_link_up", (("path", str(p)), ("peer", str(d))))
                                   for d in (2, 3) for p in (1, 2))
    assert set(links.values()) == {1}
    assert {dict(k[1])["daemon"]: v for k, v in samples.items()
            if k[0] == "skyge_daemon_up"} == {d: 1 for d in DAEMONS}
