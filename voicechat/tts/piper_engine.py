"""Piper text to speech through the piper-tts Python API.

A voice is an ONNX file plus its ``.onnx.json`` under ``tts.piper_voice_dir``
(``models/piper/NAME.onnx``), or a path to the ``.onnx`` file. Loaded voices are
kept in a ``PiperVoices`` library that a pool's engine instances share:
onnxruntime sessions may run from several threads at once, and a voice costs
tens of MB, so K workers need not load it K times. Everything that is per job
(stop flags, resampler state) stays per stream.

piper-tts returns one float array per sentence; it is converted to PCM16, resampled
statefully to the engine's single output rate (voices differ: 16 kHz, 22.05 kHz...)
and cut into ``chunk_ms`` chunks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.tts.chunking import RunningStreams, StopFlag, StreamStop, chunk_bytes

if TYPE_CHECKING:
    from piper import PiperVoice

DEFAULT_VOICE_DIR = "models/piper"
EXAMPLE_VOICE = "en_US-lessac-medium"


def voice_files(voice: str, voice_dir: str | Path) -> tuple[Path, Path]:
    """(model, config) paths for a voice name or an ``.onnx`` path."""
    as_path = Path(voice).expanduser()
    model = as_path if voice.endswith(".onnx") or len(as_path.parts) > 1 else Path(voice_dir) / f"{voice}.onnx"
    return model, Path(f"{model}.json")


def missing_voice_message(voice: str, path: Path, voice_dir: str | Path) -> str:
    name = path.name.removesuffix(".json").removesuffix(".onnx")
    return (
        f"Piper voice file {path} not found (tts.voice = {voice!r}, tts.piper_voice_dir = {str(voice_dir)!r}). "
        f"Download it with `python run.py models download piper-{name}` "
        f"(Piper voice names look like {EXAMPLE_VOICE}; `python run.py models list` shows the recommended one)"
    )


class PiperVoices:
    """Piper voices loaded once per file, shared by engine instances; thread-safe."""

    def __init__(self, voice_dir: str | Path = DEFAULT_VOICE_DIR, use_cuda: bool = False) -> None:
        self.voice_dir = voice_dir
        self.use_cuda = use_cuda
        self._lock = threading.Lock()
        self._loaded: dict[Path, PiperVoice] = {}

    def get(self, voice: str) -> PiperVoice:
        """The loaded voice; EngineError naming the missing file and the download command."""
        model, config = voice_files(voice, self.voice_dir)
        key = model.resolve()
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = self._loaded[key] = self._load(voice, model, config)
            return loaded

    def _load(self, voice: str, model: Path, config: Path) -> PiperVoice:
        for path in (model, config):
            if not path.is_file():
                raise EngineError(missing_voice_message(voice, path, self.voice_dir))
        try:
            return _voice(model, config, self.use_cuda)
        except ImportError as exc:
            message = f"tts.engine = 'piper' needs the piper-tts package: pip install piper-tts ({exc})"
            raise EngineError(message) from exc
        except Exception as exc:  # corrupt ONNX or JSON: say which file, not a stack trace
            raise EngineError(
                f"Piper voice {model} could not be loaded ({type(exc).__name__}: {exc}); "
                f"download it again with `python run.py models download piper-{model.stem}`"
            ) from exc


def _voice(model: Path, config: Path, use_cuda: bool) -> PiperVoice:
    """The voice on an onnxruntime session whose idle threads sleep instead of spinning.

    A synthesis runs beside the language model's decoding (the reply's next sentences) on the
    same cores, and onnxruntime's worker threads spin between operators by default: measured
    here on 2 cores, a first piece took 81 ms alone and 152-182 ms beside one llama.cpp thread;
    without spinning 69-82 ms alone and 107-123 ms beside it (docs/benchmarks.md).
    """
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[str | tuple[str, dict[str, str]]] = (
        [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else ["CPUExecutionProvider"]
    )
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=providers)
    return PiperVoice(config=PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8"))), session=session)


class PiperEngine:
    """One pool worker's Piper engine: streams PCM16 chunks at one fixed ``sample_rate``."""

    def __init__(
        self, voice: str, voice_dir: str | Path = DEFAULT_VOICE_DIR, speed: float = 1.0, chunk_ms: int = 20,
        sample_rate: int | None = None, voices: PiperVoices | None = None, varied: bool = True,
    ) -> None:
        """``varied=False`` turns off the voice's random variation (VITS noise on sound and timing): the
        same text then always gives the same audio (tests that need reproducible speech)."""
        self.voices = voices or PiperVoices(voice_dir)
        self.voice = voice
        self.speed = speed
        self.varied = varied
        default = self.voices.get(voice)  # fail at startup, not at the first reply
        self.sample_rate: int = sample_rate or default.config.sample_rate
        self.chunk_bytes = chunk_bytes(self.sample_rate, chunk_ms)
        self._running = RunningStreams()

    def stream(self, text: str, voice: VoiceSettings | None = None, cancel: StopFlag | None = None) -> Iterator[bytes]:
        """Yield PCM16 chunks of ``text``; ends early once ``cancel`` is set or ``stop()`` is called."""
        piper_voice = self.voices.get(voice.voice if voice else self.voice)
        speed = voice.speed if voice else self.speed
        if speed <= 0:
            raise EngineError(f"tts.speed must be positive, not {speed}")
        if not text.strip():
            return iter(())
        return self._run(piper_voice, text, speed, cancel)

    def _run(self, piper_voice: PiperVoice, text: str, speed: float, cancel: StopFlag | None) -> Iterator[bytes]:
        from piper import SynthesisConfig

        def pieces(stop: StreamStop) -> Iterator[tuple[np.ndarray, int]]:
            syn = SynthesisConfig(length_scale=piper_voice.config.length_scale / speed)
            if not self.varied:
                syn.noise_scale = syn.noise_w_scale = 0.0
            for chunk in piper_voice.synthesize(text, syn_config=syn):
                if stop.is_set():
                    return
                yield chunk.audio_float_array, chunk.sample_rate

        return self._running.float_to_pcm16(pieces, self.sample_rate, self.chunk_bytes, cancel)

    def stop(self) -> None:
        """End this instance's running streams at their next chunk (an ONNX run is not interruptible)."""
        self._running.stop_all()

    def shutdown(self) -> None:
        self.stop()
