"""service.cfg in slot folders: the seed's files load unchanged, defaults are the seed's, and
every bad file is refused with file, line, option and reason without stopping the others."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from skyge.services.common.config import ConfigError
from skyge.services.common.paths import NodePaths
from skyge.services.ha.service_config import (LABEL_MAX, TYPES, FloatingIp, Store, fip_label,
                                              ha_config_dir, load_service, load_services,
                                              parse_service, script_kind, slots_dir)

# the seed manual's mysql example, verbatim (note: no ';' after the store line)
SEED_MYSQL = '''name = "mysql";
onstart = "yes";
script = "/etc/init.d/mysqld";
fip = "eth0-192.168.1.100-255.255.255.0-192.168.1.255:";
store = "192.168.1.253-/dev/sdb1-/var/lib/mysql-755-mysql-mysql:"
start_timeout = 30;
stop_timeout = 30;
check_interval = 5;
'''

MINIMAL = 'name = "web{n}";\nscript = "/opt/web.sh";\n'


def put(folder: Path, type: str, slot: int | str, text: str) -> Path:
    path = folder / "slots" / type / str(slot) / "service.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_seed_mysql_example_loads_unchanged(tmp_path):
    put(tmp_path, "fifo", 0, SEED_MYSQL)
    services, errors = load_services(tmp_path)
    assert errors == []
    [svc] = services
    assert (svc.type, svc.slot, svc.name, svc.script) == ("fifo", 0, "mysql", "/etc/init.d/mysqld")
    assert svc.onstart is True
    assert (svc.start_timeout, svc.stop_timeout, svc.release_timeout) == (30, 30, 30)
    assert svc.check_interval == 5 and svc.check_failures == 1
    assert svc.fips == (FloatingIp("eth0", "192.168.1.100", "255.255.255.0", "192.168.1.255",
                                   "eth0:1024"),)
    assert svc.fips[0].cidr == "192.168.1.100/24"
    assert svc.stores == (Store("192.168.1.253", "/dev/sdb1", "/var/lib/mysql", 0o755,
                                "mysql", "mysql"),)
    assert svc.script_kind == "lsb"  # /etc/init.d/*: status 3 = not running
    assert svc.path == str(tmp_path / "slots" / "fifo" / "0" / "service.cfg")


def test_options_left_out_take_the_seeds_defaults():
    svc = parse_service(MINIMAL.format(n=1), "random", 7)
    assert (svc.start_timeout, svc.stop_timeout, svc.release_timeout) == (300, 300, 300)
    assert (svc.onstart, svc.check_interval, svc.check_failures) == (False, 3, 1)
    assert (svc.force_load, svc.force_reboot, svc.desc, svc.fips, svc.stores) == (
        False, False, "", (), ())
    assert (svc.pidfile, svc.pulse_timeout_ms, svc.restarts, svc.failure_timeout) == ("", 0, 0, 0)
    assert (svc.script_kind, svc.umount, svc.status_timeout) == ("seed", "normal", 30)
    assert svc.key == ("random", 7)


def test_all_options_and_aliases():
    text = MINIMAL.format(n=2) + '''desc = "Web for test";
start_timeout = "100"; stop_timeout = 20; release_timeout = 10;
onstart = "no"; check_interval = 2; check_times = 4;
force-load = "yes"; force-reboot = true;
pidfile = "/run/web.pid"; pulse_timeout_ms = 500; restarts = 2; status_timeout = 7;
umount = "force"; failure_timeout = 600;
'''
    svc = parse_service(text, "stack", 3)
    assert svc.desc == "Web for test" and svc.start_timeout == 100
    assert (svc.stop_timeout, svc.release_timeout, svc.check_interval) == (20, 10, 2)
    assert svc.check_failures == 4 and svc.force_load and svc.force_reboot
    assert (svc.pidfile, svc.pulse_timeout_ms, svc.restarts, svc.status_timeout) == (
        "/run/web.pid", 500, 2, 7)
    assert svc.umount == "force" and svc.failure_timeout == 600
    for alias in ("check_failures", "check_fail_times", "check_count"):
        assert parse_service(MINIMAL.format(n=1) + f"{alias} = 3;", "fifo", 1).check_failures == 3
    assert parse_service(MINIMAL.format(n=1) + 'force_load = "yes";', "fifo", 1).force_load


def test_each_floating_ip_gets_a_label_unique_on_its_nic():
    text = MINIMAL.format(n=3) + (
        'fip = "eth0-10.0.0.5-255.255.255.0-10.0.0.255:eth1-10.1.0.5-16-10.1.255.255:'
        'eth0-10.0.0.6-255.255.255.0-10.0.0.255";')  # prefix length, no final ':'
    svc = parse_service(text, "fifo", 5)
    assert [(f.nic, f.ip, f.netmask, f.label) for f in svc.fips] == [
        ("eth0", "10.0.0.5", "255.255.255.0", "eth0:1029"),
        ("eth1", "10.1.0.5", "255.255.0.0", "eth1:1029"),
        ("eth0", "10.0.0.6", "255.255.255.0", "eth0:4101"),  # 2nd on eth0: + 3072
    ]


def test_label_scheme_is_stable_unique_and_short():
    assert fip_label("eth0", "random", 0) == "eth0:0000"
    assert fip_label("eth0", "fifo", 0) == "eth0:1024"
    assert fip_label("eth0", "stack", 1023) == "eth0:3071"
    labels = [fip_label("enp129s0f1", t, s, k)
              for t, s, k in itertools.product(TYPES, range(1024), range(3))]
    assert len(set(labels)) == len(labels) == 3 * 1024 * 3
    assert max(map(len, labels)) <= LABEL_MAX


def test_store_paths_with_dashes():
    text = MINIMAL.format(n=4) + (
        'store = "-/dev/mapper/vg-data-/srv/my-app-2750-nobody-nogroup:'
        '10.0.0.9-/dev/sdc1-/mnt/b-700-0-0:";')
    svc = parse_service(text, "fifo", 1)
    assert svc.stores == (Store("", "/dev/mapper/vg-data", "/srv/my-app", 0o2750, "nobody",
                                "nogroup"),
                          Store("10.0.0.9", "/dev/sdc1", "/mnt/b", 0o700, "0", "0"))


def test_the_script_kind_follows_the_script_path_unless_set():
    assert script_kind("/usr/lib/ocf/resource.d/heartbeat/IPaddr2") == "ocf"
    assert script_kind("/etc/init.d/mysqld") == "lsb"
    assert script_kind("/etc/rc.d/init.d/httpd") == "lsb"
    assert script_kind("/opt/skygeha_8/myapp.sh") == "seed"
    assert script_kind("/etc/init.d/x", "seed") == "seed"
    svc = parse_service(MINIMAL.format(n=1) + 'script_type = "ocf"; ocf_params = "ip=1.2.3.4 a=";',
                        "fifo", 1)
    assert svc.script_kind == "ocf" and svc.ocf_params == (("ip", "1.2.3.4"), ("a", ""))


def test_ocf_params_take_shell_quoting_for_values_with_spaces():
    svc = parse_service(MINIMAL.format(n=1) + 'script_type = "ocf"; ocf_params = "msg=\'a b\' '
                        'path=/x \\"q=c d\\"";', "fifo", 1)
    assert svc.ocf_params == (("msg", "a b"), ("path", "/x"), ("q", "c d"))
    with pytest.raises(ConfigError, match="ocf_params: No closing quotation"):
        parse_service(MINIMAL.format(n=1) + 'script_type = "ocf"; ocf_params = "msg=\'a b";',
                      "fifo", 1)


BAD = [
    # (text, line, key, reason fragment)
    ('script = "/opt/a.sh";\n', None, "name", "required"),
    ('name = "a1";\n', None, "script", "required"),
    ('name = "a1";\nscript = "a.sh";\n', 2, "script", "absolute path"),
    ('name = "my sql";\nscript = "/a";\n', 1, "name", "letters or digits"),
    ('name = "a1";\nscript = "/a";\nfip = "eth0-10.0.0.5-255.255.255.0:";\n', 3, "fip",
     "NIC-IP-MASK-BROADCAST"),
    ('name = "a1";\nscript = "/a";\n\nfip = "eth0-10.0.0.500-24-10.0.0.255:";\n', 4, "fip",
     "not an IPv4 address"),
    ('name = "a1";\nscript = "/a";\nfip = "eth0-10.0.0.5-255.0.255.0-10.0.0.255:";\n', 3, "fip",
     "not a netmask"),
    ('name = "a1";\nscript = "/a";\nfip = "eth0-10.0.0.5-24-10.0.0.255::";\n', 3, "fip",
     "group 2 is empty"),
    ('name = "a1";\nscript = "/a";\nstore = "1.2.3.4-/dev/sdb1-/data-755-mysql:";\n', 3, "store",
     "ARRAY_IP-DEVICE-MOUNTPOINT-MODE-USER-GROUP"),
    ('name = "a1";\nscript = "/a";\nstore = "1.2.3.4-/dev/sdb1-/data-999-u-g:";\n', 3, "store",
     "MODE octal"),
    ('name = "a1";\nscript = "/a";\ncolour = "red";\n', 3, "colour", "unknown option"),
    ('name = "a1";\nscript = "/a";\ncheck_interval = 0;\n', 3, "check_interval", "from 1 to 3600"),
    ('name = "a1";\nscript = "/a";\nstart_timeout = 86401;\n', 3, "start_timeout",
     "from 1 to 86400"),
    ('name = "a1";\nscript = "/a";\ncheck_failures = 101;\n', 3, "check_failures", "from 1 to 100"),
    ('name = "a1";\nscript = "/a";\nfailure_timeout = -1;\n', 3, "failure_timeout",
     "from 0 to 86400"),
    ('name = "a1";\nscript = "/a";\nonstart = "maybe";\n', 3, "onstart", '"yes" or "no"'),
    ('name = "a1";\nscript = "/a";\npulse_timeout_ms = 50;\n', 3, "pulse_timeout_ms",
     "0 (off) or from 100"),
    ('name = "a1";\nscript = "/a";\ncheck_times = 2;\ncheck_count = 3;\n', 4, "check_count",
     "given twice"),
    ('name = "a1";\nscript = "/a";\npidfile = "run/a.pid";\n', 3, "pidfile", "absolute path"),
    ('name = "a1";\nscript = "/a";\numount = "now";\n', 3, "umount", "normal, force, lazy"),
    ('name = "a1";\nscript = "/a";\nfip = "enx001122334455-10.0.0.5-24-10.0.0.255:";\n', 3,
     "fip", "longer than 15"),
    ('name = "a1";\nscript = "/a";\nocf_params = "x=1";\n', 3, "ocf_params", "only OCF"),
    ('name = "a1"\nscript = ;\n', 2, "script", "expected a value"),
]


@pytest.mark.parametrize("text,line,key,reason", BAD)
def test_bad_file_is_refused_and_others_still_load(tmp_path, text, line, key, reason):
    put(tmp_path, "random", 0, MINIMAL.format(n=0))
    bad = put(tmp_path, "fifo", 3, text)
    put(tmp_path, "stack", 9, MINIMAL.format(n=9))
    services, errors = load_services(tmp_path)
    assert [s.name for s in services] == ["web0", "web9"]
    [error] = errors
    assert (error.path, error.line, error.key) == (str(bad), line, key), str(error)
    assert reason in error.reason, str(error)
    where = f"{bad}:{line}: " if line else f"{bad}: "
    assert str(error).startswith(where + f"{key}: ")


def test_bad_slot_folders_are_refused_by_path_and_the_good_slot_still_loads(tmp_path):
    put(tmp_path, "fifo", 0, MINIMAL.format(n=0))
    put(tmp_path, "fifo", 1024, MINIMAL.format(n=1))
    put(tmp_path, "fifo", "abc", MINIMAL.format(n=2))
    put(tmp_path, "fifo", "007", MINIMAL.format(n=3))
    put(tmp_path, "lifo", 1, MINIMAL.format(n=4))
    (tmp_path / "slots" / "stack" / "5").mkdir(parents=True)  # no service.cfg
    services, errors = load_services(tmp_path)
    assert [s.name for s in services] == ["web0"]
    messages = sorted(str(e) for e in errors)
    assert len(messages) == 5
    slots = tmp_path / "slots"
    assert f"{slots / 'fifo' / '1024'}: a slot folder must be named 0 to 1023" in messages
    assert f"{slots / 'fifo' / 'abc'}: a slot folder must be named 0 to 1023" in messages
    assert f"{slots / 'fifo' / '007'}: a slot folder must be named 0 to 1023" in messages
    assert any(m.startswith(f"{slots / 'lifo'}: not a takeover type folder") for m in messages)
    assert any(m.startswith(f"{slots / 'stack' / '5' / 'service.cfg'}: file not found")
               for m in messages)


def test_clashes_across_slots_refuse_the_later_file(tmp_path):
    first = put(tmp_path, "random", 2, 'name = "db";\nscript = "/a";\n'
                'fip = "eth0-10.0.0.5-24-10.0.0.255:";\nstore = "-/dev/sdb1-/data-755-0-0:";\n')
    same_name = put(tmp_path, "fifo", 0, 'name = "db";\nscript = "/b";\n')
    same_ip = put(tmp_path, "fifo", 1, 'name = "db2";\nscript = "/b";\n'
                  'fip = "eth1-10.0.0.5-24-10.0.0.255:";\n')
    same_mount = put(tmp_path, "stack", 0, 'name = "db3";\nscript = "/b";\n'
                     'store = "-/dev/sdc1-/data/-700-0-0:";\n')
    put(tmp_path, "stack", 1, MINIMAL.format(n=1))
    services, errors = load_services(tmp_path)
    assert [s.name for s in services] == ["db", "web1"]
    by_path = {e.path: e for e in errors}
    assert set(by_path) == {str(same_name), str(same_ip), str(same_mount)}
    assert by_path[str(same_name)].key == "name"
    assert f"random/2 ({first})" in by_path[str(same_name)].reason
    assert by_path[str(same_ip)].key == "fip" and "10.0.0.5" in by_path[str(same_ip)].reason
    assert by_path[str(same_mount)].key == "store" and "/data" in by_path[str(same_mount)].reason


def test_dynamic_add_checks_against_loaded_services(tmp_path):
    put(tmp_path, "fifo", 0, SEED_MYSQL)
    services, _ = load_services(tmp_path)
    put(tmp_path, "stack", 4, MINIMAL.format(n=4))
    added = load_service(tmp_path, "stack", 4, services)
    assert added.name == "web4" and added.key == ("stack", 4)
    put(tmp_path, "stack", 5, SEED_MYSQL)
    with pytest.raises(ConfigError, match="already used by fifo/0"):
        load_service(tmp_path, "stack", 5, services)
    with pytest.raises(ConfigError, match="file not found"):
        load_service(tmp_path, "stack", 6, services)
    with pytest.raises(ConfigError, match="already loaded"):
        load_service(tmp_path, "fifo", 0, services)


def test_services_load_from_the_node_folder_the_seed_folder_or_its_slots_folder(tmp_path):
    assert ha_config_dir(NodePaths.at(tmp_path)) == tmp_path / "etc" / "skyge" / "ha"
    seed = tmp_path / "etc" / "skygeha_8"  # the seed's folder, pointed at as it is
    put(seed, "fifo", 0, SEED_MYSQL)
    assert slots_dir(seed) == seed / "slots"
    assert [s.name for s in load_services(seed)[0]] == ["mysql"]
    assert [s.name for s in load_services(seed / "slots")[0]] == ["mysql"]
    assert load_services(tmp_path / "nothing") == ([], [])
