"""The libconfig reader: seed files parse as they are, and errors say file, line, key, allowed."""
import pytest

from skyge.services.common.config import (ConfigError, Field, Schema, boolean, choice, integer,
                                          load_config, parse_config, render_config, string)

SEED_SERVICE_CFG = '''name = "mysql";
onstart = "yes";
script = "/etc/init.d/mysqld";
fip = "eth0-192.168.1.100-255.255.255.0-192.168.1.255:";
store = "192.168.1.253-/dev/sdb1-/var/lib/mysql-755-mysql-mysql:"
start_timeout = 30;
stop_timeout = 30;
check_interval = 5;
'''


def as_dict(text):
    return {s.key: s.value for s in parse_config(text, "t.cfg")}


def test_seed_files_parse_unchanged():
    values = as_dict(SEED_SERVICE_CFG)
    assert values["name"] == "mysql"
    assert values["store"].startswith("192.168.1.253-/dev/sdb1")  # no ';' on that line
    assert values["start_timeout"] == 30
    assert as_dict('domain=1;\nsubnet=1000;\nnetcard1="eth0";\nnetcard2="eth1";\n') == {
        "domain": 1, "subnet": 1000, "netcard1": "eth0", "netcard2": "eth1"}


def test_libconfig_syntax_variants():
    values = as_dict('# c\na : 0x1F; // c\n/* block\n */ b = "x" "y";\nc = [1, 2];\n'
                     'd = true;\ne = 2.5;\ng = { h = 1; };\n')
    assert values == {"a": 31, "b": "xy", "c": [1, 2], "d": True, "e": 2.5, "g": {"h": 1}}


@pytest.mark.parametrize("text,line,fragment", [
    ('a = 1;\nb = ;\n', 2, "expected a value"),
    ('a = 1;\n\nb 2;\n', 3, "expected '='"),
    ('a = "x;\n', 1, "unexpected text"),
    ('a = 1;\na = 2;\n', 2, "set twice"),
])
def test_syntax_errors_name_the_line(text, line, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bad.cfg")
    assert info.value.line == line and fragment in str(info.value)
    assert str(info.value).startswith(f"bad.cfg:{line}:")


SCHEMA = Schema([
    Field("domain", integer(1, 64), required=True),
    Field("netid", integer(1, 1024), default=1000, aliases=("subnet",)),
    Field("mode", choice("a", "b"), default="a"),
    Field("onstart", boolean, default=False),
    Field("name", string(r"[A-Za-z0-9]+", "letters and digits")),
])


def test_schema_fills_defaults_and_aliases():
    values = SCHEMA.validate(parse_config('domain = 3;\nsubnet = 7;\nonstart = "yes";'))
    assert values == {"domain": 3, "netid": 7, "mode": "a", "onstart": True, "name": None}


@pytest.mark.parametrize("text,key,fragment", [
    ("domain = 65;", "domain", "from 1 to 64"),
    ('domain = "x";', "domain", "integer from 1 to 64"),
    ("domain = 1; colour = 2;", "colour", "unknown option"),
    ("netid = 5;", "domain", "required"),
    ('domain = 1; mode = "c";', "mode", "one of a, b"),
    ('domain = 1; name = "my sql";', "name", "letters and digits"),
])
def test_schema_errors_name_key_and_allowed_values(text, key, fragment, tmp_path):
    path = tmp_path / "x.cfg"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, SCHEMA)
    assert info.value.key == key and fragment in str(info.value)
    assert str(path) in str(info.value)


def test_a_missing_file_is_an_error_unless_missing_ok(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "none.cfg", SCHEMA)
    assert load_config(tmp_path / "none.cfg", Schema([Field("a", integer(0, 1), default=1)]),
                       missing_ok=True) == {"a": 1}


def test_rendered_settings_parse_back_unchanged():
    values = {"domain": 1, "subnet": 1000, "netcard1": 'e"th0', "flag": True}
    assert {s.key: s.value for s in parse_config(render_config(values))} == values
