"""Watermarks (the seed's ECS): their config files and when they fire. Pure: values in, crossings
out.

One file per probe, ROOT/etc/skyge/emon/ecs/PROBE/service.cfg, in the seed's format:

    watermarks = "wm_90:wm_95";                 # the watermarks of this probe, ':'-separated
    wm_90 = "script:/opt/emon/cpu90.sh:above";  # run a script when the value goes above 90
    wm_95 = "switch::above";                    # switch this node's HA services to the next node
    # wm_XX = "refuse_new::above";              # take no new HA services while above XX
    hysteresis = 5;                             # (ours) re-arm margin, in the probe's unit
    sustain = 1;                                # (ours) consecutive samples beyond XX to fire
    script_timeout = 60;                        # (ours) longest script run, s

XX is the threshold in the probe's unit (percent for cpu_load and mem_load, kB of the root file
system for disk_usage). Directions: `above` fires when the value is > XX, `below` when < XX,
`equal` when it rounds to XX.

A watermark fires once when the value crosses (after `sustain` consecutive samples beyond it),
then stays disarmed until the value is back past the threshold by `hysteresis`: `above` re-arms at
<= XX - hysteresis, `below` at >= XX + hysteresis, `equal` when the value no longer rounds to XX and
is at least hysteresis away. A watermark whose condition already holds at the first sample fires.
Default hysteresis: 5 for percent probes, 5% of the threshold otherwise.

Every error names the file, the line, the key and the reason (`ConfigError`).
"""
from __future__ import annotations

import contextlib
import enum
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Mapping

from skyge.services.common.config import ConfigError, Setting, parse_config

__all__ = [
    "ECS_FILE",
    "Action",
    "Crossing",
    "Direction",
    "WatermarkEngine",
    "WatermarkSpec",
    "WatermarkState",
    "default_hysteresis",
    "load_ecs_dir",
    "parse_ecs",
]

ECS_FILE = "service.cfg"
PERCENT = "percent"
DEFAULT_SCRIPT_TIMEOUT_S = 60.0
_NAME_RE = re.compile(r"wm_(\d{1,15})")
_KNOWN_KEYS = ("watermarks", "hysteresis", "sustain", "script_timeout", "wm_XX")


class Direction(enum.Enum):
    ABOVE = "above"
    BELOW = "below"
    EQUAL = "equal"


class Action(enum.Enum):
    SCRIPT = "script"
    SWITCH = "switch"
    REFUSE_NEW = "refuse_new"


def default_hysteresis(unit: str, threshold: float) -> float:
    """5 points for percent probes, else 5% of the threshold (e.g. 12500 kB for wm_250000)."""
    return 5.0 if unit == PERCENT else abs(threshold) * 0.05


@dataclass(frozen=True)
class WatermarkSpec:
    """One `wm_XX = "ACTION:SCRIPT:DIRECTION";` line, validated, with its file's settings."""

    probe: str
    name: str
    threshold: float
    direction: Direction
    action: Action
    script: str = ""
    hysteresis: float = 5.0
    sustain: int = 1
    script_timeout_s: float = DEFAULT_SCRIPT_TIMEOUT_S
    path: str = ""
    line: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.probe, self.name)

    def beyond(self, value: float) -> bool:
        """True when `value` is on the firing side of the threshold."""
        if self.direction is Direction.ABOVE:
            return value > self.threshold
        if self.direction is Direction.BELOW:
            return value < self.threshold
        return round(value) == self.threshold

    def back(self, value: float) -> bool:
        """True when `value` is back past the threshold by the hysteresis (re-arms)."""
        if self.direction is Direction.ABOVE:
            return value <= self.threshold - self.hysteresis
        if self.direction is Direction.BELOW:
            return value >= self.threshold + self.hysteresis
        return round(value) != self.threshold and abs(value - self.threshold) >= self.hysteresis

    def describe(self) -> str:
        """e.g. "cpu_load/wm_90 (script /x.sh when above 90)"."""
        what = f"script {self.script}" if self.action is Action.SCRIPT else self.action.value
        return f"{self.probe}/{self.name} ({what} when {self.direction.value} {self.threshold:g})"


@dataclass
class WatermarkState:
    """What changes while the daemon runs."""

    armed: bool = True
    streak: int = 0  # consecutive samples beyond the threshold while armed
    fired_count: int = 0
    last_fired_unix_ns: int = 0
    last_exit_status: int = 0
    last_result: str = ""


@dataclass(frozen=True)
class Crossing:
    """A watermark fired (`fired` True) or re-armed (`fired` False) at a sample."""

    spec: WatermarkSpec
    fired: bool
    value: float
    time_unix_ns: int


@dataclass
class WatermarkEngine:
    """Watermarks and their states; `observe` turns samples into crossings."""

    specs: dict[tuple[str, str], WatermarkSpec] = field(default_factory=dict)
    states: dict[tuple[str, str], WatermarkState] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: Iterable[WatermarkSpec]) -> WatermarkEngine:
        engine = cls()
        engine.replace(specs)
        return engine

    def replace(self, specs: Iterable[WatermarkSpec]) -> None:
        """New definitions; a watermark defined exactly as before keeps its state."""
        new_specs = {spec.key: spec for spec in specs}
        new_states = {}
        for key, spec in new_specs.items():
            old = self.specs.get(key)
            same = old is not None and _definition(old) == _definition(spec)
            new_states[key] = self.states[key] if same else WatermarkState()
        self.specs, self.states = new_specs, new_states

    def observe(self, probe: str, value: float, time_unix_ns: int) -> list[Crossing]:
        """Feed one sample of `probe`; returns the watermarks it fired or re-armed."""
        crossings = []
        for key, spec in self.specs.items():
            if spec.probe != probe:
                continue
            state = self.states[key]
            if state.armed:
                if spec.beyond(value):
                    state.streak += 1
                    if state.streak >= spec.sustain:
                        state.armed, state.streak = False, 0
                        state.fired_count += 1
                        state.last_fired_unix_ns = time_unix_ns
                        crossings.append(Crossing(spec, True, value, time_unix_ns))
                else:
                    state.streak = 0
            elif spec.back(value):
                state.armed = True
                crossings.append(Crossing(spec, False, value, time_unix_ns))
        return crossings

    def items(self, probe: str | None = None) -> list[tuple[WatermarkSpec, WatermarkState]]:
        """(spec, state) sorted by (probe, name), optionally of one probe."""
        return [(self.specs[k], self.states[k]) for k in sorted(self.specs, key=_sort_key)
                if probe is None or k[0] == probe]

    def refusing_new(self) -> list[WatermarkSpec]:
        """The refuse_new watermarks now fired (not re-armed)."""
        return [spec for key, spec in sorted(self.specs.items(), key=lambda kv: _sort_key(kv[0]))
                if spec.action is Action.REFUSE_NEW and not self.states[key].armed]


def _sort_key(key: tuple[str, str]) -> tuple[str, int, str]:
    probe, name = key
    match = _NAME_RE.fullmatch(name)
    return (probe, int(match.group(1)) if match else 0, name)


def _definition(spec: WatermarkSpec) -> tuple[object, ...]:
    return (spec.threshold, spec.direction, spec.action, spec.script, spec.hysteresis, spec.sustain)


# --- config files ---------------------------------------------------------------------------------


def _number(setting: Setting, path: str, low: float, what: str) -> float:
    value = setting.value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"must be a number ({what}), got {setting.value!r}", path=path,
                          line=setting.line, key=setting.key)
    if value < low:
        raise ConfigError(f"must be >= {low:g} ({what}), got {value:g}", path=path,
                          line=setting.line, key=setting.key)
    return float(value)


def _action(setting: Setting, path: str, check_scripts: bool) -> tuple[Action, str, Direction]:
    """Parse `"script:/path:above"`, `"switch::above"` (or `"switch:above"`),
    `"refuse_new::below"`."""
    def fail(reason: str) -> ConfigError:
        return ConfigError(reason, path=path, line=setting.line, key=setting.key)

    example = '"script:/path/to/script:above", "switch::above" or "refuse_new::above"'
    if not isinstance(setting.value, str):
        raise fail(f"must be a quoted string like {example}, got {setting.value!r}")
    parts = setting.value.strip().split(":")
    if len(parts) < 2:
        raise fail(f"must be ACTION:SCRIPT:DIRECTION, e.g. {example}; got {setting.value!r}")
    word, direction_word = parts[0].strip(), parts[-1].strip()
    middle = ":".join(parts[1:-1]).strip()
    try:
        action = Action(word)
    except ValueError:
        raise fail(f"unknown action {word!r} (allowed: script, switch, refuse_new)") from None
    try:
        direction = Direction(direction_word)
    except ValueError:
        raise fail(f"unknown direction {direction_word!r} (allowed: above, below, equal)") from None
    if action is Action.SCRIPT:
        if not middle:
            raise fail(f'script needs the script\'s absolute path: "script:/path/to/script:'
                       f'{direction.value}"')
        if not middle.startswith("/"):
            raise fail(f"script path must be absolute, got {middle!r}")
        if check_scripts:
            if not os.path.isfile(middle):
                raise fail(f"script {middle} not found")
            if not os.access(middle, os.X_OK):
                raise fail(f"script {middle} is not executable (chmod +x {middle})")
    elif middle:
        raise fail(f'{action.value} takes no script: write "{action.value}::{direction.value}", '
                   f"got {setting.value!r}")
    return action, middle, direction


def parse_ecs(text: str, path: str, probe: str, unit: str, *,
              check_scripts: bool = True) -> list[WatermarkSpec]:
    """The watermarks of one probe's service.cfg (text of `path`), validated."""
    settings = parse_config(text, path)
    by_key = {s.key: s for s in settings}
    listed_setting = by_key.get("watermarks")
    if listed_setting is None:
        raise ConfigError('is required but missing (e.g. watermarks = "wm_90";)', path=path,
                          key="watermarks")
    if not isinstance(listed_setting.value, str):
        raise ConfigError(f'must be a quoted string like "wm_90:wm_95", got '
                          f"{listed_setting.value!r}", path=path, line=listed_setting.line,
                          key="watermarks")

    def listing_error(reason: str) -> ConfigError:
        return ConfigError(reason, path=path, line=listed_setting.line, key="watermarks")

    listed: dict[str, int] = {}  # name -> threshold, in the listed order
    for raw in listed_setting.value.split(":"):
        name = raw.strip()
        if not name:
            raise listing_error(f"empty watermark name in {listed_setting.value!r} (names are "
                                f"separated by one ':')")
        match = _NAME_RE.fullmatch(name)
        if match is None:
            raise listing_error(f"{name!r} is not a watermark name: the threshold is the whole "
                                f"number after wm_ (e.g. wm_90)")
        if name in listed:
            raise listing_error(f"{name} is listed twice")
        threshold = int(match.group(1))
        if unit == PERCENT and threshold > 100:
            raise listing_error(f"{name}: threshold {threshold} is not a percentage (0-100) of "
                                f"{probe}")
        listed[name] = threshold
    for name in listed:
        if name not in by_key:
            raise ConfigError(f'{name} is listed but not defined (add a line {name} = '
                              f'"script:/path/to/script:above";)', path=path,
                              line=listed_setting.line, key="watermarks")

    hysteresis: float | None = None
    sustain, script_timeout = 1, DEFAULT_SCRIPT_TIMEOUT_S
    actions: dict[str, tuple[Action, str, Direction, int]] = {}
    for setting in settings:
        key = setting.key
        if key == "watermarks":
            continue
        if key == "hysteresis":
            hysteresis = _number(setting, path, 0, f"re-arm margin in {unit or 'the unit'}")
        elif key == "sustain":
            value = setting.value
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3600:
                raise ConfigError(f"must be an integer from 1 to 3600 (consecutive samples), "
                                  f"got {value!r}", path=path, line=setting.line, key=key)
            sustain = value
        elif key == "script_timeout":
            script_timeout = _number(setting, path, 0.1, "seconds")
            if script_timeout > 86400:
                raise ConfigError(f"must be at most 86400 s, got {script_timeout:g}", path=path,
                                  line=setting.line, key=key)
        elif key.startswith("wm_"):
            if _NAME_RE.fullmatch(key) is None:
                raise ConfigError("is not a watermark name: the threshold is the whole number "
                                  "after wm_ (e.g. wm_90)", path=path, line=setting.line, key=key)
            if key not in listed:
                raise ConfigError(f"is defined but not listed in watermarks (line "
                                  f"{listed_setting.line}): add it there or remove this line",
                                  path=path, line=setting.line, key=key)
            actions[key] = (*_action(setting, path, check_scripts), setting.line)
        else:
            raise ConfigError(f"unknown option (allowed: {', '.join(_KNOWN_KEYS)})", path=path,
                              line=setting.line, key=key)

    specs = []
    for name, threshold in listed.items():
        action, script, direction, line = actions[name]
        margin = default_hysteresis(unit, threshold) if hysteresis is None else hysteresis
        specs.append(WatermarkSpec(probe, name, float(threshold), direction, action, script,
                                   margin, sustain, script_timeout, path, line))
    return specs


def load_ecs_dir(ecs_dir: Path, probe_units: Mapping[str, str], *,
                 check_scripts: bool = True) -> list[WatermarkSpec]:
    """Every ECS_DIR/PROBE/service.cfg (folders without one are skipped, as the seed's are)."""
    if not ecs_dir.is_dir():
        return []
    specs: list[WatermarkSpec] = []
    for folder in sorted(ecs_dir.iterdir()):
        cfg = folder / ECS_FILE
        if not folder.is_dir() or not cfg.is_file():
            continue
        if folder.name not in probe_units:
            raise ConfigError(f"no probe named {folder.name!r} for these watermarks (probes: "
                              f"{', '.join(sorted(probe_units))})", path=str(cfg))
        try:
            text = cfg.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", path=str(cfg)) from None
        specs.extend(parse_ecs(text, str(cfg), folder.name, probe_units[folder.name],
                               check_scripts=check_scripts))
    return specs
