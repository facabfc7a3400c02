"""The recommended models: where each comes from, where it goes, which setting uses it.

Pure data plus name lookups; no I/O. Local paths are relative to the project's
``models/`` directory. Revisions are pinned to commits where the file list was checked
(on the Hub's public tree pages), so a download is reproducible; ``main`` where it was not.
Piper and Kokoro voices other than the listed ones get an entry made on demand from the
voice name, because their repositories lay voices out by a fixed naming rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["llm", "stt", "tts"]

MODELS_DIRNAME = "models"


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its path in the Hub repository and under ``models/``."""

    repo_path: str
    local_path: str


@dataclass(frozen=True)
class ModelSpec:
    """A downloadable model and the setting that selects it."""

    name: str
    kind: Kind
    repo_id: str
    revision: str
    files: tuple[ModelFile, ...]
    target: str  # what the setting points at, relative to models/: a file or a directory
    size_bytes: int | None  # approximate total download size
    config_key: str
    config_value: str
    engine: tuple[str, str] | None = None  # (key, value) the model also needs, e.g. tts.engine = piper
    default: bool = False  # part of the recommended set (`models download --all-default`)
    optional: bool = False
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other config values meaning this model

    def settings_hint(self) -> str:
        """The config lines that select this model, for messages."""
        lines = [f"{self.config_key} = {self.config_value!r}"]
        if self.engine:
            lines.insert(0, f"{self.engine[0]} = {self.engine[1]!r}")
        return ", ".join(lines)


_MB = 1_000_000


def _single_file(name: str, repo_id: str, revision: str, filename: str, size_mb: float, *,
                 default: bool, description: str) -> ModelSpec:
    return ModelSpec(
        name=name, kind="llm", repo_id=repo_id, revision=revision,
        files=(ModelFile(filename, filename),), target=filename, size_bytes=int(size_mb * _MB),
        config_key="llm.model", config_value=f"{MODELS_DIRNAME}/{filename}", engine=("llm.backend", "llama_cpp"),
        default=default, description=description,
    )


def _whisper(size: str, revision: str, size_mb: float, *, default: bool = False) -> ModelSpec:
    local = f"faster-whisper-{size}"
    return ModelSpec(
        name=f"whisper-{size}", kind="stt", repo_id=f"Systran/faster-whisper-{size}", revision=revision,
        files=tuple(ModelFile(f, f"{local}/{f}") for f in ("config.json", "model.bin", "tokenizer.json",
                                                           "vocabulary.txt")),
        target=local, size_bytes=int(size_mb * _MB), config_key="stt.model", config_value=size,
        engine=("stt.engine", "faster_whisper"), default=default,
        description=f"Whisper {size} for faster-whisper (CTranslate2, float16)",
        aliases=(f"{MODELS_DIRNAME}/{local}",),
    )


PIPER_REPO = "rhasspy/piper-voices"
PIPER_REVISION = "c3bf31a7c50ea738281519ca86ba2ee0f50a1882"
PIPER_DIR = "piper"
PIPER_EXAMPLE = "en_US-lessac-medium"
_PIPER_VOICE = re.compile(r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<speaker>[A-Za-z0-9_]+)-"
                          r"(?P<quality>x_low|low|medium|high)$")

KOKORO_REPO = "hexgrad/Kokoro-82M"
KOKORO_DIR = "kokoro-82m"
KOKORO_DEFAULT_VOICE = "af_heart"
_KOKORO_VOICE = re.compile(r"^[a-z]{2}_[a-z0-9]+$")


def piper_voice(voice: str, size_mb: float | None = None, *, default: bool = False) -> ModelSpec | None:
    """The entry for a Piper voice name like ``en_US-lessac-medium``; None if not such a name."""
    m = _PIPER_VOICE.match(voice)
    if m is None:
        return None
    folder = f"{m['lang']}/{m['lang']}_{m['region']}/{m['speaker']}/{m['quality']}"
    files = tuple(ModelFile(f"{folder}/{voice}{ext}", f"{PIPER_DIR}/{voice}{ext}") for ext in (".onnx", ".onnx.json"))
    return ModelSpec(
        name=f"piper-{voice}", kind="tts", repo_id=PIPER_REPO, revision=PIPER_REVISION, files=files,
        target=f"{PIPER_DIR}/{voice}.onnx", size_bytes=None if size_mb is None else int(size_mb * _MB),
        config_key="tts.voice", config_value=voice, engine=("tts.engine", "piper"), default=default,
        description=f"Piper voice {voice} (ONNX + JSON config)",
    )


def kokoro(voice: str = KOKORO_DEFAULT_VOICE) -> ModelSpec | None:
    """Kokoro-82M weights plus one voice (``af_heart``, ``am_adam``, ...); None for a bad voice name."""
    if _KOKORO_VOICE.match(voice) is None:
        return None
    files = (
        ModelFile("config.json", f"{KOKORO_DIR}/config.json"),
        ModelFile("kokoro-v1_0.pth", f"{KOKORO_DIR}/kokoro-v1_0.pth"),
        ModelFile(f"voices/{voice}.pt", f"{KOKORO_DIR}/voices/{voice}.pt"),
    )
    suffix = "" if voice == KOKORO_DEFAULT_VOICE else f"-{voice}"
    return ModelSpec(
        name=f"kokoro-82m{suffix}", kind="tts", repo_id=KOKORO_REPO, revision="main", files=files,
        target=KOKORO_DIR, size_bytes=int(328 * _MB), config_key="tts.voice", config_value=voice,
        engine=("tts.engine", "kokoro"), optional=True,
        description=f"Kokoro-82M (PyTorch weights) with voice {voice}; optional, needs the kokoro package",
    )


def _must(spec: ModelSpec | None) -> ModelSpec:
    assert spec is not None
    return spec


RECOMMENDED: tuple[ModelSpec, ...] = (
    _single_file(
        "qwen2.5-1.5b-instruct", "bartowski/Qwen2.5-1.5B-Instruct-GGUF", "192167f67eb1bcdd83490223333ce1f168bd917c",
        "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf", 986, default=True,
        description="Qwen2.5 1.5B Instruct, Q4_K_M GGUF: the default chat model",
    ),
    _single_file(
        "qwen2.5-0.5b-instruct", "bartowski/Qwen2.5-0.5B-Instruct-GGUF", "main",
        "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", 398, default=False,
        description="Qwen2.5 0.5B Instruct, Q4_K_M GGUF: faster, weaker replies",
    ),
    _whisper("tiny.en", "main", 76),
    _whisper("base.en", "3d3d5dee26484f91867d81cb899cfcf72b96be6c", 148, default=True),
    _whisper("small.en", "main", 486),
    _must(piper_voice(PIPER_EXAMPLE, 63.2, default=True)),
    _must(kokoro()),
)


def lookup(name: str) -> ModelSpec | None:
    """A registry entry by name; ``piper-<voice>`` and ``kokoro-82m-<voice>`` work for any voice."""
    for spec in RECOMMENDED:
        if spec.name == name:
            return spec
    if name.startswith("piper-"):
        return piper_voice(name.removeprefix("piper-"))
    if name.startswith("kokoro-82m-"):
        return kokoro(name.removeprefix("kokoro-82m-"))
    return None


def piper_for(voice: str) -> ModelSpec | None:
    """The entry for a Piper voice name: the listed one (with its size) or one made from the name."""
    return lookup(f"piper-{voice}")


def kokoro_for(voice: str) -> ModelSpec | None:
    return lookup("kokoro-82m" if voice == KOKORO_DEFAULT_VOICE else f"kokoro-82m-{voice}")


def whisper_for(value: str) -> ModelSpec | None:
    """The Whisper entry that an ``stt.model`` value names (``base.en``, ``whisper-base.en``)."""
    for spec in RECOMMENDED:
        if spec.kind == "stt" and value in (spec.config_value, spec.name):
            return spec
    return None


def whisper_names() -> list[str]:
    return [spec.config_value for spec in RECOMMENDED if spec.kind == "stt"]


def by_target(kind: Kind, target: str) -> ModelSpec | None:
    """The registry entry whose local target (relative to models/) is ``target``."""
    for spec in RECOMMENDED:
        if spec.kind == kind and spec.target == target:
            return spec
    return None


def format_size(size_bytes: int | None) -> str:
    """Approximate human size: '986 MB', '1.2 GB', '?' when unknown."""
    if size_bytes is None:
        return "?"
    if size_bytes >= 1_000_000_000:
        return f"{size_bytes / 1e9:.1f} GB"
    if size_bytes >= _MB:
        return f"{size_bytes / _MB:.0f} MB"
    return f"{max(1, round(size_bytes / 1000))} kB"
