"""Audio helpers: frames, PCM conversion, stateful resampling and WAV reading.

Resampling chunk by chunk with a fresh filter each time clicks at every chunk
edge; ``StreamResampler`` keeps the filter state (soxr's ResampleStream) across
chunks of one stream, so a stream resampled in pieces equals one resampled whole.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Captured PCM16 mono audio as it arrives from a microphone or client."""

    pcm: bytes
    sample_rate: int
    seq: int = 0
    captured_at: float = field(default_factory=time.monotonic)


def pcm16_samples(pcm: bytes | np.ndarray) -> np.ndarray:
    """PCM16 bytes as int16 samples (a view, no copy); arrays pass through."""
    return np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, (bytes, bytearray, memoryview)) else pcm


def pcm16_to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    """float32 in [-1, 1); scaled in place (2**-15 is exact, so this equals dividing)."""
    out = pcm16_samples(pcm).astype(np.float32)
    out *= 1.0 / 32768.0
    return out


def frame_rms(samples: np.ndarray, frame: int) -> np.ndarray:
    """RMS of each whole ``frame``-sample frame, in the samples' own scale (a shorter tail is left out)."""
    n = len(samples) // frame
    x = np.asarray(samples[: n * frame], dtype=np.float32).reshape(n, frame)
    return np.sqrt(np.einsum("ij,ij->i", x, x) / frame)  # einsum: one pass, no squared copy (a hot path)


def as_float32(audio: np.ndarray) -> np.ndarray:
    """int16 samples scaled to [-1, 1]; float input converted to float32 without copying when it can."""
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return pcm16_to_float(a)
    return a.astype(np.float32, copy=False)


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def rms_dbfs(pcm: bytes) -> float:
    """Level of a PCM16 chunk in dBFS (-120 for silence), for level meters."""
    x = pcm16_to_float(pcm)
    if len(x) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(x * x)))
    return max(-120.0, 20.0 * np.log10(rms + 1e-12))


class StreamResampler:
    """Stateful PCM16 resampler for one continuous stream."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
            if in_rate != out_rate
            else None
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Resample the next chunk; ``last=True`` flushes the filter's tail."""
        if self._stream is None:
            return bytes(pcm)
        x = np.frombuffer(pcm, dtype=np.int16)
        return self._stream.resample_chunk(x, last=last).tobytes()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate of a PCM16 WAV file."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            x = x.reshape(-1, w.getnchannels()).mean(axis=1).astype(np.int16)
        return x, w.getframerate()
