"""Config files in libconfig syntax, as the seed's tools write them, and their validation.

The seed's files look like `domain=1;`, `name = "mysql";`, `# comment`; libconfig also allows `:`
for `=`, a missing `;` at the end of a line (the seed's own `store = "..."` example has none),
`//` and `/* */` comments, adjacent strings concatenated, hex integers, `true`/`false`, and arrays
`[a, b]`. Groups and lists are parsed too so a full libconfig file never crashes the parser.

Every error names the file, the line, the key and what is allowed: a user editing
/etc/skyge/heartbeat.cfg at 3 a.m. must see exactly what to fix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "ConfigError",
    "Field",
    "Schema",
    "Setting",
    "boolean",
    "choice",
    "integer",
    "load_config",
    "parse_config",
    "render_config",
    "string",
]


class ConfigError(ValueError):
    """A config file (or value) is wrong; the message names file, line, key and allowed values."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path, self.line, self.key, self.reason = path, line, key, message
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        subject = f"{key}: " if key else ""
        super().__init__(f"{prefix}{subject}{message}")


@dataclass(frozen=True)
class Setting:
    """One `key = value;` of a file, with the line it came from (for error messages)."""

    key: str
    value: Any
    line: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*|//[^\n]*)
  | (?P<block>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)L{0,2})
  | (?P<name>[A-Za-z\*][-A-Za-z0-9_\*]*)
  | (?P<punct>[=:;,\[\]\(\)\{\}])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", '"': '"', "\\": "\\"}


@dataclass
class _Token:
    kind: str
    text: str
    line: int


def _tokenize(text: str, path: str | None) -> list[_Token]:
    tokens: list[_Token] = []
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            snippet = text[pos:pos + 20].split("\n")[0]
            raise ConfigError(f"unexpected text {snippet!r}", path=path, line=line)
        kind = match.lastgroup or ""
        chunk = match.group()
        if kind not in ("ws", "newline", "comment", "block"):
            tokens.append(_Token(kind, chunk, line))
        line += chunk.count("\n")
        pos = match.end()
    return tokens


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(x[0-9a-fA-F]{2}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x"
                  else _ESCAPES.get(m.group(1), m.group(1)), body)


class _Parser:
    def __init__(self, tokens: list[_Token], path: str | None) -> None:
        self.tokens, self.path, self.pos = tokens, path, 0

    def error(self, message: str, token: _Token | None = None,
              key: str | None = None) -> ConfigError:
        token = token or (self.tokens[self.pos] if self.pos < len(self.tokens) else None)
        line = token.line if token else (self.tokens[-1].line if self.tokens else 1)
        return ConfigError(message, path=self.path, line=line, key=key)

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end of file")
        self.pos += 1
        return token

    def settings(self, closing: str | None) -> list[Setting]:
        found: list[Setting] = []
        while (token := self.peek()) is not None and token.text != closing:
            if token.kind != "name":
                raise self.error(f"expected a setting name, found {token.text!r}", token)
            self.pos += 1
            separator = self.take()
            if separator.text not in ("=", ":"):
                raise self.error(f"expected '=' after the name, found {separator.text!r}",
                                 separator, key=token.text)
            value = self.value(token.text)
            if (end := self.peek()) is not None and end.text in (";", ","):
                self.pos += 1
            found.append(Setting(token.text, value, token.line))
        return found

    def value(self, key: str) -> Any:
        token = self.take()
        if token.kind == "string":
            parts = [_unquote(token.text)]
            while (more := self.peek()) is not None and more.kind == "string":
                parts.append(_unquote(self.take().text))
            return "".join(parts)
        if token.kind == "number":
            number = token.text.rstrip("L")
            if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", number):
                return int(number, 16)
            return float(number) if re.search(r"[.eE]", number) else int(number)
        if token.kind == "name" and token.text.lower() in ("true", "false", "yes", "no"):
            return token.text.lower() in ("true", "yes")  # yes/no as in the seed's files
        if token.text in ("[", "("):
            closing = "]" if token.text == "[" else ")"
            items: list[Any] = []
            while (nxt := self.peek()) is not None and nxt.text != closing:
                items.append(self.value(key))
                if (sep := self.peek()) is not None and sep.text == ",":
                    self.pos += 1
            self.take()
            return items
        if token.text == "{":
            group = {s.key: s.value for s in self.settings("}")}
            self.take()
            return group
        raise self.error(f"expected a value, found {token.text!r}", token, key=key)


def parse_config(text: str, path: str | None = None) -> list[Setting]:
    """Parse libconfig text into settings in file order; raises ConfigError on bad syntax."""
    parser = _Parser(_tokenize(text, path), path)
    found = parser.settings(None)
    seen: dict[str, int] = {}
    for setting in found:
        if setting.key in seen:
            raise ConfigError(f"set twice (first on line {seen[setting.key]})",
                              path=path, line=setting.line, key=setting.key)
        seen[setting.key] = setting.line
    return found


# --- validation ---------------------------------------------------------------------------------

Converter = Callable[[Any], Any]


def integer(low: int, high: int) -> Converter:
    """An integer in [low, high]; quoted digits ("5") are accepted, as the seed's files do."""

    def convert(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {value}")
        return value

    # what config_docs prints as the allowed values (a function attribute mypy cannot see)
    convert.allowed = f"an integer from {low} to {high}"  # type: ignore[attr-defined]
    return convert


def boolean(value: Any) -> bool:
    """true/false, or the seed's "yes"/"no"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "no", "true", "false", "on", "off"):
        return value.lower() in ("yes", "true", "on")
    raise ValueError(f'must be "yes" or "no", got {value!r}')



def string(pattern: str | None = None, description: str | None = None) -> Converter:
    """A string, optionally matching `pattern` (described as `description` in errors)."""

    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a quoted string, got {value!r}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise ValueError(f"must be {description or 'of the form ' + pattern}, got {value!r}")
        return value

    convert.allowed = description or "a string"  # type: ignore[attr-defined]
    return convert


def choice(*allowed: str) -> Converter:
    """One of a fixed set of words."""

    def convert(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    convert.allowed = "one of " + ", ".join(allowed)  # type: ignore[attr-defined]
    return convert


@dataclass(frozen=True)
class Field:
    """One allowed key: how to convert/check it, its default, and whether it must be present."""

    name: str
    convert: Converter
    default: Any = None
    required: bool = False
    aliases: tuple[str, ...] = ()
    help: str = ""


@dataclass
class Schema:
    """The keys a file may hold. Unknown keys are errors unless `allow_unknown` (prefix match)."""

    fields: list[Field]
    allow_unknown: Callable[[str], bool] = field(default=lambda key: False)

    def _by_key(self) -> dict[str, Field]:
        table = {}
        for f in self.fields:
            table[f.name] = f
            for alias in f.aliases:
                table[alias] = f
        return table

    def validate(self, settings: Iterable[Setting], path: str | None = None) -> dict[str, Any]:
        """Check settings against the schema; returns {field name: value} with defaults filled."""
        table = self._by_key()
        values: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for setting in settings:
            spec = table.get(setting.key)
            if spec is None:
                if self.allow_unknown(setting.key):
                    extras[setting.key] = setting.value
                    continue
                known = ", ".join(sorted(f.name for f in self.fields))
                raise ConfigError(f"unknown option (allowed: {known})", path=path,
                                  line=setting.line, key=setting.key)
            if spec.name in values:
                raise ConfigError(f"given twice (also as {spec.name} or an alias)", path=path,
                                  line=setting.line, key=setting.key)
            try:
                values[spec.name] = spec.convert(setting.value)
            except ValueError as exc:
                raise ConfigError(str(exc), path=path, line=setting.line, key=setting.key) from None
        for spec in self.fields:
            if spec.name not in values:
                if spec.required:
                    raise ConfigError("is required but missing", path=path, key=spec.name)
                values[spec.name] = spec.default
        values.update(extras)
        return values


def load_config(path: str | Path, schema: Schema, *, missing_ok: bool = False) -> dict[str, Any]:
    """Read, parse and validate one file. A missing file is an error unless `missing_ok`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return schema.validate([], str(path))
        raise ConfigError("file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(path)) from None
    return schema.validate(parse_config(text, str(path)), str(path))


def render_config(values: Mapping[str, Any]) -> str:
    """Write settings back in the seed's style (`key = value;`), for `config` commands."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            text = f'"{escaped}"'
        lines.append(f"{key} = {text};")
    return "\n".join(lines) + "\n"
