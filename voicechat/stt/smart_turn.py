"""Smart Turn v3.2: the probability that a speaker has finished their turn, from the sound alone.

The ONNX model (8.7 MB, BSD-2-Clause, shipped in the ``pipecat-ai`` wheel; the starter model
set puts it at ``models/smart-turn/smart-turn-v3.2-cpu.onnx``) takes ``input_features``
[B, 80, 800] float32 and returns ``logits`` [B, 1], already a sigmoid probability despite the
name. Its features are Whisper's: an 80-bin Slaney log-mel spectrogram (400-point periodic Hann
window, hop 160, 16 kHz) of exactly 8 s of audio, the utterance's last 8 s, zero-padded at the
*start* when shorter, the waveform normalized to zero mean and unit variance before the
spectrogram (the padding included), the log floored at 8 below its maximum and scaled by
``(x + 4) / 4``. They are computed here with numpy (``log_mel``); a scratch comparison with
pipecat 1.14.0's own feature code differed by at most ~1e-6.

The rows of a batch are independent: one call over several sessions' audio gives each the
probability it gets alone (tests check it). About 45-70 ms per row on one thread here.
Not thread-safe: ``predict`` belongs to one thread (``TurnJudge``'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from voicechat.engines.protocols import EngineError

SAMPLE_RATE = 16000
WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // HOP  # 800: the centred STFT gives 801 frames, the last is dropped
FIX_COMMAND = "python3 run.py models download --set starter"


class SmartTurnUnavailable(EngineError):
    """The Smart Turn model file is missing or cannot be loaded; the message names the file and the fix."""


def default_model_path(root: Path | None = None) -> Path:
    """Where the model manager puts Smart Turn v3.2 (``models/`` under the project root)."""
    from voicechat.models import registry, store

    return (root or store.PROJECT_ROOT) / registry.MODELS_DIRNAME / registry.SMART_TURN_FILE


# --- features -----------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log, linear)


@cache
def mel_filters() -> np.ndarray:
    """[80, 201] triangular filters between 0 and 8 kHz, each scaled to unit area (Slaney norm)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    return triangles * (2.0 / (upper - lower))


@cache
def _hann() -> np.ndarray:
    n = np.arange(N_FFT, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic, as torch.hann_window


def fit_window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of ``audio`` (float32 16 kHz mono), zero-padded at the start when shorter."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if x.size < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.size, np.float32), x])
    return x


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Smart Turn's input features [80, 800] float32 for one utterance (float32 16 kHz mono, any length)."""
    x = fit_window(audio)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # in float32, like the reference
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    starts = np.arange(N_FRAMES) * HOP  # the 801st frame is dropped, so it is never computed
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]] * _hann()
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [800, 201]
    mel = np.log10(np.maximum(mel_filters() @ power.T, 1e-10))  # [80, 800]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


# --- model --------------------------------------------------------------------------------


class SmartTurnModel:
    """Smart Turn v3.2 over ONNX Runtime (1 intra-op thread by default)."""

    def __init__(self, model_path: Path | str | None = None, threads: int = 1) -> None:
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise SmartTurnUnavailable(
                f"Smart Turn model {path} is missing: download it with `{FIX_COMMAND}` "
                "(until then turns end after a fixed silence)"
            )
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            raise SmartTurnUnavailable(
                f"Smart Turn model {path} cannot be loaded ({exc}): download it again with `{FIX_COMMAND}`"
            ) from exc
        self.path = path
        self._input = self._session.get_inputs()[0].name  # "input_features"
        self.calls = 0
        self.rows = 0

    def predict(self, audios: Sequence[np.ndarray]) -> list[float]:
        """For each float32 16 kHz mono utterance (its last 8 s count), the probability in [0, 1]
        that the turn is finished; all rows in one ONNX call."""
        if not audios:
            return []
        features = np.stack([log_mel(a) for a in audios])
        (out,) = self._session.run(None, {self._input: features})[:1]
        self.calls += 1
        self.rows += len(audios)
        return [float(p) for p in np.asarray(out, dtype=np.float64).reshape(len(audios), -1)[:, 0]]
