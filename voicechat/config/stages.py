"""The settings of the listening stages: audio, voice activity detection and STT (``reply.py``: LLM and TTS).

Part of the schema (``schema.py`` holds the rest and the root ``Settings``); the
same rules hold: unknown keys are errors, descriptions and bounds become
config.toml's comments and the "allowed" part of error messages.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict

from voicechat.engines.endpoints import HTTP_SCHEMES, parse_endpoint

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
SECRET: JsonDict = {"secret": True}  # json_schema_extra marker: value is masked in `config` output
REMOTE_SCHEMES = {"openai": HTTP_SCHEMES, "wyoming": ("tcp",)}  # a remote stt/tts engine -> its endpoint's schemes


def remote_endpoint(stage: str, value: str, engine: str) -> str:
    """``<stage>.endpoint`` checked against ``<stage>.engine`` (a remote one needs its kind of URL)."""
    schemes = REMOTE_SCHEMES.get(engine)
    if schemes is not None:
        parse_endpoint(value, key=f"{stage}.endpoint ({stage}.engine = '{engine}')", schemes=schemes)
    return value.strip()


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class AudioSettings(_Section):
    """Audio capture and playback."""

    stt_sample_rate: Literal[16000] = Field(
        16000, description="Sample rate (Hz) fed to VAD and STT; the models need 16 kHz"
    )
    frame_ms: int = Field(20, ge=10, le=100, description="Length of one audio frame in milliseconds")
    output_sample_rate: int = Field(
        24000, ge=8000, le=48000, description="Sample rate (Hz) of speech sent to clients"
    )
    capture_queue_s: float = Field(
        2.0, ge=0.2, le=30,
        description="Seconds of audio a session may fall behind (the recognizer's backlog) before the oldest goes",
    )
    input_device: str = Field(
        "", description="Local microphone (sounddevice name or index); empty = system default"
    )
    output_device: str = Field(
        "", description="Local speaker (sounddevice name or index); empty = system default"
    )
    echo: Literal["speex", "aec", "gate", "off"] = Field(
        "speex",
        description="Terminal UI on speakers without headphones: speex = cancel the assistant's own voice in the "
        "microphone with Speex's linear filter (libspeexdsp; you can talk over the reply) and gate what is left; "
        "aec = WebRTC AEC3 (pywebrtc-audio; removes more echo while it learns the room, but swallows the first "
        "words of a user talking over the reply); each falls back to the next when its library is missing; "
        "gate = mute the microphone where it only hears the assistant (you must be louder than the echo to "
        "interrupt), "
        "off = neither (headphones)",
    )

    @model_validator(mode="before")
    @classmethod
    def _echo_gate_is_echo(cls, data: object) -> object:
        """Config files from before ``echo``: ``echo_gate = true`` meant the default (now speex), false off."""
        if isinstance(data, dict) and "echo_gate" in data:
            data = dict(data)
            gate = data.pop("echo_gate")
            data.setdefault("echo", "speex" if gate else "off")
        return data


class VadSettings(_Section):
    """Voice activity detection and turn taking."""

    frontend: Literal["batched", "realtimestt"] = Field(
        "batched",
        description="batched = one thread runs Silero for every session, batching the chunks that arrive "
        "within batch_interval_s; "
        "realtimestt = one RealtimeSTT recorder (and its thread) per session",
    )
    batch_interval_s: float = Field(
        0.005, ge=0, le=0.032,
        description="frontend batched: the least time between two Silero passes; chunks that complete meanwhile "
        "share one batch (more: fewer model calls under load, each decision up to this much later; 0 = every "
        "chunk at once)",
    )
    quiet_dbfs: float = Field(
        -55.0, ge=-120, le=0,
        description="frontend batched: while nobody speaks, audio quieter than this (dBFS) is silence without "
        "running Silero; -120 = run Silero on everything",
    )
    probe_onsets: bool = Field(
        True,
        description="frontend batched: while nobody speaks, look for speech in every loud frame (Silero over "
        "the 32 ms ending there), not only at whole chunks: barge-in up to 32 ms sooner",
    )
    silero_sensitivity: float = Field(
        0.4, ge=0, le=1, description="Silero VAD sensitivity; higher detects speech more eagerly"
    )
    webrtc_sensitivity: int = Field(
        3, ge=0, le=3, description="WebRTC VAD aggressiveness (frontend realtimestt); 0 = most sensitive, 3 = least"
    )
    post_speech_silence_s: float = Field(
        0.6, ge=0.1, le=5, description="Silence in seconds that ends the user's turn (end_of_turn silence, and "
        "the fallback without the Smart Turn model)"
    )
    end_of_turn: Literal["smart", "silence"] = Field(
        "smart",
        description="frontend batched: smart = the turn ends once min_silence_s passed and the sound (Smart Turn "
        "v3.2) and the words said so far judge it finished, else after max_silence_s; silence = after "
        "post_speech_silence_s",
    )
    min_silence_s: float = Field(0.2, ge=0.05, le=5, description="end_of_turn smart: the shortest silence "
                                 "that may end a turn")
    max_silence_s: float = Field(1.5, ge=0.1, le=10, description="end_of_turn smart: the longest pause within a "
                                 "turn (a turn judged unfinished ends after this much silence)")
    turn_signal_timeout_s: float = Field(1.5, ge=0.05, le=10, description="end_of_turn smart: with no signal in "
                                         "after this much silence, the turn ends (a slow model never waits longer)")
    turn_combine: Literal["both", "either", "audio", "words", "mean"] = Field(
        "words", description="end_of_turn smart: which signals must say finished: words (the transcript alone; "
        "best on the evidence set, docs/benchmarks.md), audio (Smart Turn alone), both, either, mean (their "
        "weighted mean against turn_mean_threshold)",
    )
    turn_words: Literal["llm", "rules"] = Field(
        "llm", description="end_of_turn smart: how the words are judged: llm = the language model's view that "
        "the message ends there (the mean of P(end of message) and P(a sentence ends after the last word)), read "
        "from the prepared reply's prefill (llama.cpp; other backends fall "
        "back to rules); rules = Whisper's end mark and whether the last word can end a sentence",
    )
    turn_audio_threshold: float = Field(0.9, ge=0, le=1, description="end_of_turn smart: Smart Turn's "
                                        "probability of a finished turn at or above which the sound says finished")
    turn_words_threshold: float = Field(0.5, ge=0, le=1, description="end_of_turn smart: the words' probability "
                                        "at or above which the transcript says finished")
    turn_mean_threshold: float = Field(0.6, ge=0, le=1, description="turn_combine mean: the threshold")
    turn_model: str = Field("", description="end_of_turn smart: the Smart Turn v3.2 ONNX file; empty = "
                            "models/smart-turn/smart-turn-v3.2-cpu.onnx (`run.py models download --set starter`)")
    early_transcript: bool = Field(
        True,
        description="frontend batched: transcribe the utterance as soon as the user pauses and start the reply "
        "then, held until the turn ends (dropped if the user goes on)",
    )
    pause_guess_s: float = Field(
        0.05, ge=0, lt=0.1,
        description="early_transcript: start the pause's transcript once the sound has been quiet this many "
        "seconds, before the pause opens (0.1 s); the pause takes it where no voice came between; 0 = at the pause",
    )
    min_utterance_s: float = Field(
        0.3, ge=0, le=5, description="Utterances shorter than this many seconds are ignored"
    )
    pre_roll_s: float = Field(
        1.0, ge=0, le=5,
        description="Seconds of audio kept from before speech onset so the first word is not clipped",
    )
    barge_in: bool = Field(True, description="Let the user interrupt the assistant by speaking")


class SttSettings(_Section):
    """Speech to text (one model shared by all sessions)."""

    engine: Literal["faster_whisper", "openai", "wyoming", "scripted"] = Field(
        "faster_whisper", description="Speech-to-text engine: faster_whisper in this process, openai = a server of "
        "the OpenAI audio API (vLLM, faster-whisper-server, speaches), wyoming = a Wyoming ASR server (Home "
        "Assistant's protocol); scripted is a test double",
    )
    endpoint: str = Field(
        "", validate_default=True, description="engine openai: the server's base URL, http(s)://host:port (with or "
        "without /v1); engine wyoming: tcp://host:port",
    )
    remote_model: str = Field("", description="engine openai/wyoming: the model the server should use (openai: "
                              "the request's model, e.g. whisper-1; wyoming: the transcribe event's name); empty = "
                              "the server's default")
    api_key: str = Field("", description="engine openai: API key sent as a Bearer token; empty = none (set it "
                         "from the environment: VOICECHAT_STT__API_KEY)", json_schema_extra=SECRET)
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="engine openai/wyoming: timeout in seconds "
                                     "for connecting to the server")
    read_timeout_s: float = Field(30.0, gt=0, le=600, description="engine openai/wyoming: longest wait in seconds "
                                  "for the server's answer (call_timeout_s ends the turn sooner)")
    remote_concurrency: int = Field(4, ge=1, le=64, description="engine openai/wyoming: most requests sent to "
                                    "the server at once (a batch of utterances becomes one request each)")
    model: str = Field(
        "base.en",
        description="Whisper model name (tiny.en, base.en, small.en: see `run.py models list`) or model directory",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where STT runs; auto picks CUDA when available"
    )
    compute_type: str = Field("auto", description="CTranslate2 compute type (int8, float16, ...); auto = "
                              "float16 on a GPU, int8 on a CPU; default = the model's own")
    window: Literal["utterance", "full"] = Field("utterance", description="What Whisper's encoder sees: the "
                                                 "utterance padded to whole 8 s (several times less work on a CPU, "
                                                 "word errors within about a point) or Whisper's 30 s window")
    cpu_threads: int = Field(0, ge=0, description="CPU threads for STT; 0 = automatic")
    decode_threads: int = Field(
        0, ge=0, le=64,
        description="CPU threads for Whisper's decoding (the encoder uses stt.cpu_threads); 0 = automatic: 1 on a "
                    "CPU for models up to 300 MB (a second copy of the weights, faster on few cores), else as the "
                    "encoder",
    )
    num_workers: int = Field(1, ge=1, le=16, description="Transcriptions that may run in parallel")
    language: str = Field("en", description="Spoken language code; empty = detect")
    partials: bool = Field(True, description="Send interim transcripts while the user speaks")
    partial_interval_s: float = Field(
        0.3, ge=0.05, le=5, description="Seconds of new speech between interim transcripts"
    )
    partial_max_load: float = Field(0.5, gt=0, le=1, description="Interim transcripts run only while the shared "
                                    "model was busy less than this share of the last 2 s (the rest is kept for "
                                    "final transcripts); 1 = whenever it is free")
    beam_size: int = Field(
        0, ge=0, le=16,
        description="Beam size for final transcripts; 0 = automatic: 5 where Whisper runs on a GPU, 1 (greedy) on "
                    "a CPU, where beams cost each turn 100-130 ms on 2 cores",
    )
    partial_beam_size: int = Field(1, ge=1, le=16, description="Beam size for interim transcripts (1 = greedy)")
    max_batch: int = Field(
        8, ge=1, le=64, description="Most utterances (of different sessions) decoded together in one batch"
    )
    call_timeout_s: float = Field(
        10.0, gt=0, le=600,
        description="Longest wait in seconds for a final transcript; a call that takes longer ends its turn "
        "with an error and counts as a failure of the engine",
    )
    stall_after_s: float = Field(0.0, ge=0, le=600, description="Seconds a transcription may run before a spare "
                                 "worker takes the queue; 0 = adaptive (a few times the model's measured time, "
                                 "finals and interim transcripts apart)")
    breaker_failures: int = Field(
        5, ge=1, le=1000, description="Failed or timed-out transcriptions within breaker_window_s that open the circuit"
    )
    breaker_window_s: float = Field(
        60.0, gt=0, le=86400, description="Window in seconds in which breaker_failures are counted"
    )
    breaker_cooldown_s: float = Field(
        20.0, ge=0, le=3600,
        description="Seconds an open circuit fails fast before one probe transcription is let through",
    )
    scripted_delay_s: float = Field(
        0.0, ge=0, description="Scripted engine: delay per transcript in seconds"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_fits_engine(cls, value: str, info: ValidationInfo) -> str:
        """A remote engine needs its kind of URL (a config error, not a failure at the first turn)."""
        return remote_endpoint("stt", value, info.data.get("engine", ""))
