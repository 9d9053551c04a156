"""heartbeat.cfg: the seed's keys as they are, skyge's optional keys, errors naming
file:line:key."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from skyge.services.common.config import ConfigError, parse_config
from skyge.services.common.keys import ClusterKeys, load_keys, read_key
from skyge.services.common.paths import NodePaths
from skyge.services.common.runner import config_schema
from skyge.services.heartbeat import config as hb
from skyge.services.heartbeat.daemon import SPEC, persist_incarnation
from skyge.services.heartbeat.detector import AdaptiveDetector, FixedDetector

SEED = 'domain=1;\nsubnet=1000;\nnetcard1="eth0";\nnetcard2="eth1";\n'


def settings(text: str, root: Path = Path("/node")) -> hb.Settings:
    values = config_schema(SPEC).validate(parse_config(text, "hb.cfg"), "hb.cfg")
    return hb.settings_from(values, "hb.cfg", NodePaths.at(root))


def test_the_seed_file_works_as_it_is():
    s = settings(SEED)
    assert (s.netid, s.domain, dict(s.nics)) == (1000, 1, {1: "eth0", 2: "eth1"})
    assert (s.port, s.detector, s.key_file, dict(s.peers)) == (7400, hb.DEFAULT_DETECTOR, None, {})
    assert s.timing.min_interval_ns == 5_000_000 and s.realtime_priority == 10


def test_netid_alias_more_paths_and_options():
    s = settings('netid = 7; domain = 64; netcard1 = "bond0"; netcard8 = "eth7";\n'
                 'key_file = "/etc/skyge/k"; port = 9000; detector = "adaptive";\n'
                 'peers = "1:10.1.0.5, 10.1.0.6; 8:fd00::1"; interval_ms = 10; max_misses = 6;\n'
                 'min_timeout_ms = 30; realtime_priority = 0;', root=Path("/r"))
    assert (s.netid, s.domain, dict(s.nics)) == (7, 64, {1: "bond0", 8: "eth7"})
    assert s.key_file == Path("/r/etc/skyge/k") and s.port == 9000
    assert dict(s.peers) == {1: ("10.1.0.5", "10.1.0.6"), 8: ("fd00::1",)}
    assert s.timing.min_interval_ns == 10_000_000 and s.realtime_priority == 0
    detector = s.timing.detector()
    assert isinstance(detector, AdaptiveDetector)
    assert (detector.max_misses, detector.min_timeout_ns) == (6, 30_000_000)


def test_relative_key_file_is_under_etc_skyge():
    s = settings(SEED + 'key_file = "heartbeat.key";', root=Path("/r"))
    assert s.key_file == Path("/r/etc/skyge/heartbeat.key")


def test_the_fixed_detector_takes_its_misses_from_the_config():
    s = settings(SEED + 'detector = "fixed"; misses = 6;')
    detector = s.timing.detector()
    assert isinstance(detector, FixedDetector) and detector.misses == 6


@pytest.mark.parametrize("text,message", [
    ('subnet=1000;\nnetcard1="eth0";', "hb.cfg: domain: is required but missing"),
    ('domain=1;\nnetcard1="eth0";', "hb.cfg: subnet: is required but missing"),
    ('domain=1;\nsubnet=1000;', "hb.cfg: netcard1: no heartbeat path"),
    ('domain=65;\nsubnet=1000;\nnetcard1="eth0";', "hb.cfg:1: domain: must be from 1 to 64"),
    ('domain=1;\nsubnet=0;\nnetcard1="eth0";', "hb.cfg:2: subnet: must be from 1 to 1024"),
    ('domain=1;\nsubnet=1;\nnetcard1="eth/0";', "hb.cfg:3: netcard1: must be a network interface"),
    ('domain=1;\nsubnet=1;\nnetcard9="eth0";', "hb.cfg:3: netcard9: unknown option"),
    (SEED.replace('"eth1"', '"eth0"'), "hb.cfg: netcard2: NIC 'eth0' is already path 1"),
    (SEED + 'peers = "3:10.0.0.1";', "hb.cfg: peers: path 3 has static peers but no netcard3"),
    (SEED + 'peers = "1:10.0.0.300";', "hb.cfg:5: peers: path 1: '10.0.0.300' is not an IP"),
    (SEED + 'peers = "10.0.0.1";', 'hb.cfg:5: peers: must be "PATH:IP,IP;PATH:IP"'),
    (SEED + 'detector = "magic";', "hb.cfg:5: detector: must be one of fixed, adaptive"),
    (SEED + 'port = 70000;', "hb.cfg:5: port: must be from 1 to 65535"),
    (SEED + 'misses = 3; detector = "adaptive";', "hb.cfg: misses: applies to the fixed detector"),
    (SEED + 'realtime_priority = 100;', "hb.cfg:5: realtime_priority: must be from 0 to 99"),
])
def test_errors_name_file_line_key_and_range(text, message):
    with pytest.raises(ConfigError) as caught:
        settings(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_static_peers_parse_by_domain_and_bad_lists_are_refused():
    assert hb.parse_peers(" 2:10.0.0.1 ;1:10.0.0.2,10.0.0.3;") == {
        2: ("10.0.0.1",), 1: ("10.0.0.2", "10.0.0.3")}
    for bad in ("1:", "x:10.0.0.1", "9:10.0.0.1", "1:10.0.0.1;1:10.0.0.2"):
        with pytest.raises(ValueError):
            hb.parse_peers(bad)


def test_check_nics_names_the_key_and_the_nic():
    hb.check_nics({1: "eth0"}, ["lo", "eth0"])
    with pytest.raises(ConfigError, match=r"cfg: netcard2: no network interface 'eth1' on this "
                                          r"node \(it has eth0, lo\)"):
        hb.check_nics({1: "eth0", 2: "eth1"}, ["lo", "eth0"], "cfg")


def test_a_cluster_key_must_be_readable_and_16_to_4096_bytes(tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"x" * 16)
    assert read_key(key) == b"x" * 16
    key.write_bytes(b"x" * 15)
    with pytest.raises(ConfigError, match=r"key_file: .* must be 16 to 4096 bytes, it has 15"):
        read_key(key)
    with pytest.raises(ConfigError, match="key_file: cannot read the cluster key"):
        read_key(tmp_path / "missing")


def test_keys_are_required_unless_insecure_and_a_other_key_needs_a_current_one(tmp_path):
    paths = NodePaths.at(tmp_path)
    paths.etc.mkdir(parents=True)
    (paths.etc / "new.key").write_bytes(b"n" * 32)
    (paths.etc / "old.key").write_bytes(b"o" * 32)
    with pytest.raises(ConfigError, match=r"key_file: is required.*insecure = yes"):
        load_keys(paths, None, None, insecure=False)
    assert load_keys(paths, None, None, insecure=True) == ClusterKeys(None)
    with pytest.raises(ConfigError, match="accept_key_file: is set but key_file is not"):
        load_keys(paths, None, "old.key", insecure=True)
    keys = load_keys(paths, "new.key", "/etc/skyge/old.key", insecure=False)
    assert keys == ClusterKeys(b"n" * 32, b"o" * 32) and keys.accepted == (b"n" * 32, b"o" * 32)


def test_incarnation_grows_and_survives_a_clock_step_back(tmp_path):
    import logging
    logger = logging.getLogger("test")
    first = persist_incarnation(tmp_path, 1_000, logger)
    assert first == 1_000
    assert persist_incarnation(tmp_path, 500, logger) == 1_001  # clock went back
    assert persist_incarnation(tmp_path, 5_000, logger) == 5_000
    assert (tmp_path / "heartbeat.incarnation").read_text() == "5000\n"
    (tmp_path / "heartbeat.incarnation").write_text("garbage")
    assert persist_incarnation(tmp_path, 6_000, logger) == 6_000


def test_partial_is_used_only_with_options():
    assert settings(SEED + 'detector = "fixed";').timing.detector is FixedDetector
    assert isinstance(settings(SEED + 'detector = "fixed"; misses = 2;').timing.detector,
                      functools.partial)
