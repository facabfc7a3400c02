"""Kokoro-82M text to speech (optional: needs the kokoro package, PyTorch and its weights).

Weights are read from ``tts.kokoro_dir`` (``models/kokoro-82m``: ``config.json``,
``kokoro-v1_0.pth``, ``voices/VOICE.pt``), the layout ``python run.py models
download kokoro-82m`` writes. RealtimeTTS 0.8's KokoroEngine is not used to run
the model, because it always resolves weights through the Hugging Face cache
(``KPipeline(repo_id=...)``), which fails offline with files in ``models/``; the
kokoro package's own ``KModel``/``KPipeline`` take local paths. Its
``get_lang_code_from_voice`` is reused for the voice-name convention.

Kokoro produces audio per text segment (a sentence here) at 24 kHz; it is cut
into ``chunk_ms`` chunks and a stop takes effect between chunks.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.tts.chunking import RunningStreams, StopFlag, StreamStop, chunk_bytes

KOKORO_REPO = "hexgrad/Kokoro-82M"
KOKORO_SAMPLE_RATE = 24000
DEFAULT_KOKORO_DIR = "models/kokoro-82m"
WEIGHT_FILES = ("config.json", "kokoro-v1_0.pth")
PACKAGES = ("kokoro", "torch")


def voice_file(model_dir: str | Path, voice: str) -> Path:
    return Path(model_dir) / "voices" / f"{voice}.pt"


def kokoro_missing(model_dir: str | Path, voice: str) -> list[str]:
    """What Kokoro still needs here: Python packages and weight files (empty = ready)."""
    missing = [f"the Python package {name!r}" for name in PACKAGES if importlib.util.find_spec(name) is None]
    files = [Path(model_dir) / name for name in WEIGHT_FILES] + [voice_file(model_dir, voice)]
    missing += [f"the file {path}" for path in files if not path.is_file()]
    return missing


def missing_message(model_dir: str | Path, voice: str, missing: list[str]) -> str:
    name = "kokoro-82m" if voice == "af_heart" else f"kokoro-82m-{voice}"
    return (
        f"tts.engine = 'kokoro' cannot start: missing {', '.join(missing)}. "
        "Install the package with `pip install 'voicechat[kokoro]'` (it needs PyTorch; install the CPU wheel first "
        "to avoid the large CUDA one), then download the weights and voice (tts.voice = "
        f"{voice!r}) into tts.kokoro_dir = {str(model_dir)!r} with `python run.py models download {name}`"
    )


class KokoroEngine:
    """One pool worker's Kokoro engine: PCM16 chunks at 24 kHz."""

    sample_rate = KOKORO_SAMPLE_RATE

    def __init__(
        self, voice: str = "af_heart", model_dir: str | Path = DEFAULT_KOKORO_DIR, speed: float = 1.0,
        chunk_ms: int = 20, device: str = "cpu", model: Any = None,
    ) -> None:
        missing = kokoro_missing(model_dir, voice)
        if missing:
            raise EngineError(missing_message(model_dir, voice, missing))
        from kokoro import KModel

        self.model_dir = Path(model_dir)
        self.voice = voice
        self.speed = speed
        self.chunk_bytes = chunk_bytes(KOKORO_SAMPLE_RATE, chunk_ms)
        # ``model`` lets a pool's engines share one KModel (read-only at inference).
        config, weights = (str(self.model_dir / name) for name in WEIGHT_FILES)
        self._model = model or KModel(repo_id=KOKORO_REPO, config=config, model=weights).to(device).eval()
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()  # KPipeline caches voices in a dict: one synthesis at a time per instance
        self._running = RunningStreams()

    @property
    def model(self) -> Any:
        """The loaded KModel, to pass as ``model=`` to a pool's other instances (one copy in memory)."""
        return self._model

    def _pipeline(self, lang: str) -> Any:
        from kokoro import KPipeline

        if lang not in self._pipelines:
            self._pipelines[lang] = KPipeline(lang_code=lang, repo_id=KOKORO_REPO, model=self._model)
        return self._pipelines[lang]

    def stream(self, text: str, voice: VoiceSettings | None = None, cancel: StopFlag | None = None) -> Iterator[bytes]:
        name = voice.voice if voice else self.voice
        speed = voice.speed if voice else self.speed
        path = voice_file(self.model_dir, name)
        if not path.is_file():
            raise EngineError(missing_message(self.model_dir, name, [f"the file {path}"]))
        if not text.strip():
            return iter(())
        return self._run(text, name, path, speed, cancel)

    def _run(self, text: str, name: str, path: Path, speed: float, cancel: StopFlag | None) -> Iterator[bytes]:
        from RealtimeTTS.engines.kokoro_engine import get_lang_code_from_voice

        def pieces(stop: StreamStop) -> Iterator[tuple[np.ndarray, int]]:
            with self._lock:
                for result in self._pipeline(get_lang_code_from_voice(name))(text, voice=str(path), speed=speed):
                    if stop.is_set():
                        return
                    if result.audio is not None:
                        yield result.audio.cpu().numpy(), KOKORO_SAMPLE_RATE

        return self._running.float_to_pcm16(pieces, KOKORO_SAMPLE_RATE, self.chunk_bytes, cancel)

    def stop(self) -> None:
        self._running.stop_all()

    def shutdown(self) -> None:
        self.stop()
