"""The wire protocol's parsing and encoding (pure, no sockets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicechat.core.events import (
    AudioChunk,
    FlushPlayback,
    PartialTranscript,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.server.protocol import (
    CLIENT_AUDIO_HEADER,
    Hello,
    Playback,
    ProtocolError,
    SettingsUpdate,
    TextInput,
    decode_server_audio,
    encode_client_audio,
    encode_event,
    parse_audio,
    parse_text,
)


def code_of(call, *args) -> str:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value.code


def test_control_messages_parse_into_typed_messages() -> None:
    hello = parse_text('{"type":"hello","token":"t0k","input_sample_rate":44100,"playback_reports":true}')
    assert isinstance(hello, Hello) and hello.input_sample_rate == 44100 and hello.playback_reports
    assert parse_text('{"type":"text","text":"hi"}') == TextInput(type="text", text="hi")
    assert parse_text('{"type":"settings","speed":1.5}') == SettingsUpdate(type="settings", speed=1.5)
    assert isinstance(parse_text('{"type":"playback","generation":3,"played_samples":4800}'), Playback)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"type":"launch_rockets"}', "unknown_type"),
        ('{"text":"no type"}', "unknown_type"),
        ('{"type":"text","text":""}', "bad_message"),
        ('{"type":"text","text":"hi","extra":1}', "bad_message"),
        ('{"type":"settings","speed":100}', "bad_message"),
        ('{"type":"hello","token":"x","input_sample_rate":12345}', "bad_sample_rate"),
        ('{"type":"playback","generation":-1,"played_samples":0}', "bad_message"),
        ('{"type":"text","text":"' + "a" * 20000 + '"}', "message_too_large"),
    ],
)
def test_bad_control_messages_get_a_specific_code(data: str, code: str) -> None:
    assert code_of(parse_text, data) == code


def test_bad_messages_name_the_field() -> None:
    with pytest.raises(ProtocolError, match="speed"):
        parse_text('{"type":"settings","speed":100}')


def test_audio_frames_round_trip_and_bad_ones_are_refused() -> None:
    pcm = bytes(range(200)) * 2
    frame = parse_audio(encode_client_audio(7, 123456789, pcm))
    assert (frame.seq, frame.captured_at_us, frame.pcm) == (7, 123456789, pcm)
    assert code_of(parse_audio, b"\x01\x01") == "bad_audio_frame"  # truncated header
    assert code_of(parse_audio, encode_client_audio(1, 0, b"abc")) == "bad_audio_frame"  # odd PCM
    assert code_of(parse_audio, encode_client_audio(1, 0, bytes(70000))) == "frame_too_large"
    wrong_kind = b"\x02" + encode_client_audio(1, 0, b"")[1:]
    assert code_of(parse_audio, wrong_kind) == "bad_audio_frame"
    wrong_version = b"\x01\x09" + encode_client_audio(1, 0, b"")[2:]
    assert code_of(parse_audio, wrong_version) == "bad_version"


def test_events_encode_audio_as_binary_and_the_rest_as_json() -> None:
    chunk = AudioChunk(b"\x01\x00\x02\x00", 24000, generation=5, sentence_index=2, start_sample=480)
    frame = encode_event(chunk)
    assert isinstance(frame, bytes)
    audio = decode_server_audio(frame)
    assert (audio.generation, audio.sentence_index, audio.start_sample, audio.sample_rate) == (5, 2, 480, 24000)
    assert audio.pcm == chunk.pcm
    state = json.loads(encode_event(StateChanged(TurnState.THINKING, 3, TurnState.USER_SPEAKING)))
    assert state == {"type": "state_changed", "state": "thinking", "generation": 3, "previous": "user_speaking"}
    partial = json.loads(encode_event(PartialTranscript("hello wor", 1, "hello")))
    assert partial == {"type": "partial_transcript", "text": "hello wor", "generation": 1, "stable": "hello"}
    assert json.loads(encode_event(FlushPlayback(4))) == {"type": "flush_playback", "generation": 4}
    metrics = json.loads(encode_event(TurnMetrics(2, {"speech_end": 1.0, "transcript_final": 1.25})))
    assert metrics["latency_ms"] == {"stt": 250.0}


@given(st.text(max_size=300))
def test_any_text_frame_parses_or_raises_protocol_error(data: str) -> None:
    try:
        parse_text(data)
    except ProtocolError:
        pass


@given(st.dictionaries(st.sampled_from(["type", "text", "token", "speed", "generation", "muted", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                       max_size=4))
def test_any_json_object_parses_or_raises_protocol_error(obj: dict) -> None:
    try:
        parse_text(json.dumps(obj))
    except ProtocolError:
        pass


@given(st.binary(max_size=CLIENT_AUDIO_HEADER.size * 3))
def test_any_binary_frame_parses_or_raises_protocol_error(data: bytes) -> None:
    try:
        frame = parse_audio(data)
    except ProtocolError:
        return
    assert len(frame.pcm) % 2 == 0
