"""Builds the process's shared parts from Settings: engines, limits, pipeline options.

This is the one place that knows both the configuration schema and the
constructors, so the pipeline and session manager stay free of config types.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from voicechat.config.loading import Settings
from voicechat.config.schema import LlmSettings, SttSettings, TtsSettings
from voicechat.engines import thread_names
from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.first_audio import FirstAudio
from voicechat.engines.protocols import (
    BatchTranscriber,
    EngineError,
    Engines,
    GenerationParams,
    LanguageModel,
    SpeechSynthesizer,
    VoiceSettings,
)
from voicechat.listening_setup import recognizer_factory
from voicechat.memory.monitor import MemoryLimits
from voicechat.server.connection import ConnectionLimits
from voicechat.server.server import ServerConfig
from voicechat.session.conversation_store import ConversationStore
from voicechat.session.manager import SessionLimits
from voicechat.session.pipeline import PipelineOptions
from voicechat.session.store_api import ConversationBackend
from voicechat.stt.scheduler import SttScheduler

if TYPE_CHECKING:
    import numpy as np

    from voicechat.models.sets import ActiveModelSet

T = TypeVar("T")
log = logging.getLogger(__name__)

WARM_UP_S = 2  # seconds of audio the STT model decodes once at start (stall limits follow its pace)

# Overrides that select the scripted engines (`run.py --scripted`, `bench sessions`).
SCRIPTED_ENGINES = {"stt.engine": "scripted", "llm.backend": "scripted", "tts.engine": "scripted"}


def build_engines(settings: Settings) -> Engines:
    """The engines named in ``settings``, each loaded once and shared by every session.

    Model files are checked first (``require_models``), so a missing one stops
    start-up with one line per problem instead of a traceback from deep inside an
    engine. Engines built before a later one fails are closed again.
    """
    from voicechat.models.store import require_models

    require_models(settings)
    loads: dict[str, float] = {}
    built: list[object] = []
    try:
        transcriber = _timed(loads, "stt", lambda: _build_stt(settings), built)
        first_audio = _first_audio(settings)
        llm = _timed(loads, "llm", lambda: _build_llm(settings, first_audio), built)
        tts = _timed(loads, "tts", lambda: _build_tts(settings, first_audio), built)
    except BaseException:
        for engine in reversed(built):
            close = getattr(engine, "close", None)
            if callable(close):
                close()
        raise
    return Engines(
        transcriber=transcriber,
        recognizer_factory=recognizer_factory(settings, transcriber),
        llm=llm,
        tts=tts,
        extra={"load_s": loads},
    )


def _timed(loads: dict[str, float], name: str, build: Callable[[], T], built: list[object]) -> T:
    """Build one engine, timed, under the OS thread name ``vc-NAME`` (its worker threads inherit it)."""
    started = time.monotonic()
    with thread_names.named_while(f"vc-{name}"):
        engine = build()
    loads[name] = time.monotonic() - started
    built.append(engine)
    return engine


def _build_stt(settings: Settings) -> SttScheduler:
    stt = settings.stt
    if stt.engine == "scripted":
        from voicechat.engines.scripted.stt import ScriptedTranscriber

        model: BatchTranscriber = ScriptedTranscriber(_sample_references(), delay_s=stt.scripted_delay_s)
    elif stt.engine in ("openai", "wyoming"):
        model = _remote_stt(stt)
    else:
        from voicechat.models.store import resolve_stt_model
        from voicechat.stt.whisper_model import FasterWhisperModel

        model = FasterWhisperModel(
            resolve_stt_model(settings), device=stt.device, compute_type=stt.compute_type,
            cpu_threads=stt.cpu_threads, decode_threads=stt.decode_threads, num_workers=stt.num_workers,
            beam_size=stt.beam_size, partial_beam_size=stt.partial_beam_size, window=stt.window,
        )
    scheduler = SttScheduler(
        model, workers=stt.num_workers, max_batch=stt.max_batch, call_timeout_s=stt.call_timeout_s,
        stall_after_s=stt.stall_after_s or None, breaker=_breaker("speech recogniser", stt),
        partial_max_load=stt.partial_max_load,
    )
    if stt.engine != "scripted":  # a real model: its first-call costs now, and its measured pace
        import numpy as np

        try:
            scheduler.warm_up(np.zeros(WARM_UP_S * 16000, np.float32), stt.language or None)
        except EngineError as exc:
            if stt.engine == "faster_whisper":
                raise
            # a server not up yet is no reason not to start: turns fail (stt_*) until it is, the breaker counts
            log.warning("speech recogniser at %s does not answer yet: %s", stt.endpoint, exc)
    return scheduler


def _remote_stt(stt: SttSettings) -> BatchTranscriber:
    """The remote speech-to-text client that ``stt.engine`` names (openai or wyoming)."""
    timeouts = dict(connect_timeout_s=stt.connect_timeout_s, read_timeout_s=stt.read_timeout_s,
                    concurrency=stt.remote_concurrency)
    if stt.engine == "openai":
        from voicechat.stt.openai_stt import OpenAITranscriber

        return OpenAITranscriber(stt.endpoint, model=stt.remote_model, api_key=stt.api_key, **timeouts)
    from voicechat.stt.wyoming_stt import WyomingTranscriber

    return WyomingTranscriber(stt.endpoint, model=stt.remote_model, **timeouts)


def _breaker(name: str, section: SttSettings | LlmSettings | TtsSettings) -> CircuitBreaker:
    """A shared engine's circuit breaker, from its section's breaker_* settings."""
    return CircuitBreaker(
        name, failure_threshold=section.breaker_failures, window_s=section.breaker_window_s,
        cooldown_s=section.breaker_cooldown_s,
    )


def _sample_references() -> dict[str, np.ndarray]:
    """The sample sentences' audio, so scripted STT recognises them (benchmarks, browser tests, demos)."""
    from voicechat.speech_samples import SAMPLE_SENTENCES, SpeechSynthesisUnavailable, speech_16k

    try:
        return {text: speech_16k(text) for text in SAMPLE_SENTENCES}
    except SpeechSynthesisUnavailable:
        return {}  # without espeak-ng every utterance gets a fingerprint instead


def _first_audio(settings: Settings) -> FirstAudio | None:
    """What lets the LLM make way for a reply's first audio: only where both compute on the same CPU."""
    llm, tts = settings.llm, settings.tts
    on_cpu = llm.backend == "llama_cpp" and llm.n_gpu_layers == 0 and tts.engine in ("piper", "kokoro", "espeak")
    return FirstAudio() if on_cpu and llm.yield_to_first_audio and llm.defer_ahead_s > 0 else None


def _build_llm(settings: Settings, first_audio: FirstAudio | None = None) -> LanguageModel:
    llm = settings.llm
    if llm.backend == "scripted":
        from voicechat.engines.scripted.llm import ScriptedLLM

        return ScriptedLLM(
            first_token_s=llm.scripted_first_token_s, token_s=llm.scripted_token_s,
            breaker=_breaker("language model", llm),
        )
    if llm.backend == "openai":
        from voicechat.llm.openai_engine import OpenAIChatEngine, RetryPolicy

        return OpenAIChatEngine(
            llm.endpoint, model=llm.model, api_key=llm.api_key,
            connect_timeout_s=llm.connect_timeout_s, read_timeout_s=llm.request_timeout_s,
            retry=RetryPolicy(
                retries=llm.retries, backoff_s=llm.retry_backoff_s, max_backoff_s=llm.retry_backoff_max_s
            ),
            breaker=_breaker("language model", llm),
        )
    from voicechat.llm.llama_engine import LlamaCppEngine
    from voicechat.models.store import resolve_llm_model

    return LlamaCppEngine(
        resolve_llm_model(settings), n_ctx=llm.n_ctx, n_seq_max=llm.n_seq_max, n_threads=llm.n_threads,
        n_gpu_layers=llm.n_gpu_layers, n_batch=llm.n_batch, prefill_chunk=llm.prefill_chunk,
        defer_ahead_s=llm.defer_ahead_s, probe_step=llm.probe_step, first_audio=first_audio,
        kv_unified=llm.kv_unified,
        chat_template=llm.chat_template,
        breaker=_breaker("language model", llm),
    )


def _build_tts(settings: Settings, first_audio: FirstAudio | None = None) -> SpeechSynthesizer:
    t = settings.tts
    if t.engine == "scripted":
        from voicechat.engines.scripted.tts import ScriptedTTS

        return ScriptedTTS(
            first_chunk_s=t.scripted_first_chunk_s, chunk_s=t.scripted_chunk_s,
            breaker=_breaker("speech synthesizer", t),
        )
    from voicechat.models.store import PROJECT_ROOT
    from voicechat.tts.pool import TTSPool

    if t.engine in ("openai", "wyoming"):
        return _build_remote_tts(settings)
    if t.engine == "espeak":
        from voicechat.tts.espeak_engine import EspeakEngine

        return TTSPool(
            lambda: EspeakEngine(t.voice, t.speed, chunk_ms=t.chunk_ms), workers=t.workers,
            breaker=_breaker("speech synthesizer", t), first_audio=first_audio,
        )
    if t.engine == "piper":
        from voicechat.tts.piper_engine import PiperEngine, PiperVoices

        voice_dir = PROJECT_ROOT / t.piper_voice_dir
        voices = PiperVoices(voice_dir)
        return TTSPool(
            lambda: PiperEngine(t.voice, voice_dir, t.speed, t.chunk_ms, voices=voices), workers=t.workers,
            breaker=_breaker("speech synthesizer", t), first_audio=first_audio,
        )
    from voicechat.tts.kokoro_engine import KokoroEngine

    kokoro_dir = PROJECT_ROOT / t.kokoro_dir
    first = KokoroEngine(t.voice, kokoro_dir, t.speed, t.chunk_ms)
    made = iter([first])  # the pool's first worker takes this one; the others share its model
    return TTSPool(
        lambda: next(made, None) or KokoroEngine(t.voice, kokoro_dir, t.speed, t.chunk_ms, model=first.model),
        workers=t.workers, breaker=_breaker("speech synthesizer", t), first_audio=first_audio,
    )


def _build_remote_tts(settings: Settings) -> SpeechSynthesizer:
    """A pool whose workers are concurrent requests to the remote server; it may be down at start (one
    warning: its breaker handles the calls)."""
    from voicechat.tts.pool import TTSPool
    from voicechat.tts.remote import RemoteSpeech, RemoteTtsEngine

    t = settings.tts
    client: RemoteSpeech
    if t.engine == "openai":
        from voicechat.tts.openai_tts import OpenAISpeechClient

        client = OpenAISpeechClient(
            t.endpoint, model=t.remote_model, response_format=t.remote_format, pcm_rate=t.remote_sample_rate,
            api_key=t.remote_api_key, connect_timeout_s=t.connect_timeout_s, read_timeout_s=t.read_timeout_s,
            max_connections=t.workers,
        )
    else:
        from voicechat.tts.wyoming_tts import WyomingSpeechClient

        client = WyomingSpeechClient(t.endpoint, connect_timeout_s=t.connect_timeout_s,
                                     read_timeout_s=t.read_timeout_s)
    client.reach.warn_if_down(f"the {t.engine} speech server (tts.endpoint)", client.endpoint)
    rate = settings.audio.output_sample_rate
    return TTSPool(
        lambda: RemoteTtsEngine(client, rate, t.chunk_ms, t.remote_voice, t.speed), workers=t.workers,
        breaker=_breaker("speech synthesizer", t), remote=client,
    )


def session_limits(settings: Settings) -> SessionLimits:
    s = settings.sessions
    return SessionLimits(s.max_sessions, s.idle_timeout_s, s.resume_grace_s, s.join_timeout_s)


def memory_limits(settings: Settings) -> MemoryLimits:
    m = settings.memory
    return MemoryLimits(m.soft_rss_mb, m.hard_rss_mb, m.soft_system_percent, m.hard_system_percent,
                        m.check_interval_s, m.pressure_history_tokens)


def conversation_store(settings: Settings) -> ConversationBackend | None:
    """Where conversations are saved (server.data_dir/conversations or Redis), or None when they are not."""
    from voicechat.server.access import default_data_dir

    s = settings.sessions
    if not s.persist:
        return None
    if s.store == "redis":
        from voicechat.session.redis_store import RedisConversationStore

        return RedisConversationStore(s.redis_url, retention_days=s.retention_days, timeout_s=s.redis_timeout_s)
    directory = default_data_dir(settings.server.data_dir) / "conversations"
    return ConversationStore(directory, fsync=s.fsync, retention_days=s.retention_days)


def pipeline_options(settings: Settings, **overrides: object) -> PipelineOptions:
    audio, llm, limits = settings.audio, settings.llm, settings.limits
    options = dict(
        system_prompt=llm.system_prompt,
        example_turns=tuple(llm.example_turns),
        history_max_tokens=llm.history_max_tokens,
        generation=GenerationParams(
            temperature=llm.temperature, top_p=llm.top_p, max_tokens=llm.max_tokens, top_k=llm.top_k,
            min_p=llm.min_p,
            seed=None if llm.seed < 0 else llm.seed, repeat_penalty=llm.repeat_penalty,
        ),
        max_spoken_sentences=llm.max_spoken_sentences,
        first_phrase_words=settings.tts.first_phrase_words,
        first_phrase_wait_s=settings.tts.first_phrase_wait_s,
        voice=VoiceSettings(settings.tts.voice, settings.tts.speed),
        output_sample_rate=audio.output_sample_rate,
        sentence_queue_size=limits.sentence_queue_size,
        event_queue_size=limits.event_queue_size,
        barge_in=settings.vad.barge_in,
        join_timeout_s=settings.sessions.join_timeout_s,
        llm_call_timeout_s=llm.call_timeout_s,
        tts_call_timeout_s=settings.tts.call_timeout_s,
        tts_max_ahead_s=settings.tts.max_ahead_s,
        prefill_while_speaking=llm.prefill_while_speaking and settings.stt.partials,
    )
    options.update(overrides)
    return PipelineOptions(**options)  # type: ignore[arg-type]


def server_config(settings: Settings, model_set: ActiveModelSet | None = None) -> ServerConfig:
    """The LAN server's settings, plus the model names (and the model set that runs, and why)
    that /health/detailed, the banner and the TUI header show."""
    server, limits = settings.server, settings.limits
    llm_model = settings.llm.model if settings.llm.backend != "scripted" else "scripted"
    return ServerConfig(
        host=server.host, port=server.port, tls=server.tls, cert_file=server.cert_file,
        key_file=server.key_file, token=server.token, data_dir=server.data_dir,
        allowed_origins=tuple(server.allowed_origins),
        trusted_proxies=tuple(server.trusted_proxies),
        limits=ConnectionLimits(
            max_messages_per_second=limits.max_messages_per_second, max_frame_bytes=limits.max_frame_bytes,
            max_text_chars=limits.max_text_chars, send_timeout_s=server.send_timeout_s,
        ),
        max_connections_per_address=server.max_connections_per_address,
        auth_delay_s=server.auth_delay_s, auth_delay_max_s=server.auth_delay_max_s,
        models={
            "stt": _stt_name(settings.stt),
            "llm": f"{settings.llm.backend}: {llm_model}",
            "tts": f"{settings.tts.engine}: {settings.tts.voice}",
            **({"set": model_set.summary()} if model_set is not None else {}),
        },
    )


def _stt_name(stt: SttSettings) -> str:
    """What /health/detailed, the banner and the TUI header call the STT model."""
    if stt.engine in ("openai", "wyoming"):
        return f"{stt.engine}: {stt.remote_model or 'default'} at {stt.endpoint}"
    return stt.model if stt.engine != "scripted" else "scripted"
