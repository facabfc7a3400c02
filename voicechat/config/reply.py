"""The settings of the reply's stages: the language model (LLM) and speech synthesis (TTS).

Part of the schema beside ``stages.py`` (the listening stages) and ``schema.py`` (the rest and the root
``Settings``); the same rules hold: unknown keys are errors, descriptions and bounds become config.toml's
comments and the "allowed" part of error messages.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from voicechat.config.stages import SECRET, _Section, remote_endpoint


class LlmSettings(_Section):
    """Language model (one model shared by all sessions)."""

    backend: Literal["llama_cpp", "openai", "scripted"] = Field(
        "llama_cpp",
        description="LLM backend: in-process llama.cpp, an OpenAI-compatible endpoint, or a test double",
    )
    model: str = Field(
        "models/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf",
        description="GGUF file for llama_cpp (relative paths start at the project root), or model name for openai",
    )
    n_ctx: int = Field(
        4096, ge=256, le=131072, description="Context size in tokens shared by all sequences"
    )
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1 = all")
    n_seq_max: int = Field(8, ge=1, le=64, description="Sessions decoded together in one batch")
    n_threads: int = Field(
        0, ge=0, description="CPU threads for llama.cpp; 0 = automatic (on up to 4 CPUs all but one, and all "
                             "for a short step while nothing else runs)")
    n_batch: int = Field(
        512, ge=64, le=8192, description="Most tokens decoded in one llama.cpp step (all sessions together)"
    )
    prefill_chunk: int = Field(
        256, ge=16, le=8192,
        description="Most prompt tokens prefilled per step, so a long prompt never stalls other sessions' replies",
    )
    prefill_while_speaking: bool = Field(
        True,
        description="While the user speaks and the model is idle, it reads the words the interim transcripts agree "
        "on, so the reply prefills only the rest when the turn ends (needs stt.partials)",
    )
    probe_step: bool = Field(
        True,
        description="A reply prepared before the turn ends, alone in the model, reads the end-of-message probe in "
        "a prefill step that ends at the user's last token, before the template's tail: the turn's end is decided "
        "one step sooner, the reply's first token comes one short step later",
    )
    defer_ahead_s: float = Field(
        1.5, ge=0, le=600,
        description="A reply whose written sentences are this many seconds of speech ahead of what its listener "
        "has heard sits out decoding steps while other sessions need the model (a reply starting, a prompt being "
        "read), so their first words come sooner; 0 = never",
    )
    yield_to_first_audio: bool = Field(
        True,
        description="llama.cpp on the CPU with a local TTS engine: replies defer_ahead_s or more ahead of their "
        "listener also sit out while any reply's first piece is being synthesized (they share the cores)",
    )
    kv_unified: bool = Field(
        True, description="One KV cache shared unevenly by all sessions (false: n_ctx split evenly per sequence)"
    )
    temperature: float = Field(
        0.7, ge=0, le=2, description="Sampling temperature; higher = more varied replies"
    )
    top_p: float = Field(0.95, ge=0, le=1, description="Nucleus sampling probability mass")
    top_k: int = Field(40, ge=0, description="Sample only among the k likeliest tokens; 0 = off")
    min_p: float = Field(
        0.05, ge=0, lt=1, description="Sample only among tokens at least this fraction as likely as the likeliest; "
        "0 = off. Small models drift into other languages and nonsense without it")
    seed: int = Field(-1, ge=-1, description="Sampling seed; -1 = random (a fixed seed makes replies reproducible)")
    max_tokens: int = Field(256, ge=1, le=8192, description="Longest reply in tokens")
    repeat_penalty: float = Field(
        1.1, ge=1, le=2,
        description="Penalty on tokens used in the last 64 (llama_cpp); 1 = off. Small models loop without it",
    )
    max_spoken_sentences: int = Field(
        4, ge=0, le=100,
        description="A reply ends after this many spoken sentences, or sooner when it repeats itself; 0 = no cap",
    )
    system_prompt: str = Field(
        "You are a friendly voice assistant. Your replies are spoken aloud: answer in one to three short "
        "sentences of plain conversational text, with no lists, markdown, emoji or links.",
        description="System prompt that opens every conversation",
    )
    example_turns: list[str] = Field(
        ["What is the capital of Italy?", "The capital of Italy is Rome."],
        description="An example exchange after the system prompt of every conversation, user and assistant in "
        "turn (never shown or saved): small models answer in its language and length; [] = none")
    chat_template: str = Field("", description="Jinja chat template override; empty = the model's own")
    endpoint: str = Field("", description="Base URL of the OpenAI-compatible server (backend openai)")
    api_key: str = Field(
        "", description="API key for the endpoint (backend openai)", json_schema_extra=SECRET
    )
    request_timeout_s: float = Field(
        30.0, gt=0,
        description="Longest wait in seconds for the endpoint's next data (first token included) before giving up",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Timeout in seconds for connecting to the endpoint"
    )
    retries: int = Field(
        3, ge=0, le=20, description="Retries of an endpoint request that failed before its first token"
    )
    retry_backoff_s: float = Field(
        0.5, gt=0, le=60, description="First retry delay in seconds; doubles per retry, with jitter"
    )
    retry_backoff_max_s: float = Field(8.0, gt=0, le=300, description="Longest retry delay in seconds")
    call_timeout_s: float = Field(
        30.0, gt=0, le=600,
        description="Longest wait in seconds for the model's next piece of a reply (any backend); a call that "
        "takes longer ends its turn with an error and counts as a failure of the engine",
    )
    breaker_failures: int = Field(
        5, ge=1, le=1000,
        description="Failed or timed-out calls (any backend) within breaker_window_s that open the circuit breaker",
    )
    breaker_window_s: float = Field(
        60.0, gt=0, le=86400, description="Window in seconds in which breaker_failures are counted"
    )
    breaker_cooldown_s: float = Field(
        15.0, ge=0, le=3600,
        description="Seconds an open circuit fails fast before one probe request is let through",
    )

    history_max_tokens: int = Field(
        2048, ge=64, le=131072, description="Conversation history kept per session, in tokens"
    )
    scripted_first_token_s: float = Field(
        0.0, ge=0, description="Scripted backend: delay before the first token in seconds"
    )
    scripted_token_s: float = Field(
        0.0, ge=0, description="Scripted backend: delay between tokens in seconds"
    )

    @field_validator("example_turns")
    @classmethod
    def _pairs(cls, turns: list[str]) -> list[str]:
        if len(turns) % 2 or not all(t.strip() for t in turns):
            raise ValueError("give user and assistant turns in pairs (an even number of non-empty strings)")
        return turns

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http_url(cls, value: str) -> str:
        if value and not value.strip().startswith(("http://", "https://")):
            raise ValueError("must be empty or an http(s) URL such as http://127.0.0.1:8080/v1")
        return value.strip()


class TtsSettings(_Section):
    """Text to speech (a pool of engine instances)."""

    engine: Literal["espeak", "piper", "kokoro", "openai", "wyoming", "scripted"] = Field(
        "espeak", description="Text-to-speech engine: in-process espeak, piper or kokoro; a remote server over the "
        "OpenAI audio API (openai) or Home Assistant's Wyoming protocol (wyoming), at tts.endpoint; scripted is a "
        "test double",
    )
    voice: str = Field(
        "en-us",
        description="Voice: espeak en-us; piper en_US-lessac-medium (or an .onnx path); kokoro af_heart",
    )
    speed: float = Field(1.0, ge=0.25, le=4, description="Speaking rate; 1 = normal")
    workers: int = Field(2, ge=1, le=32, description="Engine instances synthesizing in parallel")
    chunk_ms: int = Field(
        20, ge=5, le=200, description="Length of one synthesized audio chunk in ms; abort takes effect within one"
    )
    first_phrase_words: int = Field(
        3, ge=0, le=50, description="A reply's first spoken piece ends before a word that opens a phrase "
        "('because', 'and', 'to'...) once it has this many words, so its audio starts sooner; later pieces are "
        "whole sentences; 0 = at punctuation only")
    first_phrase_wait_s: float = Field(
        0.3, ge=0, le=10, description="Where no such word or punctuation comes (a number's digits, a long name), "
        "the first piece ends at its last whole word once this many seconds have passed since the reply's first "
        "token; 0 = never")
    max_ahead_s: float = Field(2.0, ge=0, le=600, description="A reply's next sentence is synthesized only once "
                               "less than this many seconds of its audio are left to play (spares the shared CPU, "
                               "and work an interruption would waste); 0 = no limit")
    piper_voice_dir: str = Field(
        "models/piper", description="Directory of Piper voices (NAME.onnx + NAME.onnx.json) for tts.engine = piper"
    )
    kokoro_dir: str = Field(
        "models/kokoro-82m", description="Directory of the Kokoro-82M weights and voices/ for tts.engine = kokoro"
    )
    endpoint: str = Field(
        "", validate_default=True,
        description="Remote engines: the server, http(s)://host:port[/v1] for openai (POST .../v1/audio/speech), "
        "tcp://host:port for wyoming",
    )
    remote_model: str = Field("tts-1", description="engine openai: the model field of each request")
    remote_voice: str = Field(
        "", description="Remote engines: the server's voice name; empty = alloy for openai, the server's default "
        "for wyoming",
    )
    remote_format: Literal["pcm", "wav"] = Field(
        "pcm", description="engine openai: response_format asked for; pcm streams where the server does (a WAV "
        "body is recognised whatever was asked)",
    )
    remote_sample_rate: int = Field(
        24000, ge=8000, le=192000,
        description="engine openai: sample rate (Hz) of a raw pcm body whose server sends no X-Sample-Rate "
        "(OpenAI: 24000)",
    )
    remote_api_key: str = Field(
        "", description="engine openai: API key (sent as a bearer token); or set VOICECHAT_TTS__REMOTE_API_KEY",
        json_schema_extra=SECRET,
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="Remote engines: timeout in seconds for "
                                     "connecting to the server")
    read_timeout_s: float = Field(10.0, gt=0, le=600, description="Remote engines: longest wait in seconds for "
                                  "the server's next data; a stalled reply ends its sentence with an error")
    call_timeout_s: float = Field(
        15.0, gt=0, le=600,
        description="Longest wait in seconds for the next audio chunk of a sentence; a call that takes longer "
        "ends its turn with an error and counts as a failure of the engine",
    )
    breaker_failures: int = Field(
        5, ge=1, le=1000, description="Failed or timed-out syntheses within breaker_window_s that open the circuit"
    )
    breaker_window_s: float = Field(
        60.0, gt=0, le=86400, description="Window in seconds in which breaker_failures are counted"
    )
    breaker_cooldown_s: float = Field(
        20.0, ge=0, le=3600,
        description="Seconds an open circuit fails fast before one probe synthesis is let through",
    )
    scripted_first_chunk_s: float = Field(
        0.0, ge=0, description="Scripted engine: delay before the first audio chunk in seconds"
    )
    scripted_chunk_s: float = Field(
        0.0, ge=0, description="Scripted engine: delay between audio chunks in seconds"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_fits_engine(cls, value: str, info: ValidationInfo) -> str:
        """A remote engine needs its kind of URL (a config error, not a failure at the first reply)."""
        return remote_endpoint("tts", value, info.data.get("engine", ""))
