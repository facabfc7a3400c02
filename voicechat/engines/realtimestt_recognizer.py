"""Per-session recognizer over RealtimeSTT's AudioToTextRecorder.

RealtimeSTT gives real voice activity detection (WebRTC + Silero) and
endpointing. Its transcription executors are injected, so the recorder loads
no model of its own: every session's audio goes to the one shared
``TranscriptionModel``. Facts this relies on (measured, see docs/design.md):

* ``feed_audio(bytes)`` is not resampled: bytes must be 16 kHz mono PCM16.
* Executors must return ``TranscriptionResult``; a plain str breaks its worker.
* Every recorder adds a StreamHandler to the ``realtimestt`` logger and sets
  it to DEBUG; we remove the handler and restore the level right away, or
  handlers leak one per session and debug records cost CPU.
* Never pass ``silero_use_onnx``: either value switches to torch.hub, which
  downloads at run time. The default backend uses the bundled ONNX file.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from RealtimeSTT import AudioToTextRecorder
from RealtimeSTT.transcription_engines.base import TranscriptionResult

from voicechat.engines.base import RecognizerCallbacks, TranscriptionModel

REALTIMESTT_LOGGER = "realtimestt"

# The realtimestt logger is process-wide, so creating recorders (which touch
# it) is serialised to know exactly which handler each one added.
_LOGGER_LOCK = threading.Lock()


class RealtimeSTTRecognizer:
    """One session's VAD/endpointer; transcription goes to the shared model."""

    def __init__(
        self,
        session_id: str,
        model: TranscriptionModel,
        callbacks: RecognizerCallbacks,
        *,
        language: str = "en",
        partials: bool = True,
        silero_sensitivity: float = 0.4,
        webrtc_sensitivity: int = 3,
        post_speech_silence_s: float = 0.6,
        min_utterance_s: float = 0.3,
        pre_roll_s: float = 1.0,
        log_level: str = "WARNING",
    ) -> None:
        self.session_id = session_id
        self._model = model
        self._closed = threading.Event()
        options: dict[str, Any] = dict(
            use_microphone=False,
            spinner=False,
            no_log_file=True,
            language=language,
            level=getattr(logging, log_level),
            transcription_executor=self._final_executor,
            realtime_transcription_executor=self._partial_executor,
            enable_realtime_transcription=partials,
            on_realtime_transcription_update=callbacks.on_partial,
            on_recording_start=callbacks.on_speech_start,
            on_recording_stop=callbacks.on_speech_end,
            silero_sensitivity=silero_sensitivity,
            webrtc_sensitivity=webrtc_sensitivity,
            post_speech_silence_duration=post_speech_silence_s,
            min_length_of_recording=min_utterance_s,
            min_gap_between_recordings=0.0,
            pre_recording_buffer_duration=pre_roll_s,
            ensure_sentence_starting_uppercase=False,
            ensure_sentence_ends_with_period=False,
        )
        self._recorder = _create_recorder(options, log_level)

    # -- executors called from RealtimeSTT's threads ---------------------------
    def _final_executor(self, audio: np.ndarray, language: str | None = None, **_: Any) -> TranscriptionResult:
        return self._run_model(audio, language, final=True)

    def _partial_executor(self, audio: np.ndarray, language: str | None = None, **_: Any) -> TranscriptionResult:
        return self._run_model(audio, language, final=False)

    def _run_model(self, audio: np.ndarray, language: str | None, final: bool) -> TranscriptionResult:
        text = self._model.transcribe(audio, session_id=self.session_id, final=final, language=language)
        return TranscriptionResult(text=text)

    # -- Recognizer protocol ---------------------------------------------------
    def feed(self, pcm16: bytes) -> None:
        if not self._closed.is_set():
            self._recorder.feed_audio(pcm16)

    def next_final(self) -> str | None:
        """Block in RealtimeSTT until an utterance ends and is transcribed."""
        if self._closed.is_set():
            return None
        text = self._recorder.text()
        if self._closed.is_set():
            return None
        return (text or "").strip()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._recorder.abort()
        self._recorder.shutdown()


def _create_recorder(options: dict[str, Any], log_level: str) -> AudioToTextRecorder:
    logger = logging.getLogger(REALTIMESTT_LOGGER)
    with _LOGGER_LOCK:
        before = set(logger.handlers)
        try:
            return AudioToTextRecorder(**options)
        finally:
            for handler in [h for h in logger.handlers if h not in before]:
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(getattr(logging, log_level))


def realtimestt_handler_count() -> int:
    """Handlers on RealtimeSTT's logger (a leak check in tests and /health)."""
    return len(logging.getLogger(REALTIMESTT_LOGGER).handlers)
