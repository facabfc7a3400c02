"""Shared fixtures: scripted engines over real RealtimeSTT endpointing."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from helpers import SENTENCES, speech

from voicechat.engines.base import Engines, RecognizerCallbacks
from voicechat.engines.realtimestt_recognizer import RealtimeSTTRecognizer
from voicechat.engines.scripted_llm import ScriptedLLM
from voicechat.engines.scripted_stt import ScriptedTranscriber
from voicechat.engines.scripted_tts import ScriptedTTS
from voicechat.engines.stt_scheduler import SttScheduler
from voicechat.pipeline import PipelineOptions
from voicechat.session_manager import SessionLimits, SessionManager


def scripted_engines(
    llm: ScriptedLLM | None = None, tts: ScriptedTTS | None = None, transcriber: ScriptedTranscriber | None = None,
    partials: bool = True,
) -> Engines:
    """Scripted models behind the real RealtimeSTT recognizer (real VAD/endpointing)."""
    stt = SttScheduler(transcriber or ScriptedTranscriber({t: speech(t) for t in SENTENCES}))

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> RealtimeSTTRecognizer:
        return RealtimeSTTRecognizer(session_id, stt, callbacks, partials=partials, post_speech_silence_s=0.5)

    return Engines(stt, recognizer, llm or ScriptedLLM(), tts or ScriptedTTS(sample_rate=16000))


@pytest.fixture
def make_manager() -> Iterator:
    """Build SessionManagers that are shut down (and hung engines released) after the test."""
    managers: list[SessionManager] = []

    def make(engines: Engines | None = None, limits: SessionLimits | None = None, **options) -> SessionManager:
        engines = engines or scripted_engines()
        limits = limits or SessionLimits()
        m = SessionManager(engines, limits, PipelineOptions(join_timeout_s=limits.join_timeout_s, **options))
        m.start()
        managers.append(m)
        return m

    yield make
    for m in managers:
        for engine in (m.engines.llm, m.engines.tts, m.engines.transcriber.model):
            faults = getattr(engine, "faults", None)
            if faults is not None:
                faults.release()
        m.shutdown()
        m.engines.close()


@pytest.fixture
def thread_baseline() -> int:
    return threading.active_count()
