"""docs/protocol.md against the code: its tables are read and walked, row by row (pure, no sockets).

Each message type and field of the control-message tables is checked against the
codec's models (required or default, JSON type) and, with hypothesis, against
values of every JSON type: the stated types are kept as sent or refused for their
range, every other type gets ``bad_message`` naming the field. The audio header
tables are checked against the structs, the limits table against the settings'
defaults, the error codes and close codes against what the server can send. The
same rules over a live connection: tests/test_server_conformance.py.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicechat.config.schema import Settings
from voicechat.core import events
from voicechat.server import connection, protocol
from voicechat.server.connection import ConnectionLimits
from voicechat.server.protocol import MESSAGE_TYPES, SAMPLE_RATES, ProtocolError, parse_text

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
TYPES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- reading the spec ------------------------------------------------------------------------------
def section(heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#)", SPEC + "\n#", re.DOTALL | re.MULTILINE)
    assert match, heading
    return match.group(1)


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text``, as rows keyed by the header's cells."""
    found, rows, header = [], [], None
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-: "):
                rows.append(dict(zip(header, cells, strict=True)))
        elif header is not None:
            found.append(rows)
            rows, header = [], None
    return found


def names(cell: str) -> list[str]:
    """The `identifiers` of a table cell."""
    return re.findall(r"`([a-z_]+)`", cell)


CONTROL = section("Client -> server control (JSON)")
MESSAGES, FIELDS = tables(CONTROL)
MODELS = {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in typing.get_args(
    typing.get_args(protocol.ClientMessage)[0])}
JSON_TYPES = {"boolean": (bool,), "integer": (int,), "number": (int, float), "string": (str,), "null": (type(None),)}
# A valid message of each type, to put one odd field into.
BASE = {"hello": {"token": "t"}, "text": {"text": "hi"}, "mute": {"muted": True}, "clear_history": {},
        "settings": {}, "playback": {"generation": 1, "played_samples": 0}, "ping": {}}
# Values a lax parser converts (strings of numbers and booleans, integral floats, 0 and 1) come up often.
convertible = st.sampled_from([0, 1, 4, 0.5, 1.0, 5.0, 16000, 16000.0, "16000", "2", "true", "false", "yes", "", "1.5"])
json_values = convertible | st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(-1e6, 1e6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)


def json_type(value: object) -> str:
    """The JSON type of a Python value from json.loads (an integral float is still a fraction in JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}[type(value)]


def allowed(row: dict[str, str]) -> set[str]:
    """The JSON types a fields-table row allows ("number" includes integers)."""
    stated = set(row["JSON type"].split(" or "))
    return stated | ({"integer"} if "number" in stated else set())


# -- message types and fields ----------------------------------------------------------------------
def test_the_spec_lists_every_message_type_and_every_field_of_each() -> None:
    assert [names(r["`type`"])[0] for r in MESSAGES] == list(MESSAGE_TYPES)
    for kind, model in MODELS.items():
        spec_fields = [names(r["field"])[0] for r in FIELDS if names(r["`type`"]) == [kind]]
        assert spec_fields == [f for f in model.model_fields if f != "type"], kind


@pytest.mark.parametrize("row", FIELDS, ids=lambda r: ".".join(names(r["`type`"]) + names(r["field"])))
def test_required_and_defaults_are_as_the_spec_says(row: dict[str, str]) -> None:
    (kind,), (name,) = names(row["`type`"]), names(row["field"])
    field = MODELS[kind].model_fields[name]
    required = row["required"]
    assert field.is_required() == (required == "yes"), (kind, name)
    if default := re.fullmatch(r"no \((.*)\)", required):
        assert field.default == json.loads(default.group(1))
    elif required == "no":
        assert field.default is None and "null" in allowed(row), "an optional field without a default is null"
    for stated in allowed(row):
        assert stated in JSON_TYPES, row["JSON type"]


@pytest.mark.parametrize("row", FIELDS, ids=lambda r: ".".join(names(r["`type`"]) + names(r["field"])))
def test_each_field_takes_its_json_types_only(row: dict[str, str]) -> None:
    """Another JSON type: ``bad_message`` naming the field. Its own types: kept as sent, or refused for range."""
    (kind,), (name,) = names(row["`type`"]), names(row["field"])

    @TYPES
    @given(json_values)
    def check(value: object) -> None:
        data = json.dumps({"type": kind, **BASE[kind], name: value})
        try:
            message = parse_text(data)
        except ProtocolError as err:
            assert err.code in ("bad_message", "bad_sample_rate"), (value, err.code)
            assert f": {name}: " in f"{err}: " or err.code == "bad_sample_rate" and name in str(err), (value, err)
            if json_type(value) not in allowed(row):
                assert err.code == "bad_message" and str(err).startswith(f"{kind}: {name}: "), (value, str(err))
            return
        assert json_type(value) in allowed(row), f"{kind}.{name} accepted {value!r}"
        kept = getattr(message, name)
        assert kept == value and (json_type(kept) == json_type(value) or json_type(value) == "integer"), kept

    check()


def test_integers_have_no_fraction_and_booleans_are_not_numbers() -> None:
    integral = [(r, n) for r in FIELDS for n in names(r["field"]) if allowed(r) & {"integer", "number"}]
    assert integral, "the fields table names integer and number fields"
    for row, name in integral:
        kind = names(row["`type`"])[0]
        for value in (True, False):
            with pytest.raises(ProtocolError, match=f"^{kind}: {name}: "):
                parse_text(json.dumps({"type": kind, **BASE[kind], name: value}))
        if "number" not in allowed(row):
            with pytest.raises(ProtocolError, match=f"^{kind}: {name}: "):
                parse_text(json.dumps({"type": kind, **BASE[kind], name: 16000.0}))


def test_sample_rates_and_the_text_limit_are_the_ones_stated() -> None:
    rates = [row for row in FIELDS if names(row["field"])[0].endswith("_sample_rate")]
    for row in rates:
        assert tuple(int(n) for n in re.findall(r"\d+", row["values"])) == SAMPLE_RATES
    (text,) = [row for row in FIELDS if names(row["`type`"]) == ["text"]]
    limit = int(re.search(r"`limits\.max_text_chars` \((\d+)\)", text["values"]).group(1))
    assert limit == protocol.MAX_TEXT_CHARS == ConnectionLimits().max_text_chars == Settings().limits.max_text_chars
    for n in (limit + 1, 4000):
        with pytest.raises(ProtocolError, match=f"^text: text: must be 1 to {limit} characters"):
            parse_text(json.dumps({"type": "text", "text": "a" * n}))
    assert not re.search(r"\b4000\b", CONTROL), "one text limit"


# -- audio headers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("heading", "header"), [
    ("Client -> server audio (binary)", protocol.CLIENT_AUDIO_HEADER),
    ("Server -> client audio (binary)", protocol.SERVER_AUDIO_HEADER),
])
def test_audio_header_tables_match_the_structs(heading: str, header) -> None:
    (rows,) = tables(section(heading))
    layout = [(int(r["offset"]), r["size"]) for r in rows]
    sizes = [1 if c == "B" else 2 if c == "H" else 4 if c == "I" else 8 for c in header.format.lstrip("<")]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    assert layout[:-1] == [(o, str(s)) for o, s in zip(offsets, sizes, strict=True)]
    assert layout[-1] == (header.size, "n"), "then the PCM"


# -- server -> client ------------------------------------------------------------------------------------
def test_every_session_event_has_its_wire_name_in_the_spec() -> None:
    wire = section("Server -> client events (JSON)")
    for cls in typing.get_args(events.Event):
        if cls is not events.AudioChunk:  # binary
            assert f"`{protocol._event_type(cls.__new__(cls))}`" in wire, cls.__name__


# -- limits, error codes, close codes --------------------------------------------------------------------
def test_the_limits_table_states_the_settings_defaults() -> None:
    (rows,) = tables(section("Limits and close codes"))
    defaults = Settings().model_dump()
    stated = 0
    for row in rows:
        for key, value, unit in re.findall(r"`(\w+\.\w+)` \(([\d.]+)(?: (\w+))?\)", row["setting"]):
            section_name, name = key.split(".")
            expected = float(value) * (1024 if unit == "KiB" else 1)
            assert defaults[section_name][name] == expected, key
            stated += 1
    assert stated >= 6
    assert "| malformed messages | 20 in a row |" in SPEC and ConnectionLimits().malformed_in_a_row == 20
    assert ConnectionLimits().max_text_bytes == protocol.MAX_MESSAGE_BYTES == 16 * 1024 and "over 16 KiB" in CONTROL


# The codes a client can receive in a protocol ``error``: every one is in the spec. ``frame_too_large`` cannot
# reach a client (websockets closes with 1009 first: its max_size is the same limit) and ``send_timeout``
# closes without a message.
UNSENDABLE = {"frame_too_large", "send_timeout"}


def test_every_error_code_the_server_can_send_is_in_the_spec() -> None:
    sources = [Path(protocol.__file__), Path(connection.__file__)]
    codes = {c for p in sources for c in re.findall(r'(?:ProtocolError|Refused)\(\s*"(\w+)"', p.read_text())}
    assert {"bad_json", "bad_message", "unknown_type", "not_ready", "unauthorized"} <= codes
    wire = SPEC[SPEC.index("## Wire format"):]
    for code in sorted(codes - UNSENDABLE):
        assert f"`{code}`" in wire, code


def test_the_close_codes_are_the_documented_ones() -> None:
    listed = re.search(r"^Close codes: (.*?)\n\n", SPEC, re.DOTALL | re.MULTILINE).group(1)
    codes = {int(c) for c in re.findall(r"\b(1\d{3})\b", listed)}
    assert codes == {1000, 1001, 1002, 1007, 1008, 1009, 1011, 1013}
    used = {getattr(connection, n) for n in dir(connection) if n.startswith("CLOSE_")}
    assert used <= codes
