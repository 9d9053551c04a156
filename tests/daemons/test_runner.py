"""The shared daemon runner, on a real daemon process under a temporary node root."""
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyge.clients.lab.configs import write_daemon_config
from skyge.services.common import access, pki
from skyge.services.common.paths import NodePaths
from skyge.services.common.tls import SERVER_NAME, Identity
from skyge.v1 import emon_pb2, emon_pb2_grpc

# A contract-only daemon, so these tests exercise the runner alone, not a daemon's core.
DAEMON = [sys.executable, str(Path(__file__).with_name("contract_only_daemon.py"))]
START_TIMEOUT_S = 20


def wait_serving(socket_path, timeout=START_TIMEOUT_S, service="skyge.v1.Emon"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket_path.exists():
            with grpc.insecure_channel(f"unix:{socket_path}") as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
        time.sleep(0.05)
    raise AssertionError(f"daemon not serving on {socket_path} within {timeout}s")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "node"


@pytest.fixture
def daemon(root):
    """A foreground skyge-emon under `root`; stopped (by PID) after the test."""
    procs = []

    def start(*extra):
        proc = subprocess.Popen([*DAEMON, "-r", str(root), "--listen", "none", *extra],
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_serves_health_and_unimplemented_on_a_root_only_socket(root, daemon):
    daemon()
    sock = NodePaths.at(root).socket("emon")
    wait_serving(sock)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    gid = access.group_id()  # deploy/install.sh creates the group: its members may traverse
    assert stat.S_IMODE(sock.parent.stat().st_mode) == (0o700 if gid is None else 0o710)
    reader = NodePaths.at(root).read_socket("emon")
    assert reader.exists() == (gid is not None)
    if gid is not None:
        assert (stat.S_IMODE(reader.stat().st_mode), reader.stat().st_gid) == (0o660, gid)
    with grpc.insecure_channel(f"unix:{sock}") as channel, pytest.raises(grpc.RpcError) as info:
        emon_pb2_grpc.EmonStub(channel).ListProbes(emon_pb2.ListProbesRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_second_copy_refuses_and_first_keeps_serving(root, daemon):
    first = daemon()
    sock = NodePaths.at(root).socket("emon")
    wait_serving(sock)
    second = daemon()
    _, err = second.communicate(timeout=START_TIMEOUT_S)
    assert second.returncode == 1
    assert "already running" in err and str(first.pid) in err
    wait_serving(sock, timeout=2)  # the first still owns its socket


def test_sigterm_stops_cleanly_and_removes_socket(root, daemon):
    proc = daemon()
    sock = NodePaths.at(root).socket("emon")
    wait_serving(sock)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not sock.exists()
    assert not NodePaths.at(root).pid_file("emon").exists()


def test_background_returns_once_serving(root):
    result = subprocess.run([*DAEMON, "-d", "-r", str(root), "--listen", "none"],
                            capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    pid_file = NodePaths.at(root).pid_file("emon")
    pid = int(pid_file.read_text())
    try:
        wait_serving(NodePaths.at(root).socket("emon"), timeout=2)
        assert (NodePaths.at(root).log / "emon.log").exists()
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_file.exists()


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def issue(ca_folder: Path, identity: Identity, folder: Path, name: str = "node") -> Path:
    """A certificate of the CA in *ca_folder* (made on first use) in *folder*; its PREFIX."""
    ca = (pki.Authority.load(ca_folder) if (ca_folder / pki.CA_CERT).exists()
          else pki.Authority.create(ca_folder))
    pki.install(folder, ca.cert_pem, ca.issue(identity), cert_name=name)
    return folder / name


def health(address: str, prefix: Path | None = None, *, ca: Path | None = None) -> int:
    """The health status over TCP, with the client certificate PREFIX (or none)."""
    if prefix is None and ca is None:
        channel = grpc.insecure_channel(address)
    else:
        key = prefix.with_suffix(".key").read_bytes() if prefix else None
        cert = prefix.with_suffix(".crt").read_bytes() if prefix else None
        root = (ca or prefix.parent / "ca.crt").read_bytes()
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root, key, cert),
                                      options=[("grpc.ssl_target_name_override", SERVER_NAME)])
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=5).status


def test_tcp_serves_only_certificates_of_the_cluster_ca(root, daemon, tmp_path):
    issue(tmp_path / "ca", Identity.node(1), NodePaths.at(root).etc / "tls")
    admin = issue(tmp_path / "ca", Identity.admin("alice"), tmp_path / "alice", "alice")
    stranger = issue(tmp_path / "other-ca", Identity.node(2), tmp_path / "stranger")
    address = f"127.0.0.1:{free_port()}"
    daemon("--listen", address)
    wait_serving(NodePaths.at(root).socket("emon"))
    assert health(address, admin) == health_pb2.HealthCheckResponse.SERVING
    for refused in (lambda: health(address),  # plain text
                    lambda: health(address, ca=admin.parent / "ca.crt"),  # TLS, no certificate
                    lambda: health(address, stranger, ca=admin.parent / "ca.crt")):  # other CA
        with pytest.raises(grpc.RpcError) as info:
            refused()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tcp_without_a_certificate_is_refused_unless_insecure(root, daemon):
    address = f"127.0.0.1:{free_port()}"
    result = subprocess.run([*DAEMON, "-r", str(root), "--listen", address],
                            capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 1
    assert "no TLS certificate" in result.stderr and "skyge ca issue" in result.stderr
    assert "insecure = yes" in result.stderr
    paths = NodePaths.at(root)
    paths.etc.mkdir(parents=True, exist_ok=True)
    paths.config_file("emon").write_text("insecure = yes;\n")  # as the hint above says
    proc = daemon("--listen", address)
    wait_serving(paths.socket("emon"))
    assert health(address) == health_pb2.HealthCheckResponse.SERVING
    proc.terminate()
    assert "served without TLS" in proc.communicate(timeout=30)[1]


def test_unusable_certificate_files_stop_the_start_naming_the_file(root, tmp_path):
    tls = NodePaths.at(root).etc / "tls"
    issue(tmp_path / "ca", Identity.node(1), tls)
    issue(tmp_path / "other-ca", Identity.node(1), tmp_path / "other")
    (tls / "ca.crt").write_bytes((tmp_path / "other" / "ca.crt").read_bytes())
    result = subprocess.run([*DAEMON, "-r", str(root), "--listen", f"127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 1
    assert "tls_cert" in result.stderr and "not signed by the CA" in result.stderr


@pytest.mark.parametrize("config,expected", [
    ('listen = "nowhere";\n', "listen"),
    ('listen = "0.0.0.0:7414";\ncolour = 1;\n', ":2: colour: unknown option"),
])
def test_bad_config_exits_2_naming_line_and_key(root, config, expected):
    paths = NodePaths.at(root)
    paths.etc.mkdir(parents=True)
    paths.config_file("emon").write_text(config)
    result = subprocess.run([*DAEMON, "-r", str(root)], capture_output=True, text=True,
                            timeout=START_TIMEOUT_S)
    assert result.returncode == 2
    assert expected in result.stderr and str(paths.config_file("emon")) in result.stderr


@pytest.mark.parametrize("args,expected", [
    (["--listen", "1.2.3.4:99999"], "--listen"),
    (["-l", "LOG_LOUD"], "-l/--log-level"),
    (["-t", "printer"], "-t/--log-type"),
])
def test_bad_arguments_exit_2(root, args, expected):
    result = subprocess.run([*DAEMON, "-r", str(root), *args], capture_output=True, text=True,
                            timeout=START_TIMEOUT_S)
    assert result.returncode == 2 and expected in result.stderr


def test_tcp_is_served_on_the_heartbeat_paths_addresses_by_default(root):
    from skyge.services.common.runner import listen_addresses
    paths = NodePaths.at(root)
    assert listen_addresses(7414, paths, "") == ["0.0.0.0:7414"]  # no heartbeat.cfg: everywhere
    write_daemon_config(root, "heartbeat", {"netcard1": "lo", "netcard2": "nonexistent0"})
    assert listen_addresses(7414, paths, "") == ["127.0.0.1:7414"]
    assert listen_addresses(7414, paths, "10.0.0.1:99") == ["10.0.0.1:99"]


def test_reflection_lists_and_describes_the_services(root, daemon):
    """grpcurl and other generic clients learn the API from the daemon itself."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    from google.protobuf.descriptor_pool import DescriptorPool
    daemon()
    sock = NodePaths.at(root).socket("emon")
    wait_serving(sock)
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"skyge.v1.Emon", "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection"} <= services
        method = DescriptorPool(database).FindServiceByName("skyge.v1.Emon").FindMethodByName(
            "GetHistory")
        assert method.input_type.full_name == "skyge.v1.GetHistoryRequest"
        assert {"probe", "limit"} <= set(method.input_type.fields_by_name)


def test_sighup_reloads_and_the_daemon_keeps_serving(root, tmp_path):
    """systemctl reload sends SIGHUP: the daemon reads its config again instead of dying."""
    log = tmp_path / "daemon.err"
    with open(log, "w") as sink:
        proc = subprocess.Popen([*DAEMON, "-r", str(root), "--listen", "none"], stderr=sink)
    try:
        sock = NodePaths.at(root).socket("emon")
        wait_serving(sock)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "SIGHUP: nothing to reload" not in log.read_text() and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert "SIGHUP: nothing to reload" in log.read_text()
        wait_serving(sock)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_a_daemon_still_starting_is_not_serving_rather_than_unknown(root, daemon):
    """Health checkers (systemd, grpc_health_probe, the container's) must read NOT_SERVING while
    the daemon's start runs (e.g. HA waiting for its membership), never NOT_FOUND."""
    socket_path = root / "run" / "skyge" / "emon.sock"
    with_delay = dict(os.environ, START_DELAY_S="3")
    proc = subprocess.Popen([*DAEMON, "-r", str(root), "--listen", "none"], env=with_delay,
                            stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and "SERVING" not in seen:
            if socket_path.exists():
                with grpc.insecure_channel(f"unix:{socket_path}") as channel:
                    for service in ("", "skyge.v1.Emon"):
                        try:
                            reply = health_pb2_grpc.HealthStub(channel).Check(
                                health_pb2.HealthCheckRequest(service=service), timeout=1)
                            seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(
                                reply.status))
                        except grpc.RpcError as error:
                            if error.code() != grpc.StatusCode.UNAVAILABLE:  # not bound yet
                                seen.append(error.code().name)
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(5)
    assert "NOT_SERVING" in seen and seen[-1] == "SERVING", seen
    assert set(seen) <= {"NOT_SERVING", "SERVING"}, seen
