"""The container files (deploy/container), linted since no image can be built here: the
Containerfile follows the rules below, compose.yaml runs each daemon with the capabilities
docs/CONTAINERS.md lists (no more than its systemd unit keeps), every Quadlet unit says what its
compose service says, and the health check answers from a real grpc.health.v1 server."""
from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import skyge

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "deploy" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
HEALTHCHECK = CONTAINER / "healthcheck.py"
DOC = REPO / "docs" / "CONTAINERS.md"
NODE_DAEMONS = ("heartbeat", "bus", "lock", "ha", "emon")
DAEMONS = (*NODE_DAEMONS, "witness")
SHARED = {"/etc/skyge", "/run/skyge", "/var/lib/skyge", "/var/log/skyge"}
# what each daemon's container may do beyond an unprivileged root (docs/CONTAINERS.md says why)
CAPABILITIES = {
    "heartbeat": {"CHOWN", "NET_RAW", "SYS_NICE"},
    "bus": {"CHOWN"},
    "lock": {"CHOWN", "NET_RAW", "SYS_NICE"},
    "ha": {"NET_ADMIN", "NET_RAW", "SYS_NICE"},  # on top of the engine's defaults
    "emon": {"CHOWN", "SYS_PTRACE", "DAC_READ_SEARCH"},
    "witness": {"CHOWN"},
}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def instructions() -> list[dict]:
    parser = DockerfileParser(fileobj=io.BytesIO(CONTAINERFILE.read_bytes()))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def exec_form(value: str) -> list[str]:
    """A JSON-array (exec form) instruction argument; the shell form is refused."""
    assert value.startswith("["), f"{value!r}: use the exec form, [\"command\", ...]"
    return json.loads(value)


def compose() -> dict:
    return yaml.safe_load((CONTAINER / "compose.yaml").read_text())


def quadlet(daemon: str) -> dict[str, dict[str, list[str]]]:
    """A Quadlet unit: section -> key -> its values in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (CONTAINER / "quadlet" / f"skyge-{daemon}.container").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def image_tag(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    return name.partition(":")[2]


# ---- Containerfile

def test_every_base_image_is_debian_12_slim_by_tag():
    bases = [i["value"].split()[0] for i in instructions() if i["instruction"] == "FROM"]
    assert bases and all(b == "docker.io/library/debian:12-slim" for b in bases), bases


def test_no_image_is_latest_or_untagged():
    images = [i["value"].split()[0] for i in instructions() if i["instruction"] == "FROM"]
    images += [s["image"] for s in compose()["services"].values()]
    images += [quadlet(d)["Container"]["Image"][0] for d in DAEMONS]
    for image in images:
        assert image_tag(image) not in ("", "latest"), f"{image}: pin a tag"


def test_the_image_tag_is_the_project_version():
    version = skyge.__version__  # the one place the version lives (pyproject.toml reads it)
    for image in {s["image"] for s in compose()["services"].values()}:
        assert image == f"localhost/skyge:{version}"
    assert f"-t localhost/skyge:{version} " in CONTAINERFILE.read_text()


def test_commands_are_console_scripts():
    scripts = project()["scripts"]
    for instruction in instructions():
        if instruction["instruction"] in ("CMD", "ENTRYPOINT"):
            command = exec_form(instruction["value"])[0]
            assert command in scripts, f"{instruction['instruction']} {command}: not in " \
                                       f"[project.scripts]"


def test_apt_installs_no_recommends_and_leaves_no_lists():
    runs = [i["value"] for i in instructions() if i["instruction"] == "RUN"]
    installs = [run for run in runs if "apt-get install" in run]
    assert installs
    for run in installs:
        assert "apt-get update" in run, f"update in the same layer: {run}"
        assert "--no-install-recommends" in run, run
        assert "rm -rf /var/lib/apt/lists/*" in run, f"clean the lists in the same layer: {run}"


def test_copied_files_exist_in_the_checkout():
    for instruction in instructions():
        if instruction["instruction"] != "COPY" or "--from=" in instruction["value"]:
            continue  # --from: out of an earlier stage
        words = [w for w in instruction["value"].split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the checkout"


def test_the_health_check_is_the_installed_script():
    healthchecks = [i["value"] for i in instructions() if i["instruction"] == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    command = exec_form(healthchecks[0].split(" CMD ", 1)[1])
    assert command == ["skyge-health"]
    assert f"{HEALTHCHECK.relative_to(REPO)} /usr/local/bin/skyge-health" in \
        " ".join(i["value"] for i in instructions() if i["instruction"] == "COPY")


# ---- compose.yaml

def test_compose_runs_every_daemon_on_the_host_network():
    services = compose()["services"]
    assert set(services) == set(DAEMONS)
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert service["command"][0] == f"skyge-{name}", name
        assert service["command"][0] in project()["scripts"]
        assert service["environment"] == {"SKYGE_DAEMON": name}, "the health check reads it"
        assert {v.split(":")[1] for v in service["volumes"]} >= SHARED, name
        assert service["healthcheck"]["test"] == ["CMD", "skyge-health"], name


@pytest.mark.parametrize("name", DAEMONS)
def test_compose_capabilities_are_as_documented(name):
    service = compose()["services"][name]
    assert set(service["cap_add"]) == CAPABILITIES[name]
    if name == "ha":  # the services' scripts run with it
        assert service["cap_drop"] == [] and service["security_opt"] == []
    else:
        assert service["cap_drop"] == ["ALL"]
        assert service["security_opt"] == ["no-new-privileges:true"]


def test_node_daemons_share_the_host_pids_and_ha_the_cgroups():
    services = compose()["services"]
    for name in NODE_DAEMONS:
        assert services[name].get("pid") == "host", name
    assert "pid" not in services["witness"]
    assert services["ha"]["cgroup"] == "host"
    assert "/sys/fs/cgroup:/sys/fs/cgroup" in services["ha"]["volumes"]
    assert services["witness"]["profiles"] == ["witness"], "a third machine's, not a node's"


def test_no_daemon_has_a_capability_its_systemd_unit_drops():
    for name in DAEMONS:
        unit = (REPO / "deploy" / "systemd" / f"skyge-{name}.service").read_text()
        bounding = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.MULTILINE)
        if bounding is None:  # lock and ha keep every capability on the host
            continue
        kept = {c.removeprefix("CAP_") for c in bounding.group(1).split()}
        assert CAPABILITIES[name] <= kept, f"{name}: {CAPABILITIES[name] - kept} beyond its unit"


def test_the_documentation_lists_the_same_capabilities():
    rows = re.findall(r"^\| `skyge-(\w+)` \| ([A-Z_, ]+?) \|", DOC.read_text(), re.MULTILINE)
    assert {name: set(caps.replace(",", " ").split()) for name, caps in rows} == CAPABILITIES


# ---- Quadlet units

@pytest.mark.parametrize("name", DAEMONS)
def test_quadlet_unit_matches_its_compose_service(name):
    service = compose()["services"][name]
    unit = quadlet(name)
    box = unit["Container"]
    assert box["Image"] == [service["image"]]
    assert box["Network"] == ["host"]
    assert shlex.split(box["Exec"][0]) == service["command"]
    assert box["Environment"] == [f"SKYGE_DAEMON={name}"]
    assert {c for value in box["AddCapability"] for c in value.split()} == set(service["cap_add"])
    assert box.get("DropCapability", []) == service["cap_drop"]
    assert ("NoNewPrivileges" in box) == bool(service["security_opt"])
    assert box["Volume"] == service["volumes"]
    podman_args = box["PodmanArgs"][0].split()
    assert ("--pid=host" in podman_args) == (service.get("pid") == "host")
    assert ("--cgroupns=host" in podman_args) == (service.get("cgroup") == "host")
    assert f"--stop-timeout={service['stop_grace_period'].removesuffix('s')}" in podman_args
    assert box["HealthCmd"] == ["skyge-health"]
    assert box["Notify"] == ["true"], "READY=1 once serving, as Type=notify on the host"
    assert unit["Install"]["WantedBy"] == (["multi-user.target"] if name == "witness"
                                           else ["skyge.target"])


def test_every_quadlet_unit_has_a_compose_service():
    units = {p.name for p in (CONTAINER / "quadlet").iterdir()}
    assert units == {f"skyge-{name}.container" for name in DAEMONS}


# ---- the health check, against a real grpc.health.v1 server

@pytest.fixture
def node_root(tmp_path):
    """A node root whose ha.sock serves grpc.health.v1 (SERVING until the test says)."""
    (tmp_path / "run" / "skyge").mkdir(parents=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{tmp_path / 'run' / 'skyge' / 'ha.sock'}")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield tmp_path, servicer
    server.stop(None)


def check(root: Path, daemon: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SKYGE_DAEMON"}
    env["SKYGE_ROOT"] = str(root)
    if daemon is not None:
        env["SKYGE_DAEMON"] = daemon
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True,
                          text=True, timeout=30)


def test_health_check_passes_while_the_daemon_serves(node_root):
    root, servicer = node_root
    result = check(root, "ha")
    assert (result.returncode, result.stdout.strip()) == (0, "skyge-ha: SERVING")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = check(root, "ha")
    assert (result.returncode, result.stdout.strip()) == (1, "skyge-ha: NOT_SERVING")


def test_health_check_fails_without_a_daemon_or_its_name(node_root):
    root, _ = node_root
    result = check(root, "lock")
    assert result.returncode == 1 and "skyge-lock: no answer on" in result.stdout
    result = check(root, None)
    assert result.returncode == 1 and "SKYGE_DAEMON is ''" in result.stdout
