"""Go and Java code from the protos (protos/generate.py --lang go|java): every service is there,
under the package names the protos promise, and the Java code compiles against Debian's jars
(with docs/CLIENTS.md's Java example) and names every service when loaded.

Go is only generated, not compiled: Debian 12's Go (1.19) is too old for current grpc-go and the
Go module proxy is out of reach. The tests skip, naming the Debian package, where a plugin is
not installed (deploy/install.sh installs them; `--java` adds the JDK and jars)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "protos" / "skyge" / "v1"
GENERATE = REPO / "protos" / "generate.py"
# every service of the contracts; the protos are parsed too, so a new one fails this list
SERVICES = {"Heartbeat", "Bus", "Lock", "LockPeer", "Ha", "HaPeer", "Emon", "Witness"}
# what the generated Java code compiles against: Debian's jars (deploy/install.sh --java)
JAVA_JARS = ("protobuf", "grpc-api", "grpc-stub", "grpc-protobuf", "grpc-protobuf-lite", "guava",
             "geronimo-annotation-1.3-spec")
JAVA_PACKAGE = "com.skyge.v1"


def load_generate():
    """protos/generate.py, a script rather than a package module (its dataclass needs it in
    sys.modules while it loads)."""
    spec = importlib.util.spec_from_file_location("skyge_protos_generate", GENERATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = load_generate()


def services_by_proto() -> dict[str, list[str]]:
    """proto stem -> the services it declares, read from the .proto text."""
    return {path.stem: re.findall(r"^service (\w+) \{", path.read_text(), re.MULTILINE)
            for path in sorted(PROTO_DIR.glob("*.proto"))}


def option(text: str, name: str) -> str | None:
    match = re.search(rf'^option {name} = "([^"]*)";', text, re.MULTILINE)
    return match.group(1) if match else None


def generated(lang: str, out: Path) -> list[Path]:
    try:
        return generate.generate_client(lang, out)
    except generate.MissingTool as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def go_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("go")
    generated("go", out)
    return out


@pytest.fixture(scope="module")
def java_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("java")
    generated("java", out)
    return out


def test_the_protos_declare_the_known_services():
    found = [name for names in services_by_proto().values() for name in names]
    assert sorted(found) == sorted(SERVICES)


def test_every_go_package_lies_in_the_go_module():
    module = generate.go_module()
    for path in sorted(PROTO_DIR.glob("*.proto")):
        assert option(path.read_text(), "go_package") == f"{module}/skyge/v1;skygev1", path.name


def test_go_code_has_every_service(go_out):
    package = go_out / "skyge" / "v1"
    for stem, services in services_by_proto().items():
        messages = package / f"{stem}.pb.go"
        assert messages.is_file(), f"{messages.name} not generated"
        assert re.search(r"^package skygev1$", messages.read_text(), re.MULTILINE)
        stubs = package / f"{stem}_grpc.pb.go"
        assert stubs.is_file() == bool(services), stubs.name
        for service in services:
            text = stubs.read_text()
            assert f"func New{service}Client(" in text, f"{service} client missing"
            assert f"func Register{service}Server(" in text, f"{service} server missing"
            assert f'ServiceName: "skyge.v1.{service}"' in text


def test_java_code_has_every_service(java_out):
    package = java_out / Path(*JAVA_PACKAGE.split("."))
    for stem, services in services_by_proto().items():
        outer = package / (option((PROTO_DIR / f"{stem}.proto").read_text(),
                                  "java_outer_classname") + ".java")
        assert outer.is_file(), f"{outer.name} not generated"
        for service in services:
            text = (package / f"{service}Grpc.java").read_text()
            assert f"package {JAVA_PACKAGE};" in text
            assert f'SERVICE_NAME = "skyge.v1.{service}"' in text


def test_regenerating_replaces_what_an_earlier_run_left(tmp_path):
    package = tmp_path / "skyge" / "v1"
    package.mkdir(parents=True)
    (package / "gone.pb.go").write_text("// from a .proto since removed\n")
    (package / "doc.go").write_text("package skygev1\n")  # written by hand: kept
    written = generated("go", tmp_path)
    assert sorted(p.name for p in package.iterdir()) == sorted([*(p.name for p in written),
                                                                 "doc.go"])


def test_java_code_compiles_and_names_every_service(java_out, tmp_path):
    javac, java = shutil.which("javac"), shutil.which("java")
    jars = [Path("/usr/share/java") / f"{name}.jar" for name in JAVA_JARS]
    missing = [str(jar) for jar in jars if not jar.is_file()]
    if javac is None or java is None or missing:
        pytest.skip(f"no {'javac' if javac is None or java is None else ', '.join(missing)}: "
                    f"deploy/install.sh --java installs the JDK and Debian's jars")
    # prints every service's name; docs/CLIENTS.md's Java example is compiled with it
    example = re.search(r"```java\n(.*?)```", (REPO / "docs" / "CLIENTS.md").read_text(),
                        re.DOTALL).group(1)
    probe = tmp_path / "src" / "ServiceNames.java"
    probe.parent.mkdir()
    names = ", ".join(f"{s}Grpc.getServiceDescriptor().getName()" for s in sorted(SERVICES))
    probe.write_text(f"import {JAVA_PACKAGE}.*;\nimport io.grpc.*;\nimport java.io.File;\n"
                     "public class ServiceNames {\n"
                     "  public static void main(String[] args) {\n"
                     f"    for (String name : new String[] {{{names}}}) System.out.println(name);\n"
                     "  }\n"
                     "  static StatusResponse documented() throws Exception {\n"
                     f"{example}    return status;\n  }}\n}}\n")
    classes = tmp_path / "classes"
    classpath = ":".join(map(str, jars))
    sources = [str(p) for p in java_out.rglob("*.java")] + [str(probe)]
    result = subprocess.run([javac, "-nowarn", "-d", str(classes), "-cp", classpath, *sources],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"javac failed:\n{result.stdout}{result.stderr}"
    result = subprocess.run([java, "-cp", f"{classes}:{classpath}", "ServiceNames"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"skyge.v1.{s}" for s in sorted(SERVICES)]


@pytest.mark.parametrize("arguments, complaint", [
    (["--lang", "go", "--check"], "--check is for the committed Python code"),
    (["--out", "/tmp/x"], "--out is for --lang go and java"),
])
def test_generate_refuses_options_that_do_not_apply(arguments, complaint):
    result = subprocess.run([sys.executable, str(GENERATE), *arguments], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert complaint in result.stderr
