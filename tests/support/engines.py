"""Scripted engines over a real listening front end, for pipeline and session tests."""

from __future__ import annotations

import os

from support.helpers import SENTENCES, speech
from voicechat.engines.protocols import Engines, RecognizerCallbacks, RecognizerFactory
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.stt import ScriptedTranscriber
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.stt.batched_recognizer import BatchedRecognizerFactory
from voicechat.stt.listening import ListeningRules
from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer
from voicechat.stt.scheduler import SttScheduler

FRONTENDS = ("batched", "realtimestt")
# The front end the pipeline tests run on (VOICECHAT_TEST_FRONTEND=realtimestt runs them on the other one).
DEFAULT_FRONTEND = os.environ.get("VOICECHAT_TEST_FRONTEND", "batched")


def recognizer_factory(
    stt: SttScheduler, frontend: str = DEFAULT_FRONTEND, partials: bool = True, post_speech_silence_s: float = 0.5
) -> RecognizerFactory:
    """Real voice activity detection and endpointing on either front end."""
    if frontend == "batched":
        rules = ListeningRules(partials=partials, post_speech_silence_s=post_speech_silence_s)
        return BatchedRecognizerFactory(stt, rules=rules)

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> RealtimeSTTRecognizer:
        return RealtimeSTTRecognizer(
            session_id, stt, callbacks, partials=partials, post_speech_silence_s=post_speech_silence_s
        )

    return recognizer


def scripted_engines(
    llm: ScriptedLLM | None = None, tts: ScriptedTTS | None = None, transcriber: ScriptedTranscriber | None = None,
    partials: bool = True, frontend: str = DEFAULT_FRONTEND,
) -> Engines:
    """Scripted models behind a real recognizer (real VAD and endpointing)."""
    stt = SttScheduler(transcriber or ScriptedTranscriber({t: speech(t) for t in SENTENCES}))
    factory = recognizer_factory(stt, frontend, partials)
    return Engines(stt, factory, llm or ScriptedLLM(), tts or ScriptedTTS(sample_rate=16000))
