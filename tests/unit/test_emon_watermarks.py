"""Watermarks (the seed's ECS): crossing, hysteresis, once-only firing, and config errors that
name the file, the line, the key and the reason."""
from __future__ import annotations


import pytest

from skyge.services.common.config import ConfigError
from skyge.services.emon.watermarks import (Action, Direction, WatermarkEngine, WatermarkSpec,
                                            default_hysteresis, load_ecs_dir, parse_ecs)


def spec(direction="above", threshold=90.0, hysteresis=5.0, sustain=1, action=Action.SCRIPT,
         name=None, probe="cpu_load"):
    return WatermarkSpec(probe, name or f"wm_{int(threshold)}", threshold, Direction(direction),
                         action, "/bin/true" if action is Action.SCRIPT else "", hysteresis,
                         sustain)


def feed(engine, values, probe="cpu_load"):
    """Feed values; returns the list of (index, 'fired'|'rearmed') crossings."""
    events = []
    for i, value in enumerate(values):
        for crossing in engine.observe(probe, value, i):
            events.append((i, "fired" if crossing.fired else "rearmed"))
    return events


# ---- crossing, hysteresis, once-only

def test_above_fires_once_per_crossing_and_rearms_past_the_hysteresis():
    engine = WatermarkEngine.of([spec("above", 90, 5)])
    values = [10, 50, 91, 99, 95, 88, 86, 92, 84, 85, 97]
    # 91 fires; 99/95 stay quiet (fired once); 88/86 are within the hysteresis (> 85): no re-arm,
    # so 92 does not fire; 84 re-arms (<= 85); 97 fires again
    assert feed(engine, values) == [(2, "fired"), (8, "rearmed"), (10, "fired")]
    _, state = engine.items()[0]
    assert state.fired_count == 2 and state.armed is False and state.last_fired_unix_ns == 10


def test_above_is_strict_and_rearm_boundary_is_inclusive():
    engine = WatermarkEngine.of([spec("above", 90, 5)])
    assert feed(engine, [90, 90.01, 85, 90.5]) == [(1, "fired"), (2, "rearmed"), (3, "fired")]


def test_below_fires_under_and_rearms_above_threshold_plus_hysteresis():
    engine = WatermarkEngine.of([spec("below", 20, 5, probe="mem_load")])
    assert feed(engine, [50, 19, 10, 24, 25, 18], "mem_load") == [
        (1, "fired"), (4, "rearmed"), (5, "fired")]


def test_equal_compares_rounded_values_and_rearms_away_from_threshold():
    engine = WatermarkEngine.of([spec("equal", 60, 3)])
    # 59.6 rounds to 60: fires; 61 / 62.9 are closer than 3: no re-arm; 63 re-arms; 60.4 fires
    assert feed(engine, [50, 59.6, 61, 62.9, 63, 60.4]) == [
        (1, "fired"), (4, "rearmed"), (5, "fired")]


def test_zero_hysteresis_rearms_as_soon_as_the_value_is_back():
    engine = WatermarkEngine.of([spec("above", 90, 0)])
    assert feed(engine, [95, 90, 95]) == [(0, "fired"), (1, "rearmed"), (2, "fired")]


def test_condition_holding_at_the_first_sample_fires():
    engine = WatermarkEngine.of([spec("above", 10)])
    assert feed(engine, [50]) == [(0, "fired")]


def test_sustain_needs_consecutive_samples_beyond():
    engine = WatermarkEngine.of([spec("above", 90, 5, sustain=3)])
    assert feed(engine, [95, 96, 80, 95, 96, 97, 99]) == [(5, "fired")]


def test_other_probes_do_not_touch_a_watermark():
    engine = WatermarkEngine.of([spec("above", 90)])
    assert feed(engine, [99, 99], probe="mem_load") == []


def test_replace_keeps_the_state_of_unchanged_watermarks_only():
    same, changed = spec("above", 90), spec("above", 80)
    engine = WatermarkEngine.of([same, changed])
    feed(engine, [95])
    assert all(not state.armed for _, state in engine.items())
    engine.replace([same, spec("above", 80, hysteresis=2)])  # wm_80 redefined: fresh state
    states = {s.name: st for s, st in engine.items()}
    assert states["wm_90"].armed is False and states["wm_90"].fired_count == 1
    assert states["wm_80"].armed is True and states["wm_80"].fired_count == 0


def test_refusing_new_lists_fired_refuse_new_watermarks():
    engine = WatermarkEngine.of([spec("above", 90, 5, action=Action.REFUSE_NEW),
                                 spec("above", 95, 5, action=Action.SWITCH)])
    assert engine.refusing_new() == []
    feed(engine, [92])
    assert [s.name for s in engine.refusing_new()] == ["wm_90"]
    feed(engine, [80])
    assert engine.refusing_new() == []


def test_items_sort_by_probe_then_numeric_threshold():
    engine = WatermarkEngine.of([spec(threshold=100), spec(threshold=9), spec(threshold=90)])
    assert [s.name for s, _ in engine.items()] == ["wm_9", "wm_90", "wm_100"]


def test_default_hysteresis_is_5_points_for_percent_else_5_percent_of_the_level():
    assert default_hysteresis("percent", 90) == 5
    assert default_hysteresis("kB", 250000) == 12500


# ---- the config file

@pytest.fixture
def script(tmp_path):
    path = tmp_path / "testcpu90.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_seed_example_parses(script):
    text = f'watermarks = "wm_90";\nwm_90 = "script:{script}:above";\n'
    (wm,) = parse_ecs(text, "/etc/x/service.cfg", "cpu_load", "percent")
    assert (wm.name, wm.threshold, wm.direction, wm.action, wm.script) == (
        "wm_90", 90.0, Direction.ABOVE, Action.SCRIPT, script)
    assert (wm.hysteresis, wm.sustain, wm.path, wm.line) == (5.0, 1, "/etc/x/service.cfg", 2)


def test_several_watermarks_actions_and_options(script):
    text = (f'watermarks = "wm_250000:wm_300000:wm_100000";\n'
            f'wm_250000 = "script:{script}:above";\n'
            f'wm_300000 = "switch::above";\n'
            f'wm_100000 = "refuse_new:below";  # the short form works too\n'
            f'hysteresis = 1000;\nsustain = 2;\nscript_timeout = 5;\n')
    specs = parse_ecs(text, "f", "disk_usage", "kB")
    assert [(s.name, s.action, s.direction) for s in specs] == [
        ("wm_250000", Action.SCRIPT, Direction.ABOVE),
        ("wm_300000", Action.SWITCH, Direction.ABOVE),
        ("wm_100000", Action.REFUSE_NEW, Direction.BELOW)]
    assert {(s.hysteresis, s.sustain, s.script_timeout_s) for s in specs} == {(1000.0, 2, 5.0)}


def test_default_hysteresis_of_a_kb_probe_is_relative(script):
    (wm,) = parse_ecs('watermarks = "wm_250000";\nwm_250000 = "switch::above";\n', "f",
                      "disk_usage", "kB")
    assert wm.hysteresis == 12500


BAD = [
    # (file text, line, key, words in the reason)
    ('watermarks = "wm_90";\nwm_90 = "script:{s}:over";\n', 2, "wm_90",
     ["unknown direction 'over'", "above, below, equal"]),
    ('watermarks = "wm_90";\nwm_90 = "reboot:{s}:above";\n', 2, "wm_90",
     ["unknown action 'reboot'", "script, switch, refuse_new"]),
    ('watermarks = "wm_90:wm_95";\nwm_90 = "switch::above";\n', 1, "watermarks",
     ["wm_95 is listed but not defined"]),
    ('watermarks = "wm_high";\n', 1, "watermarks", ["'wm_high'", "whole number after wm_"]),
    ('watermarks = "wm_90";\nwm_90 = "switch::above";\nwm_80 = "switch::above";\n', 3, "wm_80",
     ["defined but not listed"]),
    ('watermarks = "wm_90";\nwm_90 = "script:relative.sh:above";\n', 2, "wm_90",
     ["must be absolute"]),
    ('watermarks = "wm_90";\nwm_90 = "script::above";\n', 2, "wm_90", ["absolute path"]),
    ('watermarks = "wm_90";\nwm_90 = "script:/no/such/script.sh:above";\n', 2, "wm_90",
     ["/no/such/script.sh not found"]),
    ('watermarks = "wm_90";\nwm_90 = "switch:/x.sh:above";\n', 2, "wm_90",
     ["switch takes no script", "switch::above"]),
    ('watermarks = "wm_90";\nwm_90 = "above";\n', 2, "wm_90", ["ACTION:SCRIPT:DIRECTION"]),
    ('watermarks = "wm_90";\nwm_90 = 90;\n', 2, "wm_90", ["quoted string"]),
    ('watermarks = "wm_150";\nwm_150 = "switch::above";\n', 1, "watermarks",
     ["not a percentage (0-100)"]),
    ('watermarks = "wm_90:wm_90";\nwm_90 = "switch::above";\n', 1, "watermarks", ["listed twice"]),
    ('watermarks = "wm_90::wm_95";\n', 1, "watermarks", ["empty watermark name"]),
    ('watermarks = "wm_90";\nwm_90 = "switch::above";\nhysteresis = -1;\n', 3, "hysteresis",
     ["must be >= 0"]),
    ('watermarks = "wm_90";\nwm_90 = "switch::above";\nhysteresis = "lots";\n', 3, "hysteresis",
     ["must be a number"]),
    ('watermarks = "wm_90";\nwm_90 = "switch::above";\nsustain = 0;\n', 3, "sustain",
     ["integer from 1 to 3600"]),
    ('watermarks = "wm_90";\nwm_90 = "switch::above";\ncolour = 1;\n', 3, "colour",
     ["unknown option", "watermarks"]),
    ('watermarks = "wm_90";\nwatermarks = "wm_95";\n', 2, "watermarks", ["set twice"]),
    ('wm_90 = "switch::above";\n', None, "watermarks", ["required"]),
]


@pytest.mark.parametrize("text,line,key,words", BAD, ids=[b[2] + ":" + b[3][0][:24] for b in BAD])
def test_bad_config_names_file_line_key_and_reason(text, line, key, words, script):
    with pytest.raises(ConfigError) as info:
        parse_ecs(text.format(s=script), "/etc/skyge/emon/ecs/cpu_load/service.cfg", "cpu_load",
                  "percent")
    error = info.value
    assert (error.path, error.line, error.key) == ("/etc/skyge/emon/ecs/cpu_load/service.cfg",
                                                   line, key)
    for word in words:
        assert word in str(error)
    prefix = "/etc/skyge/emon/ecs/cpu_load/service.cfg" + (f":{line}" if line else "")
    assert str(error).startswith(f"{prefix}: {key}: ")


def test_script_must_be_executable(tmp_path):
    path = tmp_path / "s.sh"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"f:2: wm_90: script .* is not executable \(chmod \+x"):
        parse_ecs(f'watermarks = "wm_90";\nwm_90 = "script:{path}:above";\n', "f", "cpu_load",
                  "percent")


def test_ecs_dir_reads_probe_folders_and_skips_folders_without_a_file(tmp_path, script):
    ecs = tmp_path / "ecs"
    (ecs / "cpu_load").mkdir(parents=True)
    (ecs / "cpu_load" / "service.cfg").write_text(
        f'watermarks = "wm_90";\nwm_90 = "script:{script}:above";\n')
    (ecs / "mem_load").mkdir()  # like the seed's folders holding only the probe's .so files
    (ecs / "mem_load" / "mem_load.so").write_text("")
    specs = load_ecs_dir(ecs, {"cpu_load": "percent", "mem_load": "percent"})
    assert [s.key for s in specs] == [("cpu_load", "wm_90")]
    assert load_ecs_dir(tmp_path / "missing", {}) == []


def test_ecs_folder_of_an_unknown_probe_is_refused(tmp_path):
    (tmp_path / "cpu_laod").mkdir()
    (tmp_path / "cpu_laod" / "service.cfg").write_text('watermarks = "wm_1";\n')
    with pytest.raises(ConfigError, match=r"cpu_laod/service.cfg: no probe named 'cpu_laod'"):
        load_ecs_dir(tmp_path, {"cpu_load": "percent"})
