"""Fuzzing the pure wire codec (voicechat/server/protocol.py) with hypothesis.

The contract under test: the decoders (``parse_text``, ``parse_audio``,
``decode_server_audio``) raise nothing but ``ProtocolError`` whatever they are
given, and what they accept is well-formed (finite numbers, bounded integers,
the right types, none converted from another JSON type), so nothing downstream
can trip over an accepted message.

Each test runs ``FUZZ_EXAMPLES`` examples: 200 by default (CI), more with
``VOICECHAT_FUZZ_EXAMPLES=N``, e.g.::

    VOICECHAT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/server/test_fuzz_protocol.py
"""

from __future__ import annotations

import json
import math
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicechat.server.protocol import (
    CLIENT_AUDIO_HEADER,
    KIND_CLIENT_AUDIO,
    MAX_TEXT_CHARS,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    SAMPLE_RATES,
    SERVER_AUDIO_HEADER,
    ClientAudio,
    Hello,
    Ping,
    Playback,
    ProtocolError,
    SettingsUpdate,
    TextInput,
    decode_server_audio,
    encode_client_audio,
    encode_message,
    parse_audio,
    parse_text,
)

FUZZ_EXAMPLES = int(os.environ.get("VOICECHAT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U32_MAX = 2**32 - 1

# -- strategies ---------------------------------------------------------------------------------
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = ("type", "token", "resume", "input_sample_rate", "output_sample_rate", "playback_reports", "text",
          "muted", "voice", "speed", "generation", "played_samples", "finished", "t", "extra")
field_values = (
    json_scalars | st.sampled_from(SAMPLE_RATES) | st.sampled_from(MESSAGE_TYPES)
    | st.sampled_from([0, -1, U32_MAX, U32_MAX + 1, 2**63, 10**400, 1e308, 0.25, 4.0, "", "x" * 5000])
    | json_values
)
# Messages that look like ours: a known type with some of its own fields (sometimes a stranger's), odd values.
TYPE_FIELDS = {
    "hello": ("token", "resume", "input_sample_rate", "output_sample_rate", "playback_reports"),
    "text": ("text",), "mute": ("muted",), "clear_history": (), "settings": ("voice", "speed"),
    "playback": ("generation", "played_samples", "finished"), "ping": ("t",),
}


@st.composite
def structured(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(MESSAGE_TYPES) | st.text(max_size=12) | json_scalars)
    own = TYPE_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
    names = draw(st.lists(st.sampled_from(own), unique=True)) if own else []
    if draw(st.integers(0, 9)) == 0:
        names.append(draw(st.sampled_from(FIELDS[1:])))
    return {"type": kind, **{name: draw(field_values) for name in names}}

def raw_json_numbers(value: object) -> str:
    """json.dumps, then spell some numbers the way hostile clients do (huge ints, NaN, deep nesting)."""
    return json.dumps(value, allow_nan=True)


hostile_text = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),  # binary where text belongs
    json_values.map(raw_json_numbers),
    structured().map(raw_json_numbers),
    st.integers(min_value=1, max_value=20000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    st.integers(min_value=1, max_value=20000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(min_value=4000, max_value=15000).map(lambda n: '{"type":"ping","t":' + "9" * n + "}"),
    st.sampled_from(MESSAGE_TYPES).map(lambda t: json.dumps({"type": t}) + "x"),  # trailing garbage
)

header_ints = st.tuples(
    st.sampled_from([KIND_CLIENT_AUDIO, 0, 2, 255]) | st.integers(0, 255),
    st.sampled_from([PROTOCOL_VERSION, 0, 2, 255]) | st.integers(0, 255),
    st.integers(0, 2**16 - 1), st.integers(0, U32_MAX), st.integers(0, 2**64 - 1),
)
hostile_audio = st.one_of(
    st.binary(max_size=200),
    st.tuples(header_ints, st.binary(max_size=64)).map(lambda hp: CLIENT_AUDIO_HEADER.pack(*hp[0]) + hp[1]),
    st.tuples(header_ints, st.integers(0, CLIENT_AUDIO_HEADER.size)).map(  # truncated headers
        lambda hn: CLIENT_AUDIO_HEADER.pack(*hn[0])[: hn[1]]),
    st.text(max_size=100).map(lambda s: s.encode()),  # text where binary belongs
    st.integers(65536 - 64, 65536 + 64).map(lambda n: encode_client_audio(1, 0, bytes(n))),  # near the limit
)


# -- properties ---------------------------------------------------------------------------------
def check_accepted_message(message: object) -> None:
    """What parse_text returns is safe to use and to echo back as JSON."""
    assert getattr(message, "type", None) in MESSAGE_TYPES
    for value in message.model_dump().values():  # type: ignore[attr-defined]
        if isinstance(value, float):
            assert math.isfinite(value), message
    if isinstance(message, Hello):
        assert message.input_sample_rate in SAMPLE_RATES and message.output_sample_rate in SAMPLE_RATES
    if isinstance(message, Playback):
        assert 0 <= message.generation <= U32_MAX and 0 <= message.played_samples <= U32_MAX
    if isinstance(message, SettingsUpdate) and message.speed is not None:
        assert 0.25 <= message.speed <= 4
    if isinstance(message, TextInput):
        assert 0 < len(message.text) <= MAX_TEXT_CHARS and message.text.strip()
    if isinstance(message, Ping):
        json.loads(encode_message("pong", t=message.t))  # a strict JSON parser (a browser) can read the echo
    json.dumps(message.model_dump(), allow_nan=False)


@FUZZ
@given(hostile_text)
def test_parse_text_raises_only_protocol_errors(data: str) -> None:
    try:
        message = parse_text(data)
    except ProtocolError as err:
        assert err.code and str(err)
        json.loads(encode_message("error", code=err.code, message=str(err)))  # the refusal is sendable
        return
    check_accepted_message(message)


@FUZZ
@given(structured())
def test_structured_messages_are_accepted_only_when_well_formed(raw: dict[str, object]) -> None:
    try:
        message = parse_text(json.dumps(raw, allow_nan=True))
    except ProtocolError:
        return
    check_accepted_message(message)
    assert set(raw) <= {"type", *TYPE_FIELDS[message.type]}  # unknown fields are refused
    for name, sent in raw.items():
        assert same_json_type(sent, getattr(message, name)), (name, sent)


def same_json_type(sent: object, accepted: object) -> bool:
    """No conversion between JSON types; only an integer may stand for a number (a float field)."""
    if sent is None or isinstance(sent, bool | str):
        return type(accepted) is type(sent)
    if isinstance(sent, int):
        return type(accepted) in (int, float)
    return type(sent) is float and type(accepted) is float


@FUZZ
@given(hostile_audio, st.integers(min_value=CLIENT_AUDIO_HEADER.size, max_value=70000))
def test_parse_audio_raises_only_protocol_errors(data: bytes, max_bytes: int) -> None:
    try:
        frame = parse_audio(data, max_bytes)
    except ProtocolError as err:
        assert err.code in ("bad_audio_frame", "bad_version", "frame_too_large")
        return
    assert isinstance(frame, ClientAudio)
    assert len(data) <= max_bytes and len(frame.pcm) % 2 == 0
    assert data[0] == KIND_CLIENT_AUDIO and data[1] == PROTOCOL_VERSION


@FUZZ
@given(st.binary(max_size=64) | st.tuples(st.binary(min_size=SERVER_AUDIO_HEADER.size, max_size=64)).map(
    lambda t: struct.pack("<BB", 2, 1) + t[0][2:]))
def test_decode_server_audio_raises_only_protocol_errors(data: bytes) -> None:
    try:
        audio = decode_server_audio(data)
    except ProtocolError as err:
        assert err.code == "bad_audio_frame"
        return
    assert len(audio.pcm) == len(data) - SERVER_AUDIO_HEADER.size


def test_known_hostile_inputs_found_by_fuzzing() -> None:
    """Regression cases: each escaped as another exception (or was accepted) before the codec was fixed."""
    cases = {
        "[" * 5000 + "]" * 5000: "bad_json",  # RecursionError
        '{"type":"ping","t":' + "9" * 5000 + "}": "bad_json",  # int() digit limit: ValueError
        '{"type":"ping","t":Infinity}': "bad_message",  # pong would echo invalid JSON
        '{"type":"ping","t":NaN}': "bad_message",
        '{"type":"playback","generation":' + "9" * 400 + ',"played_samples":1}': "bad_message",
        '{"type":"playback","generation":1,"played_samples":1e300}': "bad_message",
        '{"type":"settings","speed":NaN}': "bad_message",
        # Found by the live fuzz: secrets.compare_digest raised TypeError on a non-ASCII resume token (close 1011).
        '{"type":"hello","token":"t","resume":"\\u0080"}': "bad_message",
        # Found by an independent client: converted between JSON types instead of refused.
        '{"type":"ping","t":true}': "bad_message",
        '{"type":"mute","muted":"false"}': "bad_message",
        '{"type":"playback","generation":"5","played_samples":0}': "bad_message",
        # A lone surrogate would fail when the text is written to the conversation journal (UTF-8).
        '{"type":"text","text":"\\ud800"}': "bad_message",
    }
    for data, code in cases.items():
        try:
            parse_text(data)
        except ProtocolError as err:
            assert err.code == code, (data[:40], err.code)
        else:
            raise AssertionError(f"accepted {data[:60]!r}")
    for data in (b"", b"\x02", bytes(SERVER_AUDIO_HEADER.size - 1)):
        try:
            decode_server_audio(data)
        except ProtocolError as err:
            assert err.code == "bad_audio_frame"
        else:
            raise AssertionError(f"accepted {data!r}")
