"""The WebSocket wire protocol, without sockets (pure; documented in docs/protocol.md).

Audio travels in binary frames with a small fixed header, never as base64 inside
JSON; everything else is one JSON object per text frame with a ``type``. Parsing
never raises anything but ``ProtocolError``, whose ``code`` goes back to the client
in an ``error`` event, so one malformed frame costs its sender one error and
nothing else.

Parsing is strict: no conversion between JSON types (a boolean is ``true`` or
``false``, an integer has no fraction or exponent, a number is not a string),
strings are valid Unicode (no lone surrogates), and reserved header bytes are 0.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import struct
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voicechat.core.events import AudioChunk, ErrorEvent, Event, TurnMetrics

PROTOCOL_VERSION = 1
KIND_CLIENT_AUDIO = 1
KIND_SERVER_AUDIO = 2
# Client audio: kind u8, version u8, reserved u16, sequence u32, capture time in microseconds u64.
CLIENT_AUDIO_HEADER = struct.Struct("<BBHIQ")
# Server audio: kind u8, version u8, reserved u16, generation u32, sentence u32, start sample u32, rate u32.
SERVER_AUDIO_HEADER = struct.Struct("<BBHIIII")
SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
U32_MAX = 2**32 - 1  # generations and sample positions are u32 on the wire
MAX_TEXT_CHARS = 2000  # default of limits.max_text_chars: the one limit on a text message's length
MAX_MESSAGE_BYTES = 16384  # a control message's size limit (UTF-8 bytes)


class ProtocolError(ValueError):
    """A frame or message the server cannot accept; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- client -> server ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClientAudio:
    """One binary audio frame: PCM16 mono at the rate the hello declared."""

    seq: int
    captured_at_us: int
    pcm: bytes


class _Message(BaseModel):
    # strict: no coercion between JSON types ("yes", 1 or "false" are not booleans, "5" or 5.0 not integers)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Hello(_Message):
    type: Literal["hello"]
    # Missing, null, empty or wrong: all refused the same way (unauthorized, after the delay), not here.
    token: str | None = None
    resume: str | None = Field(
        None, max_length=256, pattern=r"^[A-Za-z0-9_-]*$", description="resume token of an earlier session (URL-safe)"
    )
    input_sample_rate: int = Field(16000, description="rate of the client's audio frames")
    output_sample_rate: int = Field(24000, description="rate the client plays audio at")
    playback_reports: bool = Field(False, description="the client will send playback messages")


class TextInput(_Message):
    type: Literal["text"]
    text: str  # 1 to max_text_chars characters, not only whitespace: checked by parse_text


class Mute(_Message):
    type: Literal["mute"]
    muted: bool


class ClearHistory(_Message):
    type: Literal["clear_history"]


class SettingsUpdate(_Message):
    type: Literal["settings"]
    voice: str | None = Field(None, max_length=100)
    speed: float | None = Field(None, ge=0.25, le=4, allow_inf_nan=False)


class Playback(_Message):
    type: Literal["playback"]
    generation: int = Field(ge=0, le=U32_MAX)
    played_samples: int = Field(ge=0, le=U32_MAX)
    finished: bool = False


class Ping(_Message):
    type: Literal["ping"]
    t: float | None = Field(None, allow_inf_nan=False, description="echoed in pong: must stay valid JSON")


ClientMessage = Annotated[
    Hello | TextInput | Mute | ClearHistory | SettingsUpdate | Playback | Ping, Field(discriminator="type")
]
_CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
MESSAGE_TYPES = ("hello", "text", "mute", "clear_history", "settings", "playback", "ping")


def parse_text(
    data: str, max_bytes: int = MAX_MESSAGE_BYTES, max_text_chars: int = MAX_TEXT_CHARS
) -> ClientMessage:
    """A JSON control message, validated; ``max_text_chars`` bounds a ``text`` message (in code points)."""
    if len(data.encode("utf-8", errors="replace")) > max_bytes:
        raise ProtocolError("message_too_large", f"control messages are limited to {max_bytes} bytes")
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:  # "[[[[..." within the size limit
        raise ProtocolError("bad_json", "not JSON we accept: nested too deeply") from None
    except ValueError:  # an integer over Python's digit limit
        raise ProtocolError("bad_json", "not JSON we accept: a number is too long") from None
    if not isinstance(raw, dict):
        raise ProtocolError("bad_message", "a control message is a JSON object with a 'type'")
    kind = raw.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; known: {', '.join(MESSAGE_TYPES)}")
    try:
        message = _CLIENT_MESSAGE.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or kind
        raise ProtocolError("bad_message", f"{kind}: {where}: {first['msg']}") from None
    for name, value in message:
        if isinstance(value, str) and not _is_unicode(value):
            raise ProtocolError("bad_message", f"{kind}: {name}: not valid Unicode (a lone surrogate)")
    if isinstance(message, TextInput) and not (0 < len(message.text) <= max_text_chars and message.text.strip()):
        raise ProtocolError("bad_message", f"text: text: must be 1 to {max_text_chars} characters, not only whitespace")
    if isinstance(message, Hello):
        for name in ("input_sample_rate", "output_sample_rate"):
            if getattr(message, name) not in SAMPLE_RATES:
                raise ProtocolError(
                    "bad_sample_rate", f"{name} must be one of {', '.join(map(str, SAMPLE_RATES))}"
                )
    return message


def _is_unicode(value: str) -> bool:
    """False for a string with a lone surrogate (a legal JSON escape, but not encodable as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_audio(data: bytes, max_bytes: int = 65536) -> ClientAudio:
    """A binary audio frame: header (reserved bytes 0), then an even number of PCM16 bytes."""
    if len(data) > max_bytes:
        raise ProtocolError("frame_too_large", f"audio frames are limited to {max_bytes} bytes")
    if len(data) < CLIENT_AUDIO_HEADER.size:
        raise ProtocolError("bad_audio_frame", f"an audio frame starts with a {CLIENT_AUDIO_HEADER.size}-byte header")
    kind, version, reserved, seq, captured = CLIENT_AUDIO_HEADER.unpack_from(data)
    if kind != KIND_CLIENT_AUDIO:
        raise ProtocolError("bad_audio_frame", f"frame kind {kind} is not client audio ({KIND_CLIENT_AUDIO})")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"protocol version {version} is not supported ({PROTOCOL_VERSION})")
    if reserved:
        raise ProtocolError("bad_audio_frame", "the reserved header bytes (2 and 3) must be 0")
    pcm = data[CLIENT_AUDIO_HEADER.size :]
    if len(pcm) % 2:
        raise ProtocolError("bad_audio_frame", "PCM16 audio needs an even number of bytes")
    return ClientAudio(seq, captured, pcm)


def encode_client_audio(seq: int, captured_at_us: int, pcm: bytes) -> bytes:
    """What a client sends (tests, the load benchmark)."""
    return CLIENT_AUDIO_HEADER.pack(KIND_CLIENT_AUDIO, PROTOCOL_VERSION, 0, seq, captured_at_us) + pcm


# -- server -> client ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerAudio:
    generation: int
    sentence_index: int
    start_sample: int
    sample_rate: int
    pcm: bytes


def encode_event(event: Event) -> str | bytes:
    """A session event as one WebSocket frame: audio binary, the rest JSON."""
    if isinstance(event, AudioChunk):
        header = SERVER_AUDIO_HEADER.pack(
            KIND_SERVER_AUDIO, PROTOCOL_VERSION, 0,
            event.generation, event.sentence_index, event.start_sample, event.sample_rate,
        )
        return header + event.pcm
    body: dict[str, object] = {"type": _event_type(event)}
    for f in dataclasses.fields(event):  # type: ignore[arg-type]
        value = getattr(event, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        body[f.name] = value
    if isinstance(event, TurnMetrics):
        body["latency_ms"] = turn_latencies_ms(event)
    return json.dumps(body, separators=(",", ":"))


def encode_message(kind: str, **fields: object) -> str:
    """A server message that is not a session event (session, error, pong)."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def decode_server_audio(data: bytes) -> ServerAudio:
    """What a client does with a binary frame (tests, the load benchmark)."""
    if len(data) < SERVER_AUDIO_HEADER.size:
        raise ProtocolError("bad_audio_frame", f"server audio starts with a {SERVER_AUDIO_HEADER.size}-byte header")
    kind, version, _r, generation, sentence, start, rate = SERVER_AUDIO_HEADER.unpack_from(data)
    if kind != KIND_SERVER_AUDIO or version != PROTOCOL_VERSION:
        raise ProtocolError("bad_audio_frame", f"not a server audio frame (kind {kind}, version {version})")
    return ServerAudio(generation, sentence, start, rate, data[SERVER_AUDIO_HEADER.size :])


def _event_type(event: object) -> str:
    """CamelCase class name -> snake_case type: PartialTranscript -> partial_transcript."""
    if isinstance(event, ErrorEvent):
        return "error"  # one error type on the wire, whether a stage or the protocol failed
    name = type(event).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def turn_latencies_ms(metrics: TurnMetrics) -> dict[str, float]:
    """A turn's stage latencies in milliseconds (the wire's ``latency_ms``, the metrics' histograms)."""
    voice_end = "voice_end" if "voice_end" in metrics.stamps else "speech_end"
    pairs = {
        "endpointing": ("voice_end", "speech_end"),
        "stt": ("speech_end", "transcript_final"),
        "llm_first_token": ("transcript_final", "first_token"),
        "first_sentence": ("first_token", "first_sentence"),
        "tts_first_audio": ("first_sentence", "first_audio"),
        # from the last voiced sample's arrival where the recognizer dates it, which is what the user waits
        "voice_to_voice": (voice_end, "first_audio"),
    }
    out = {}
    for name, (start, end) in pairs.items():
        ms = metrics.latency_ms(start, end)
        if ms is not None:
            out[name] = round(max(0.0, ms), 1)  # a prepared reply's stages done before the turn ended: no wait
    return out
