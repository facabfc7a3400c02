"""Scripted text-to-speech: a tone per sentence, deterministic and abortable.

Each sentence becomes ``seconds_per_word`` of a sine tone whose pitch is
derived from the text, cut into ``chunk_ms`` chunks, with configurable delays
(time to first chunk, per chunk) and faults.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import numpy as np

from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.protocols import SpeechSynthesizer, VoiceSettings
from voicechat.engines.scripted.base import FaultPlan, PacedEngine, remember


def tone_for(text: str, start: int, count: int, sample_rate: int) -> np.ndarray:
    """``count`` PCM16 samples from sample ``start`` of a tone whose frequency (200-800 Hz) is a stable
    function of ``text``; consecutive pieces join without a click, so a sentence is made one chunk at a time."""
    h = int(hashlib.sha1(text.encode()).hexdigest()[:6], 16)
    freq = 200 + h % 600
    t = np.arange(start, start + count) / sample_rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


class ScriptedTTS(PacedEngine, SpeechSynthesizer):
    what = "tts"
    label = "speech synthesizer"

    def __init__(
        self,
        sample_rate: int = 16000,
        first_chunk_s: float = 0.0,
        chunk_s: float = 0.0,
        seconds_per_word: float = 0.05,
        chunk_ms: int = 40,
        faults: FaultPlan | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(first_chunk_s, chunk_s, faults, breaker)
        self.sample_rate = sample_rate
        self.seconds_per_word = seconds_per_word
        self.chunk_samples = max(1, sample_rate * chunk_ms // 1000)
        self._lock = threading.Lock()
        self.texts: dict[str, list[str]] = {}

    def synthesize(
        self, session_id: str, text: str, voice: VoiceSettings, *, first_in_reply: bool = False
    ) -> Iterator[bytes]:
        with self._lock:
            remember(self.texts, session_id, text)

        def chunks() -> Iterator[bytes]:
            seconds = self.seconds_per_word * max(1, len(text.split())) / voice.speed
            total = int(seconds * self.sample_rate)
            for start in range(0, total, self.chunk_samples):
                yield tone_for(text, start, min(self.chunk_samples, total - start), self.sample_rate).tobytes()

        return self._paced(session_id, chunks)
