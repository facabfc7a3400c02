"""Scripted engines over the real RealtimeSTT recognizer, for pipeline and session tests."""

from __future__ import annotations

from support.helpers import SENTENCES, speech
from voicechat.engines.protocols import Engines, RecognizerCallbacks
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.stt import ScriptedTranscriber
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer
from voicechat.stt.scheduler import SttScheduler


def scripted_engines(
    llm: ScriptedLLM | None = None, tts: ScriptedTTS | None = None, transcriber: ScriptedTranscriber | None = None,
    partials: bool = True,
) -> Engines:
    """Scripted models behind the real RealtimeSTT recognizer (real VAD/endpointing)."""
    stt = SttScheduler(transcriber or ScriptedTranscriber({t: speech(t) for t in SENTENCES}))

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> RealtimeSTTRecognizer:
        return RealtimeSTTRecognizer(session_id, stt, callbacks, partials=partials, post_speech_silence_s=0.5)

    return Engines(stt, recognizer, llm or ScriptedLLM(), tts or ScriptedTTS(sample_rate=16000))
