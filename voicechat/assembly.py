"""Builds the process's shared parts from Settings: engines, limits, pipeline options.

This is the one place that knows both the configuration schema and the
constructors, so the pipeline and session manager stay free of config types.
"""

from __future__ import annotations

from voicechat.config import ConfigError, Settings
from voicechat.engines.base import Engines, GenerationParams, Recognizer, RecognizerCallbacks, VoiceSettings
from voicechat.pipeline import PipelineOptions
from voicechat.session_manager import SessionLimits

# Overrides that select the scripted engines (`run.py --scripted`, `bench sessions`).
SCRIPTED_ENGINES = {"stt.engine": "scripted", "llm.backend": "scripted", "tts.engine": "scripted"}


def build_engines(settings: Settings) -> Engines:
    """The engines named in ``settings`` (loaded once, shared by every session)."""
    stt, llm, tts = settings.stt, settings.llm, settings.tts
    unavailable = [
        (key, value)
        for key, value, ready in (
            ("stt.engine", stt.engine, stt.engine == "scripted"),
            ("llm.backend", llm.backend, llm.backend == "scripted"),
            ("tts.engine", tts.engine, tts.engine == "scripted"),
        )
        if not ready
    ]
    if unavailable:
        key, value = unavailable[0]
        raise ConfigError(
            f"{key} = {value!r} is not available in this build yet (only 'scripted' engines are wired in); "
            "run with --scripted, or set stt.engine, llm.backend and tts.engine to 'scripted'",
            key=key, value=value,
        )

    from voicechat.engines.realtimestt_recognizer import RealtimeSTTRecognizer
    from voicechat.engines.scripted_llm import ScriptedLLM
    from voicechat.engines.scripted_stt import ScriptedTranscriber
    from voicechat.engines.scripted_tts import ScriptedTTS
    from voicechat.engines.stt_scheduler import SttScheduler

    transcriber = SttScheduler(ScriptedTranscriber(delay_s=stt.scripted_delay_s))
    vad = settings.vad

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> Recognizer:
        return RealtimeSTTRecognizer(
            session_id, transcriber, callbacks,
            language=stt.language, partials=stt.partials,
            silero_sensitivity=vad.silero_sensitivity, webrtc_sensitivity=vad.webrtc_sensitivity,
            post_speech_silence_s=vad.post_speech_silence_s, min_utterance_s=vad.min_utterance_s,
            pre_roll_s=vad.pre_roll_s, log_level=settings.logging.realtimestt_level,
        )

    return Engines(
        transcriber=transcriber,
        recognizer_factory=recognizer,
        llm=ScriptedLLM(first_token_s=llm.scripted_first_token_s, token_s=llm.scripted_token_s),
        tts=ScriptedTTS(first_chunk_s=tts.scripted_first_chunk_s, chunk_s=tts.scripted_chunk_s),
    )


def session_limits(settings: Settings) -> SessionLimits:
    s = settings.sessions
    return SessionLimits(s.max_sessions, s.idle_timeout_s, s.resume_grace_s, s.join_timeout_s)


def pipeline_options(settings: Settings, **overrides: object) -> PipelineOptions:
    audio, llm, limits = settings.audio, settings.llm, settings.limits
    frames = max(1, int(audio.capture_queue_s * 1000 / audio.frame_ms))
    options = dict(
        system_prompt=llm.system_prompt,
        history_max_tokens=llm.history_max_tokens,
        generation=GenerationParams(llm.temperature, llm.top_p, llm.max_tokens),
        voice=VoiceSettings(settings.tts.voice, settings.tts.speed),
        output_sample_rate=audio.output_sample_rate,
        capture_queue_frames=frames,
        sentence_queue_size=limits.sentence_queue_size,
        event_queue_size=limits.event_queue_size,
        barge_in=settings.vad.barge_in,
        join_timeout_s=settings.sessions.join_timeout_s,
    )
    options.update(overrides)
    return PipelineOptions(**options)  # type: ignore[arg-type]
