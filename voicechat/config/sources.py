"""Layering machinery behind ``voicechat.config.loading``: sources, key checks, error text.

Kept generic over the root settings model (a model whose fields are section models)
so that ``loading.py`` holds only the public API (the schema is ``schema.py``). Every value carries
its origin from the moment it is read, because a config error is only useful when it
says where the bad value came from.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

ENV_PREFIX = "VOICECHAT_"
ENV_DELIMITER = "__"
ENV_CONFIG_VAR = "VOICECHAT_CONFIG"
DEFAULT_ORIGIN = "default"

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(Exception):
    """A configuration problem, described on one line for the user.

    ``key``/``value``/``source`` are kept for programs; ``str(err)`` is the message.
    """

    def __init__(
        self, message: str, *, key: str | None = None, value: Any = None, source: str | None = None
    ) -> None:
        super().__init__(" ".join(message.splitlines()))  # one line, whatever the parts contain
        self.key = key
        self.value = value
        self.source = source


def sections_of(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Section name -> section model, in declaration order."""
    out: dict[str, type[BaseModel]] = {}
    for name, info in root.model_fields.items():
        assert isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        out[name] = info.annotation
    return out


def fields_of(root: type[BaseModel]) -> list[tuple[str, str, FieldInfo]]:
    """Every (section, key, field) in schema order."""
    return [
        (section, key, info)
        for section, model in sections_of(root).items()
        for key, info in model.model_fields.items()
    ]


def _suggest(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """'; did you mean X?' for a near miss, so typos are quick to fix."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def check_key(root: type[BaseModel], section: str, key: str, origin: str) -> FieldInfo:
    """Return the field for ``section.key`` or raise ConfigError naming what exists."""
    sections = sections_of(root)
    model = sections.get(section)
    if model is None:
        raise ConfigError(
            f"unknown section [{section}] (from {origin}); sections: {', '.join(sections)}"
            + _suggest(section, sections),
            key=f"{section}.{key}" if key else section,
            source=origin,
        )
    info = model.model_fields.get(key)
    if info is None:
        keys = model.model_fields
        raise ConfigError(
            f"unknown key {section}.{key} (from {origin}); keys in [{section}]: {', '.join(keys)}"
            + _suggest(key, keys, f"{section}."),
            key=f"{section}.{key}",
            source=origin,
        )
    return info


@dataclass
class Layers:
    """Raw values from all sources merged so far, with the origin of each dotted key."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def put(self, section: str, key: str, value: Any, origin: str) -> None:
        """Set one value; a later call (a higher-precedence source) wins."""
        self.values.setdefault(section, {})[key] = value
        self.origins[f"{section}.{key}"] = origin


def find_config_file(config_path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """Explicit path, else $VOICECHAT_CONFIG, else ./config.toml if present; named files must exist."""
    if config_path is not None:
        named, how = Path(config_path), ""
    elif env.get(ENV_CONFIG_VAR):
        named, how = Path(env[ENV_CONFIG_VAR]), f" (from env {ENV_CONFIG_VAR})"
    else:
        default = Path("config.toml")
        return default if default.is_file() else None
    if not named.is_file():
        problem = "is not a file" if named.exists() else "does not exist"
        raise ConfigError(f"config file {named}{how} {problem}", source=str(named))
    return named


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors name the file and line (tomllib adds the line)."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"malformed TOML in {path}: {err}", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read {path}: not UTF-8 ({err.reason})", source=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}", source=str(path)) from None


def apply_file(layers: Layers, root: type[BaseModel], data: Mapping[str, Any], origin: str) -> None:
    """Merge a parsed TOML document, rejecting unknown sections and keys."""
    for section, table in data.items():
        if section not in sections_of(root):
            check_key(root, section, "", origin)  # raises: unknown section
        if not isinstance(table, dict):
            raise ConfigError(
                f"[{section}] must be a table, got {section} = {table!r} (from {origin})",
                key=section,
                value=table,
                source=origin,
            )
        for key, value in table.items():
            check_key(root, section, key, origin)
            layers.put(section, key, value, origin)


def parse_text(info: FieldInfo, text: str) -> Any:
    """Turn an env/CLI string into a value: JSON/TOML-style scalars and lists where the
    field is not a plain string (pydantic will not coerce '16000' into Literal[16000],
    nor '["a"]' into a list); text that is not JSON is left for pydantic to judge."""
    if info.annotation is str:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_env(layers: Layers, root: type[BaseModel], env: Mapping[str, str]) -> None:
    """Merge ``VOICECHAT_<SECTION>__<KEY>`` variables (case-insensitive).

    pydantic-settings would silently ignore a misspelt variable; here any variable with
    the delimiter must name a real key, and ``VOICECHAT_LLM_TEMPERATURE`` (single
    underscore, a real key) is flagged too. Other ``VOICECHAT_*`` names (bootstrap
    switches, VOICECHAT_CONFIG) are left alone.
    """
    sections = sections_of(root)
    claimed: dict[str, str] = {}
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == ENV_CONFIG_VAR:
            continue
        rest = upper[len(ENV_PREFIX):].lower()
        origin = f"env {name}"
        if ENV_DELIMITER not in rest:
            for section, model in sections.items():
                key = rest[len(section) + 1:]
                if rest.startswith(section + "_") and key in model.model_fields:
                    want = f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{key.upper()}"
                    raise ConfigError(
                        f"{name} is not a config variable; to set {section}.{key} use {want}",
                        key=f"{section}.{key}",
                        source=origin,
                    )
            continue
        section, key = rest.split(ENV_DELIMITER, 1)
        info = check_key(root, section, key, origin)
        dotted = f"{section}.{key}"
        if dotted in claimed and env[claimed[dotted]] != env[name]:
            raise ConfigError(
                f"{dotted} is set by both {claimed[dotted]} and {name} with different values",
                key=dotted,
                source=origin,
            )
        claimed[dotted] = name
        layers.put(section, key, parse_text(info, env[name]), origin)


def apply_overrides(layers: Layers, root: type[BaseModel], overrides: Mapping[str, str]) -> None:
    """Merge CLI ``--set section.key=value`` overrides (keys case-insensitive)."""
    for dotted, text in overrides.items():
        origin = f"cli --set {dotted}={text}"
        section, dot, key = dotted.strip().lower().partition(".")
        if not dot or not key:
            raise ConfigError(
                f"bad key {dotted!r} (from {origin}): expected SECTION.KEY; "
                f"sections: {', '.join(sections_of(root))}",
                key=dotted,
                source=origin,
            )
        info = check_key(root, section, key, origin)
        layers.put(section, key, parse_text(info, text), origin)


def validate(root: type[ModelT], layers: Layers) -> ModelT:
    """Build the root model; turn pydantic's errors into one ConfigError line."""
    try:
        return root.model_validate(layers.values)
    except ValidationError as err:
        problems = err.errors(include_url=False)
        first = problems[0]
        loc = [str(part) for part in first["loc"]]
        section, key = (loc + ["", ""])[:2]
        dotted = f"{section}.{key}".strip(".")
        value = layers.values.get(section, {}).get(key, first.get("input"))
        origin = layers.origins.get(dotted, DEFAULT_ORIGIN)
        model = sections_of(root).get(section)
        info = model.model_fields.get(key) if model is not None else None
        detail = "" if first["type"] == "literal_error" else f": {first['msg']}"
        allowed = f"; allowed: {describe_allowed(info)}" if info is not None else ""
        others = sorted({".".join(str(p) for p in e["loc"][:2]) for e in problems[1:]} - {dotted})
        more = f" (also invalid: {', '.join(others)})" if others else ""
        raise ConfigError(
            f"{dotted} = {value!r} (from {origin}) is invalid{detail}{allowed}{more}",
            key=dotted,
            value=value,
            source=origin,
        ) from None


def _bounds(info: FieldInfo) -> str:
    """' from 0 to 2' / ' >= 1' ... from the field's annotated-types constraints."""
    low = high = ""
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = f">= {toml_value(meta.ge)}"
        elif isinstance(meta, annotated_types.Gt):
            low = f"> {toml_value(meta.gt)}"
        elif isinstance(meta, annotated_types.Le):
            high = f"<= {toml_value(meta.le)}"
        elif isinstance(meta, annotated_types.Lt):
            high = f"< {toml_value(meta.lt)}"
    if low.startswith(">=") and high.startswith("<="):
        return f" from {low[3:]} to {high[3:]}"
    return " " + " and ".join(b for b in (low, high) if b) if (low or high) else ""


def describe_allowed(info: FieldInfo) -> str:
    """What a field accepts, derived from its type and constraints (never hand-written)."""
    ann = info.annotation
    origin = get_origin(ann)
    if origin is Literal:
        return ", ".join(repr(choice) for choice in get_args(ann))
    if ann is bool:
        return "true or false"
    if ann is int:
        return "an integer" + _bounds(info)
    if ann is float:
        return "a number" + _bounds(info)
    if ann is str:
        return "any string"
    if origin in (list, tuple, set, frozenset):
        inner = get_args(ann)[0] if get_args(ann) else Any
        if inner is str:
            return 'a list of strings, e.g. ["a", "b"]'
        return f"a list of {getattr(inner, '__name__', inner)}"
    return getattr(ann, "__name__", str(ann))


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _toml_char(ch: str) -> str:
    """One character of a TOML basic string: escape quotes, backslashes and anything
    unprintable (TOML forbids raw control characters; U+0085 or U+2028 would also
    split a `config` output line)."""
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    return f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"


def toml_value(value: Any) -> str:
    """Format a value as TOML (strings quoted and escaped, lists inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(ch) for ch in value) + '"'
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, os.PathLike):
        return toml_value(os.fspath(value))
    raise TypeError(f"cannot format {type(value).__name__} as TOML")


def render_defaults(root: type[BaseModel], header: str) -> str:
    """A commented TOML document listing every section and key at its default value."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    defaults = root()
    for section, model in sections_of(root).items():
        doc = (model.__doc__ or "").strip().splitlines()
        lines += ["", f"# {doc[0]}" if doc else f"# [{section}]", f"[{section}]"]
        for key, info in model.model_fields.items():
            allowed = "" if info.annotation is str else f" ({describe_allowed(info)})"
            lines.append(f"# {info.description}{allowed}")
            lines.append(f"{key} = {toml_value(getattr(getattr(defaults, section), key))}")
    return "\n".join(lines) + "\n"


def _is_secret(info: FieldInfo) -> bool:
    """Fields marked secret print as "***", so `config` output can go into a bug report."""
    return isinstance(info.json_schema_extra, dict) and bool(info.json_schema_extra.get("secret"))


def format_table(settings: BaseModel, sources: Mapping[str, str]) -> str:
    """One aligned line per key: ``section.key = value   # source | description``."""
    rows: list[tuple[str, str, str]] = []
    for section, key, info in fields_of(type(settings)):
        value = getattr(getattr(settings, section), key)
        dotted = f"{section}.{key}"
        source = sources.get(dotted, DEFAULT_ORIGIN)
        if _is_secret(info) and value:
            value = "***"
            source = source.split("=", 1)[0] + "=***" if "=" in source else source  # --set k=v
        rows.append((f"{dotted} = {toml_value(value)}", source, info.description or ""))
    # A very long value (the system prompt) should not push every other line right.
    left_width = max((len(left) for left, _, _ in rows if len(left) <= 60), default=0)
    source_width = max((len(source) for _, source, _ in rows), default=0)
    return "\n".join(
        f"{left.ljust(left_width)}   # {source.ljust(source_width)} | {description}".rstrip()
        for left, source, description in rows
    )
