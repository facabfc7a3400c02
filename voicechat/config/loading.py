"""voicechat configuration: how settings are loaded (the schema is in ``settings``).

Precedence, lowest to highest: defaults < config.toml < environment variables
``VOICECHAT_<SECTION>__<KEY>`` < CLI ``--set section.key=value``; then ``models.set``
fills the model keys still at their defaults (``models.sets``). The layering is a
plain merge (see ``sources``) rather than pydantic-settings' own sources,
because every key must remember where it came from and unknown keys must be errors
in every source, env included. ``Settings()`` therefore never reads the environment
by itself: call ``load_config``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from voicechat.config.schema import Settings
from voicechat.config.sources import (
    DEFAULT_ORIGIN,
    ENV_CONFIG_VAR,
    ENV_DELIMITER,
    ENV_PREFIX,
    ConfigError,
    Layers,
    apply_env,
    apply_file,
    apply_overrides,
    fields_of,
    find_config_file,
    format_table,
    read_toml,
    render_defaults,
    validate,
)
from voicechat.models.sets import apply_model_set

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "Settings",
    "add_config_arguments",
    "config_main",
    "default_toml",
    "format_config",
    "load_config",
    "load_from_args",
]

@dataclass(frozen=True)
class LoadedConfig:
    """Validated settings plus where each dotted key's value came from."""

    settings: Settings
    sources: dict[str, str]


def load_config(
    config_path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Merge defaults < file < env < overrides, validate, and record each key's source."""
    env = os.environ if env is None else env
    layers = Layers()
    path = find_config_file(config_path, env)
    if path is not None:
        apply_file(layers, Settings, read_toml(path), str(path))
    apply_env(layers, Settings, env)
    apply_overrides(layers, Settings, overrides or {})
    settings = validate(Settings, layers)
    sources = {
        f"{section}.{key}": layers.origins.get(f"{section}.{key}", DEFAULT_ORIGIN)
        for section, key, _ in fields_of(Settings)
    }
    settings, sources = apply_model_set(settings, sources)  # models.set fills the model keys left unset
    return LoadedConfig(settings=settings, sources=sources)


def format_config(loaded: LoadedConfig) -> str:
    """One aligned line per key: ``section.key = value   # source | description``."""
    return format_table(loaded.settings, loaded.sources)


def default_toml() -> str:
    """The commented default config file (what config.toml at the repo root holds)."""
    return render_defaults(
        Settings,
        f"""
voicechat configuration: every setting, at its default value.
Precedence: defaults < this file < env {ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY> < --set section.key=value
Use another file with --config PATH or {ENV_CONFIG_VAR}=PATH; see the result with: python run.py config
Regenerate this file with: python run.py config --defaults > config.toml
""",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and --set to a subcommand's parser (read back by load_from_args)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"config file (default: ${ENV_CONFIG_VAR}, else ./config.toml if present)",
    )
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=None,
        help="override one setting, e.g. --set llm.temperature=0.2 (repeatable; beats file and env)",
    )


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``--set SECTION.KEY=VALUE`` items as overrides; a malformed one is a ConfigError."""
    overrides: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"malformed --set {item!r}: expected SECTION.KEY=VALUE, e.g. --set llm.temperature=0.2",
                source=f"cli --set {item}",
            )
        overrides[key.strip()] = value
    return overrides


def load_from_args(args: argparse.Namespace, *, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """load_config from parsed --config/--set; a malformed --set is a ConfigError."""
    overrides = parse_overrides(getattr(args, "set", None) or [])
    return load_config(getattr(args, "config", None), env=env, overrides=overrides)


def config_main(argv: list[str], *, env: Mapping[str, str] | None = None) -> int:
    """``run.py config``: print the effective settings and their sources; 2 on a config error."""
    parser = argparse.ArgumentParser(prog="run.py config", description="Show the effective settings.")
    add_config_arguments(parser)
    parser.add_argument("--defaults", action="store_true", help="print a default config.toml instead")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help or a usage error: argparse already printed why
        return stop.code if isinstance(stop.code, int) else 2
    if args.defaults:
        sys.stdout.write(default_toml())
        return 0
    try:
        loaded = load_from_args(args, env=env)
    except ConfigError as err:
        print(f"voicechat: config error: {err}", file=sys.stderr)
        return 2
    print(format_config(loaded))
    return 0
