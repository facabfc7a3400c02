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

from voicechat.engines.base import SpeechSynthesizer, VoiceSettings
from voicechat.engines.faults import AbortRegistry, FaultPlan, wait_or_abort


def tone_for(text: str, seconds: float, sample_rate: int) -> np.ndarray:
    """PCM16 tone whose frequency (200-800 Hz) is a stable function of ``text``."""
    h = int(hashlib.sha1(text.encode()).hexdigest()[:6], 16)
    freq = 200 + h % 600
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


class ScriptedTTS(SpeechSynthesizer):
    def __init__(
        self,
        sample_rate: int = 16000,
        first_chunk_s: float = 0.0,
        chunk_s: float = 0.0,
        seconds_per_word: float = 0.05,
        chunk_ms: int = 40,
        faults: FaultPlan | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.first_chunk_s = first_chunk_s
        self.chunk_s = chunk_s
        self.seconds_per_word = seconds_per_word
        self.chunk_samples = max(1, sample_rate * chunk_ms // 1000)
        self.faults = faults or FaultPlan()
        self._lock = threading.Lock()
        self._aborts = AbortRegistry()
        self.texts: dict[str, list[str]] = {}

    def synthesize(self, session_id: str, text: str, voice: VoiceSettings) -> Iterator[bytes]:
        abort = self._aborts.begin(session_id)
        with self._lock:
            self.texts.setdefault(session_id, []).append(text)
        return self._run(session_id, text, voice, abort)

    def _run(self, session_id: str, text: str, voice: VoiceSettings, abort: threading.Event) -> Iterator[bytes]:
        try:
            self.faults.on_call("tts")
            seconds = self.seconds_per_word * max(1, len(text.split())) / voice.speed
            pcm = tone_for(text, seconds, self.sample_rate)
            if wait_or_abort(self.first_chunk_s, abort):
                return
            for i in range(0, len(pcm), self.chunk_samples):
                if i and wait_or_abort(self.chunk_s, abort):
                    return
                if abort.is_set():
                    return
                yield pcm[i : i + self.chunk_samples].tobytes()
        finally:
            self._aborts.end(session_id, abort)

    def abort(self, session_id: str) -> None:
        self._aborts.abort(session_id)

    @property
    def abort_calls(self) -> list[str]:
        return self._aborts.calls
