"""`skyge completion bash|zsh` and `skyge man`: made from the parser, loadable by the shells and
by man, and naming every command group."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from skyge.clients.cli.main import build_parser
from skyge.clients.cli.manpage import escape

SKYGE = [sys.executable, "-m", "skyge.clients.cli.main"]


def skyge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SKYGE, *args], capture_output=True, text=True, timeout=60)


def groups() -> list[str]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory):
    done = skyge("completion", "bash")
    assert done.returncode == 0, done.stderr
    path = tmp_path_factory.mktemp("completion") / "skyge.bash"
    path.write_text(done.stdout)
    return path


def completion_function(bash_script) -> str:
    """The function `complete -p skyge` names once the script is sourced."""
    done = bash(f"source {bash_script} && complete -p skyge")
    assert done.returncode == 0, done.stderr
    registered = re.fullmatch(r"complete .*-F (\S+) skyge", done.stdout.strip())
    assert registered, done.stdout
    return registered.group(1)


def test_bash_completion_loads_and_registers_skyge(bash_script):
    assert subprocess.run(["bash", "-n", str(bash_script)], timeout=60).returncode == 0
    assert completion_function(bash_script)


def test_bash_completion_offers_groups_commands_choices_and_paths(bash_script, tmp_path):
    (tmp_path / "node1").mkdir()
    function = completion_function(bash_script)

    def offered(*words: str) -> list[str]:
        done = bash(f"source {bash_script}; COMP_WORDS=(skyge {' '.join(words)}); "
                    f"COMP_CWORD={len(words)}; {function}; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert offered('""') == groups()
    assert offered("ha", '""') == ["query", "status", "svc", "stopall", "maintenance", "pulse"]
    assert offered("ha", "svc", "-t", '""') == ["random", "fifo", "stack"]
    assert offered("--root", f"{tmp_path}/no") == [f"{tmp_path}/node1"]


def test_zsh_completion_is_a_compdef_for_skyge(tmp_path):
    done = skyge("completion", "zsh")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#compdef skyge\n")
    if shutil.which("zsh") is None:
        return
    (tmp_path / "_skyge").write_text(done.stdout)
    assert subprocess.run(["zsh", "-n", str(tmp_path / "_skyge")], timeout=60).returncode == 0
    loaded = subprocess.run(["zsh", "-fc", f"fpath=({tmp_path} $fpath); autoload -Uz compinit; "
                                           f"compinit -D; print -r -- $_comps[skyge]"],
                            capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "_skyge", loaded.stderr


def test_completion_refuses_other_shells_as_bad_usage():
    done = skyge("completion", "fish")
    assert done.returncode == 2 and "invalid choice: 'fish'" in done.stderr


@pytest.fixture(scope="module")
def man_pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("man") / "man1"
    done = skyge("-o", "json", "man", "--out", str(folder))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"dir": str(folder),
                                       "pages": ["skyge.1", *(f"skyge-{g}.1" for g in groups())]}
    return folder


def test_man_writes_the_main_page_and_one_per_group(man_pages):
    expected = {"skyge.1", *(f"skyge-{group}.1" for group in groups())}
    assert {p.name for p in man_pages.iterdir()} == expected
    for page in man_pages.iterdir():
        title = page.name.removesuffix(".1").upper()
        assert page.read_text().startswith(f'.TH "{title}" 1 '), page.name


def test_main_page_names_every_group_and_the_global_options(man_pages):
    text = (man_pages / "skyge.1").read_text()
    for group in groups():
        assert f"\\fB{escape(group)}\\fR\n" in text, group
        assert f"\\fBskyge\\-{escape(group)}\\fR(1)" in text, group
    for option in ("--root", "--output", "--socket", "--cert", "--timeout"):
        assert escape(option) in text


def render(page) -> subprocess.CompletedProcess[str]:
    """The page as man (or else groff) shows it, with roff's warnings on stderr."""
    if shutil.which("man"):
        argv = ["man", "--warnings", "-l", str(page)]
    elif shutil.which("groff"):
        argv = ["groff", "-man", "-Tutf8", "-ww", str(page)]
    else:
        pytest.skip("neither man nor groff is installed")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MANWIDTH": "100"})


def test_pages_render_without_roff_warnings(man_pages):
    for page in sorted(man_pages.iterdir()):
        done = render(page)
        assert done.returncode == 0 and done.stderr == "", (page.name, done.stderr)
    shown = re.sub(r".\x08", "", render(man_pages / "skyge-ca.1").stdout)  # groff's overstrikes
    # a help line that roff would take for a request if it began one ("./ for an administrator")
    assert "./ for an administrator" in " ".join(shown.split())


def test_escape_keeps_roff_control_characters_as_text():
    assert escape("./run --now \\ok") == "\\&./run \\-\\-now \\eok"
    assert escape("'quoted'") == "\\&'quoted'"
    assert escape("two\n   lines") == "two lines"


def test_man_reports_an_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("")
    done = skyge("man", "--out", str(tmp_path / "file"))
    assert done.returncode == 1
    assert done.stderr.startswith(f"skyge: --out: cannot write into {tmp_path / 'file'}: ")
