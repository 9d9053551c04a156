"""`skyge ca init` and `skyge ca issue`: a cluster CA and certificates the daemons accept."""
from __future__ import annotations

import subprocess
import sys

from skyge.services.common.tls import TLS_FOLDER, Credentials, Identity, TlsFiles

SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]


def test_cli_ca_commands_make_a_cluster_ca_and_certificates(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SKYGE, "--root", str(tmp_path), *args], capture_output=True,
                              text=True, timeout=60)

    assert run("ca", "init").returncode == 0
    again = run("ca", "init")
    assert again.returncode == 1 and "exists" in again.stderr
    assert run("ca", "issue", "--node", "2").returncode == 0
    tls = tmp_path / "etc" / "skyge" / TLS_FOLDER
    assert sorted(p.name for p in tls.iterdir()) == ["ca.crt", "node.crt", "node.key"]
    assert (tls / "node.key").stat().st_mode & 0o077 == 0
    assert Credentials.load(TlsFiles(tls / "ca.crt", tls / "node.crt", tls / "node.key")
                            ).identity == Identity.node(2)
    bad = run("ca", "issue", "--node", "65")
    assert bad.returncode == 2 and "--node" in bad.stderr
