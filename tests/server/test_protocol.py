"""The wire protocol's parsing and encoding (pure, no sockets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicechat.core.events import (
    AudioChunk,
    EndOfTurn,
    FlushPlayback,
    PartialTranscript,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.server.protocol import (
    CLIENT_AUDIO_HEADER,
    MAX_TEXT_CHARS,
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


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "mute", "muted": "yes"}, "muted"),
        ({"type": "mute", "muted": 1}, "muted"),
        ({"type": "mute", "muted": "false"}, "muted"),
        ({"type": "settings", "speed": "2"}, "speed"),
        ({"type": "settings", "speed": True}, "speed"),
        ({"type": "playback", "generation": "5", "played_samples": 0}, "generation"),
        ({"type": "playback", "generation": 5.0, "played_samples": 0}, "generation"),
        ({"type": "playback", "generation": 1, "played_samples": True}, "played_samples"),
        ({"type": "playback", "generation": 1, "played_samples": 0, "finished": "no"}, "finished"),
        ({"type": "hello", "token": "t", "playback_reports": "yes"}, "playback_reports"),
        ({"type": "hello", "token": "t", "input_sample_rate": "16000"}, "input_sample_rate"),
        ({"type": "hello", "token": "t", "output_sample_rate": 24000.0}, "output_sample_rate"),
        ({"type": "hello", "token": 12345}, "token"),
        ({"type": "ping", "t": True}, "t"),
        ({"type": "ping", "t": "1.5"}, "t"),
        ({"type": "text", "text": 5}, "text"),
    ],
)
def test_json_types_are_not_converted(message: dict, field: str) -> None:
    """Found by an independent client: these were converted (``"false"`` to False, ``true`` to 1.0) and accepted."""
    with pytest.raises(ProtocolError) as info:
        parse_text(json.dumps(message))
    assert info.value.code == "bad_message"
    assert str(info.value).startswith(f"{message['type']}: {field}: "), str(info.value)


def test_a_hello_without_a_token_parses_so_the_server_can_refuse_it_like_a_wrong_one() -> None:
    for data in ('{"type":"hello"}', '{"type":"hello","token":null}', '{"type":"hello","token":""}'):
        hello = parse_text(data)
        assert isinstance(hello, Hello) and not hello.token
    assert parse_text('{"type":"hello","token":"' + "k" * 1000 + '"}').token == "k" * 1000  # just a wrong one


def test_one_text_limit_in_characters_not_only_whitespace() -> None:
    def text(n: int, char: str = "a") -> str:
        return json.dumps({"type": "text", "text": char * n}, ensure_ascii=False)

    assert parse_text(text(MAX_TEXT_CHARS)) == TextInput(type="text", text="a" * MAX_TEXT_CHARS)
    assert len(parse_text(text(MAX_TEXT_CHARS, "\U0001f600")).text) == MAX_TEXT_CHARS  # code points, not UTF-16
    for bad in (text(MAX_TEXT_CHARS + 1), text(4000), text(4001), text(0), text(3, " "), text(2, "\n")):
        with pytest.raises(ProtocolError, match=f"^text: text: must be 1 to {MAX_TEXT_CHARS} characters") as info:
            parse_text(bad)
        assert info.value.code == "bad_message"
    assert len(parse_text(text(4000), max_text_chars=4000).text) == 4000  # the limit is the caller's (config)
    with pytest.raises(ProtocolError, match="1 to 10 characters"):
        parse_text(text(11), max_text_chars=10)


def test_strings_must_be_valid_unicode() -> None:
    """A lone surrogate (legal as a JSON escape) would fail later, when the text is encoded to UTF-8 (the journal)."""
    for data in ('{"type":"text","text":"hi \\ud800"}', '{"type":"hello","token":"\\udfff"}',
                 '{"type":"settings","voice":"a\\ud800"}'):
        assert code_of(parse_text, data) == "bad_message"
    assert parse_text('{"type":"text","text":"\\ud83d\\ude00"}').text == "\U0001f600"  # a pair is one character


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


@pytest.mark.parametrize("reserved", [1, 0x100, 0xFFFF])
def test_audio_with_nonzero_reserved_bytes_is_refused(reserved: int) -> None:
    frame = CLIENT_AUDIO_HEADER.pack(1, 1, reserved, 0, 0) + b"\0\0"
    assert code_of(parse_audio, frame) == "bad_audio_frame"


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
    assert metrics["latency_ms"] == {"stt": 250.0} and metrics["end_of_turn"] is None
    judged = json.loads(encode_event(TurnMetrics(3, {}, end_of_turn=EndOfTurn(215.0, audio=None, words=0.76))))
    assert judged["end_of_turn"] == {"silence_ms": 215.0, "audio": None, "words": 0.76}


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
