"""Where model files live, what the config needs, and the startup check.

Relative paths in the config (``llm.model = "models/x.gguf"``) are relative to the project
root (the directory holding run.py), not to the current directory, so the same config.toml
works from anywhere. ``models/.manifest.json`` records each downloaded file's size and
sha256: the startup check compares sizes (cheap), ``models verify`` recomputes hashes.

Engine builders call ``resolve_stt_model`` / ``resolve_llm_model`` / ``resolve_piper_voice``
/ ``resolve_kokoro``; ``run`` calls ``require_models`` once and exits with
``MissingModelError.exit_code`` (2) on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.models import checks as checks
from voicechat.models import registry as registry
from voicechat.models.registry import ModelSpec

if TYPE_CHECKING:
    from voicechat.config.loading import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where run.py is (this file: voicechat/models/store.py)
MANIFEST_NAME = ".manifest.json"
LOCKS_DIRNAME = ".locks"  # file locks of the manifest and of running downloads
DOWNLOAD_COMMAND = "python run.py models download"


def models_dir(root: Path) -> Path:
    return root / registry.MODELS_DIRNAME


# --- manifest -------------------------------------------------------------------------


class Manifest:
    """``models/.manifest.json``: local path (relative to models/, posix) -> recorded facts."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / MANIFEST_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.entries = dict(json.loads(self.path.read_text(encoding="utf-8")).get("files", {}))
            except (ValueError, AttributeError):
                self.entries = {}  # an unreadable manifest only means nothing is recorded

    def get(self, local_path: str) -> dict[str, Any] | None:
        return self.entries.get(local_path)

    def expected_size(self, local_path: str) -> int | None:
        entry = self.get(local_path)
        return None if entry is None else int(entry["size"])

    def save(self) -> None:
        """Write atomically, so an interrupted write never leaves half a manifest."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "files": self.entries}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def update_manifest(directory: Path, local_path: str, entry: dict[str, Any] | None) -> None:
    """Read-modify-write one entry under a file lock (two downloads may finish at once)."""
    from filelock import FileLock

    locks = directory / LOCKS_DIRNAME
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / "manifest.lock")):
        manifest = Manifest(directory)
        if entry is None:
            manifest.entries.pop(local_path, None)
        else:
            manifest.entries[local_path] = entry
        manifest.save()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- problems -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProblem:
    """One missing or unusable model file, phrased so the user can fix it."""

    key: str  # config key that points at the file, e.g. "llm.model"
    value: str  # that key's value
    path: str  # the file or directory, as shown to the user
    reason: str  # "is missing", "is truncated (...)"
    fix: str  # the command or setting change that fixes it

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.path} {self.reason}; {self.fix}"


class MissingModelError(Exception):
    """Startup found model problems; the process should print the message and exit 2."""

    exit_code = 2

    def __init__(self, problems: list[ModelProblem]) -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"voicechat: {len(self.problems)} model {noun}:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def download_fix(spec: ModelSpec, *, also_set: bool = False) -> str:
    fix = f"download it with: {DOWNLOAD_COMMAND} {spec.name}"
    return f"{fix} (and set {spec.settings_hint()})" if also_set else fix


def shown_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it, as messages show it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _config_path(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _manifest_key(path: Path, root: Path) -> str | None:
    """``path`` relative to models/ (the manifest's key), or None when it lies elsewhere.

    Symbolic links inside models/ (models shared between checkouts) keep their place: the
    path is compared as written before it is compared with links resolved.
    """
    directory = models_dir(root)
    for inside, top in ((Path(os.path.abspath(path)), Path(os.path.abspath(directory))),
                        (path.resolve(), directory.resolve())):
        try:
            return inside.relative_to(top).as_posix()
        except ValueError:
            continue
    return None


def _spec_for_path(kind: registry.Kind, path: Path, root: Path) -> ModelSpec | None:
    rel = _manifest_key(path, root)
    return None if rel is None else registry.by_target(kind, rel)


def _zip_reason(path: Path) -> str | None:
    return checks.magic_reason(path, checks.ZIP_MAGIC, "PyTorch (zip)")


@dataclass(frozen=True)
class _Located:
    """What a setting resolves to: its files (empty when unresolvable) and their problems."""

    paths: tuple[Path, ...]
    problems: tuple[ModelProblem, ...]
    spec: ModelSpec | None


class _Problems:
    """Collects problems for one setting, all with the same key, value and fix."""

    def __init__(self, key: str, value: str, root: Path, fix: str) -> None:
        self.key, self.value, self.root, self.fix = key, value, root, fix
        self.items: list[ModelProblem] = []

    def add(self, path: Path | str, reason: str) -> None:
        shown = path if isinstance(path, str) else shown_path(path, self.root)
        self.items.append(ModelProblem(self.key, self.value, shown, reason, self.fix))

    def file(self, path: Path, manifest: Manifest, root: Path, *extra: Callable[[Path], str | None]) -> None:
        """Readable, the recorded size, then the format checks, stopping at the first reason."""
        reason = checks.readable_reason(path)
        if reason is None:
            rel = _manifest_key(path, root)
            reason = checks.size_reason(path, manifest.expected_size(rel) if rel else None)
        for check in extra:
            if reason is None:
                reason = check(path)
        if reason:
            self.add(path, reason)


# --- resolvers ------------------------------------------------------------------------


def _locate_stt(value: str, root: Path, manifest: Manifest) -> _Located:
    spec = registry.whisper_for(value)
    looks_like_path = any(sep in value for sep in ("/", "\\")) or value.startswith((".", "~"))
    if spec is None and not looks_like_path and not _config_path(value, root).exists():
        known = ", ".join(registry.whisper_names())
        fix = f"use a known name ({known}) or a CTranslate2 model directory"
        out = _Problems("stt.model", value, root, fix)
        out.add(value, "is neither a model directory nor a known Whisper model name")
        return _Located((), tuple(out.items), None)
    directory = models_dir(root) / spec.target if spec else _config_path(value, root)
    spec = spec or _spec_for_path("stt", directory, root)
    fix = download_fix(spec) if spec else "point stt.model at a faster-whisper (CTranslate2) model directory"
    out = _Problems("stt.model", value, root, fix)
    for path, reason in checks.ct2_dir_reasons(directory):
        out.add(path, reason)
    model_bin = directory / "model.bin"
    if not out.items:
        out.file(model_bin, manifest, root)
    return _Located((directory,), tuple(out.items), spec)


def _locate_llm(value: str, root: Path, manifest: Manifest) -> _Located:
    path = _config_path(value, root)
    spec = _spec_for_path("llm", path, root)
    if spec:
        fix = download_fix(spec)
    else:
        default = next(s for s in registry.RECOMMENDED if s.kind == "llm" and s.default)
        fix = f"point llm.model at a GGUF file, or {download_fix(default, also_set=True)}"
    out = _Problems("llm.model", value, root, fix)
    out.file(path, manifest, root, checks.gguf_reason)
    return _Located((path,), tuple(out.items), spec)


def _locate_piper(value: str, voice_dir: str, root: Path, manifest: Manifest) -> _Located:
    """As the Piper engine reads it: an ``.onnx`` path, or NAME -> ``<tts.piper_voice_dir>/NAME.onnx``."""
    by_path = value.endswith(".onnx") or len(Path(value).parts) > 1
    onnx = _config_path(value, root) if by_path else _config_path(voice_dir, root) / f"{value}.onnx"
    in_models = _manifest_key(onnx.parent, root) == registry.PIPER_DIR
    spec = registry.piper_for(onnx.name.removesuffix(".onnx")) if in_models else None
    default = registry.piper_for(registry.PIPER_EXAMPLE)
    assert default is not None
    if spec:
        fix = download_fix(spec)
    elif by_path:
        fix = "put the voice's .onnx and .onnx.json files there"
    else:
        fix = (f"put {value}.onnx and {value}.onnx.json in {voice_dir}, or set tts.voice = "
               f"{registry.PIPER_EXAMPLE!r} (tts.piper_voice_dir = 'models/{registry.PIPER_DIR}') and "
               f"{download_fix(default)}")
    out = _Problems("tts.voice", value, root, fix)
    config = onnx.with_name(onnx.name + ".json")
    out.file(onnx, manifest, root)
    out.file(config, manifest, root, checks.json_reason)
    return _Located((onnx, config), tuple(out.items), spec)


def _locate_kokoro(value: str, kokoro_dir: str, root: Path, manifest: Manifest) -> _Located:
    """``<tts.kokoro_dir>``'s config.json and weights, and ``voices/<tts.voice>.pt``."""
    directory = _config_path(kokoro_dir, root)
    paths = (directory / "config.json", directory / "kokoro-v1_0.pth", directory / "voices" / f"{value}.pt")
    known = registry.kokoro_for(value)
    spec = known if _manifest_key(directory, root) == registry.KOKORO_DIR else None
    if spec:
        fix = download_fix(spec)
    else:
        fix = f"put Kokoro-82M's config.json, kokoro-v1_0.pth and voices/{value}.pt in {kokoro_dir}"
        if known:
            fix += f" (or set tts.kokoro_dir = 'models/{registry.KOKORO_DIR}' and {download_fix(known)})"
    out = _Problems("tts.voice", value, root, fix)
    for path in paths:
        out.file(path, manifest, root, checks.json_reason if path.suffix == ".json" else _zip_reason)
    return _Located(paths, tuple(out.items), spec)


def _needed(settings: Settings, root: Path, manifest: Manifest) -> list[_Located]:
    """The model settings the current engines use, each resolved."""
    found = []
    if settings.stt.engine == "faster_whisper":
        found.append(_locate_stt(settings.stt.model, root, manifest))
    if settings.llm.backend == "llama_cpp":
        found.append(_locate_llm(settings.llm.model, root, manifest))
    if settings.tts.engine == "piper":
        found.append(_locate_piper(settings.tts.voice, settings.tts.piper_voice_dir, root, manifest))
    elif settings.tts.engine == "kokoro":
        found.append(_locate_kokoro(settings.tts.voice, settings.tts.kokoro_dir, root, manifest))
    return found


def check_models(settings: Settings, root: Path = PROJECT_ROOT) -> list[ModelProblem]:
    """Every missing or unusable model file the configured engines need (empty = all good)."""
    manifest = Manifest(models_dir(root))
    return [p for located in _needed(settings, root, manifest) for p in located.problems]


def require_models(settings: Settings, root: Path = PROJECT_ROOT) -> None:
    """Raise MissingModelError (one problem per line) unless every needed model is usable."""
    problems = check_models(settings, root)
    if problems:
        raise MissingModelError(problems)


def unfetchable_problems(settings: Settings, root: Path = PROJECT_ROOT) -> list[ModelProblem]:
    """Problems of settings that point at no registry entry: no download can fix them."""
    manifest = Manifest(models_dir(root))
    return [p for located in _needed(settings, root, manifest) if located.spec is None for p in located.problems]


def needed_specs(settings: Settings, root: Path = PROJECT_ROOT) -> list[ModelSpec]:
    """Registry entries the current config points at (what `models download` fetches by default)."""
    manifest = Manifest(models_dir(root))
    return [located.spec for located in _needed(settings, root, manifest) if located.spec is not None]


def _resolve(located: _Located) -> tuple[Path, ...]:
    if located.problems:
        raise MissingModelError(list(located.problems))
    return located.paths


def resolve_stt_model(settings: Settings, root: Path = PROJECT_ROOT) -> str:
    """The local CTranslate2 directory for ``stt.model`` (a name like base.en or a path)."""
    (directory,) = _resolve(_locate_stt(settings.stt.model, root, Manifest(models_dir(root))))
    return str(directory)


def resolve_llm_model(settings: Settings, root: Path = PROJECT_ROOT) -> str:
    """The GGUF file ``llm.model`` names."""
    (path,) = _resolve(_locate_llm(settings.llm.model, root, Manifest(models_dir(root))))
    return str(path)


def resolve_piper_voice(settings: Settings, root: Path = PROJECT_ROOT) -> tuple[str, str]:
    """(model .onnx, config .onnx.json) for ``tts.voice`` with the Piper engine."""
    tts = settings.tts
    onnx, config = _resolve(_locate_piper(tts.voice, tts.piper_voice_dir, root, Manifest(models_dir(root))))
    return str(onnx), str(config)


@dataclass(frozen=True)
class KokoroFiles:
    config: str
    model: str
    voice: str


def resolve_kokoro(settings: Settings, root: Path = PROJECT_ROOT) -> KokoroFiles:
    """Kokoro's config.json, weights and the voice file for ``tts.voice``."""
    tts = settings.tts
    config, model, voice = _resolve(_locate_kokoro(tts.voice, tts.kokoro_dir, root, Manifest(models_dir(root))))
    return KokoroFiles(str(config), str(model), str(voice))


def points_at(spec: ModelSpec, settings: Settings, root: Path = PROJECT_ROOT) -> bool:
    """Whether the current config selects ``spec`` (value and engine)."""
    if not spec.config_key:
        return False
    if spec.engine is not None:
        section, key = spec.engine[0].split(".")
        if getattr(getattr(settings, section), key) != spec.engine[1]:
            return False
    section, key = spec.config_key.split(".")
    value = str(getattr(getattr(settings, section), key))
    if value in (spec.config_value, *spec.aliases):
        return True
    if spec.kind in ("llm", "stt"):
        return _spec_for_path(spec.kind, _config_path(value, root), root) == spec
    return False
