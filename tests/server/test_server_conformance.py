"""The server over a real socket does what docs/protocol.md says: message fields, strict types, the one
text limit, one error per malformed message, rate-limit answers, mute across a resume, generations.

One server for the module; each test uses its own connections (limits are per connection). The spec's
tables themselves are walked in test_protocol_conformance.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator

import pytest
from support.engines import scripted_engines
from support.server import client, run, running_server
from test_protocol_conformance import (
    BASE,
    FIELDS,
    JSON_TYPES,
    allowed,
    names,
    section,
    tables,
)

from voicechat.server.client import VoiceClient
from voicechat.server.connection import ConnectionLimits
from voicechat.server.protocol import CLIENT_AUDIO_HEADER, MAX_TEXT_CHARS, encode_client_audio
from voicechat.server.server import VoiceServer
from voicechat.session.manager import SessionLimits, SessionManager
from voicechat.session.pipeline import PipelineOptions

MALFORMED_IN_A_ROW = 5
RATE = 200  # the default; the answered() pings of one test stay within its one-second burst
WRONG_TYPE = {"boolean": True, "integer": 5, "number": 2.5, "string": "5", "null": None}  # a value of each


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[VoiceServer, SessionManager]]:
    limits = SessionLimits(resume_grace_s=30)
    manager = SessionManager(scripted_engines(), limits, PipelineOptions(join_timeout_s=limits.join_timeout_s))
    manager.start()
    connection = ConnectionLimits(malformed_in_a_row=MALFORMED_IN_A_ROW, max_messages_per_second=RATE)
    try:
        with running_server(manager, tmp_path_factory.mktemp("conformance"), limits=connection) as server:
            yield server, manager
    finally:
        manager.shutdown()
        manager.engines.close()


async def answered(c: VoiceClient, data: str | bytes) -> dict[str, object] | None:
    """Send one frame, then a ping: what the frame got (an error), or None when only the pong came."""
    before = len(c.received.of_type("error"))
    marker = time.monotonic()
    await c.send_raw(data)
    await c.send_json(type="ping", t=marker)
    await c.wait_for(lambda r: any(p["t"] == marker for p in r.of_type("pong")))
    errors = c.received.of_type("error")[before:]
    assert len(errors) <= 1, errors
    return errors[0] if errors else None


def spec_fields(kind: str) -> set[str]:
    (rows,) = tables(section("Server -> client messages that are not session events (JSON)"))
    (row,) = [r for r in rows if names(r["`type`"]) == [kind]]
    return {"type", *names(row["fields"])}


def test_server_messages_have_exactly_the_fields_the_spec_lists(served):
    server, _manager = served

    async def scenario():
        async with client(server) as c:
            (session,) = await c.wait_type("session")
            error = await answered(c, "not json")
            await c.send_json(type="ping")
            pong = (await c.wait_type("pong", 2))[-1]
            return session, error, pong

    session, error, pong = run(scenario())
    assert set(session) == spec_fields("session") and session["max_text_chars"] == MAX_TEXT_CHARS
    assert (session["muted"], session["resumed"], session["history"]) == (False, False, [])
    assert set(error) == spec_fields("error") and (error["stage"], error["generation"]) == ("protocol", 0)
    assert set(pong) == spec_fields("pong") and pong["t"] is None


def test_wrong_json_types_are_refused_naming_the_field_and_change_nothing(served):
    """Each control field with a value of a JSON type the fields table does not allow, after the hello."""
    server, manager = served
    cases = [(kind, name, value) for row in FIELDS for kind in names(row["`type`"]) if kind != "hello"
             for name in names(row["field"]) for t, value in WRONG_TYPE.items() if t not in allowed(row)]
    assert len(cases) > 20

    async def scenario():
        async with client(server) as c:
            (session,) = await c.wait_type("session")
            for kind, name, value in cases:
                error = await answered(c, json.dumps({"type": kind, **BASE[kind], name: value}))
                assert error and error["code"] == "bad_message", (kind, name, value, error)
                assert error["message"].startswith(f"{kind}: {name}: "), error
            # Found by an independent client: "false" muted the session, true was echoed as 1.0.
            assert manager.get(session["session_id"]).pipeline.capture.muted is False
            assert not c.received.of_type("final_transcript"), "no text reached the session"
            assert c.received.close_code is None

    run(scenario())


def test_a_hello_with_wrong_types_is_refused_and_the_connection_waits_for_a_good_one(served):
    server, _manager = served

    async def scenario():
        c = client(server, token=None)
        await c.connect(hello=False)
        for field, value in (("playback_reports", "yes"), ("input_sample_rate", "16000"), ("resume", 5)):
            await c.send_json(type="hello", token=server.token, **{field: value})
            (error,) = (await c.wait_type("error", len(c.received.of_type("error")) + 1))[-1:]
            assert error["code"] == "bad_message" and error["message"].startswith(f"hello: {field}: ")
        await c.send_json(type="hello", token=server.token)
        await c.wait_type("session")
        await c.close()

    run(scenario())


def test_one_text_limit(served):
    server, _manager = served

    async def scenario():
        async with client(server) as c:
            await c.wait_type("session")
            for text in ("a" * (MAX_TEXT_CHARS + 1), "a" * 4000, "a" * 4001, "   ", ""):
                error = await answered(c, json.dumps({"type": "text", "text": text}))
                assert error["code"] == "bad_message", (len(text), error)
                assert f"1 to {MAX_TEXT_CHARS} characters" in error["message"], error
            await c.send_json(type="text", text="b" * MAX_TEXT_CHARS)
            (final,) = await c.wait_type("final_transcript")
            assert final["text"] == "b" * MAX_TEXT_CHARS
            await c.wait_type("reply_done")

    run(scenario())


def test_exactly_one_error_per_malformed_message_then_1008(served):
    server, _manager = served

    async def scenario():
        async with client(server) as c:
            await c.wait_type("session")
            for _ in range(MALFORMED_IN_A_ROW - 2):
                await c.send_raw("{")
            await c.wait_type("error", MALFORMED_IN_A_ROW - 2)
            assert await answered(c, "{")  # one short of the limit; the ping after it starts the count again
            for _ in range(MALFORMED_IN_A_ROW):
                await c.send_raw("[]")
            assert await c.wait_closed() == 1008
            codes = [e["code"] for e in c.received.of_type("error")]
            assert codes == ["bad_json"] * (MALFORMED_IN_A_ROW - 1) + ["bad_message"] * MALFORMED_IN_A_ROW

    run(scenario())


def test_dropped_messages_are_told_once_then_at_most_once_a_second(served):
    server, _manager = served

    async def scenario():
        async with client(server) as c:
            await c.wait_type("session")
            for i in range(RATE + 60):  # a second's burst, then 60 over (below two seconds' worth: no close)
                await c.send_json(type="ping", t=i)
            await c.wait_for(lambda r: len(r.of_type("pong")) >= RATE)
            await asyncio.sleep(1.5)  # the limiter counts time: let the overdraft be paid back
            await c.send_json(type="ping", t=-1)
            await c.wait_for(lambda r: any(p["t"] == -1 for p in r.of_type("pong")))
            told = [t for t, e in c.received.timed("error") if e["code"] == "rate_limited"]
            pongs = [p for p in c.received.of_type("pong") if p["t"] != -1]
            return told, pongs, c.received.close_code

    told, pongs, closed = run(scenario())
    assert closed is None
    assert len(pongs) < RATE + 60, "some were dropped, unanswered"
    assert told, "the first dropped message is told"
    assert all(b - a > 0.9 for a, b in itertools.pairwise(told)), "then at most once a second"  # 0.1 s: network


def test_refusals_that_leave_the_connection_open(served):
    server, _manager = served
    oversized = json.dumps({"type": "text", "text": "a" * (16 * 1024)})
    reserved = CLIENT_AUDIO_HEADER.pack(1, 1, 1, 0, 0) + b"\0\0"

    async def scenario():
        async with client(server) as c:
            await c.wait_type("session")
            refused = [await answered(c, data) for data in (
                oversized, reserved, json.dumps({"type": "hello", "token": server.token}),
                json.dumps({"type": "ping", "t": True}), json.dumps({"type": "launch"}),
            )]
            assert await answered(c, encode_client_audio(0, 0, bytes(640))) is None  # good audio: no answer
            assert [e["code"] for e in refused] == [
                "message_too_large", "bad_audio_frame", "bad_message", "bad_message", "unknown_type"]
            await c.send_raw(encode_client_audio(0, 0, bytes(70000)))
            assert await c.wait_closed() == 1009

    run(scenario())


def test_mute_is_kept_across_a_resume(served):
    server, manager = served

    async def scenario():
        async with client(server) as first:
            (session,) = await first.wait_type("session")
            await answered(first, json.dumps({"type": "mute", "muted": True}))
        async with client(server, resume=session["resume_token"]) as again:
            (resumed,) = await again.wait_type("session")
            live = manager.get(resumed["session_id"])
            assert resumed["resumed"] and resumed["muted"] is True and live.pipeline.capture.muted
            await answered(again, json.dumps({"type": "mute", "muted": False}))
            assert not live.pipeline.capture.muted

    run(scenario())


def test_a_turn_and_its_reply_carry_one_generation(served):
    server, _manager = served

    async def scenario():
        async with client(server, playback_reports=True) as c:
            await c.wait_type("session")
            for n, text in enumerate(("first question", "second question"), start=1):
                await c.send_json(type="text", text=text)
                done = (await c.wait_type("reply_done", n))[-1]
                await c.send_json(type="playback", generation=done["generation"],
                                  played_samples=done["total_samples"], finished=True)
                await c.wait_for(lambda r, n=n: any(s["state"] == "listening" and s["generation"] == n + 1
                                                    for s in r.of_type("state_changed")))
            return c.received

    received = run(scenario())
    for n in (1, 2):
        turn = [m for m in received.messages if m.get("generation") == n and m["type"] != "state_changed"]
        assert [m["type"] for m in turn][:2] == ["final_transcript", "assistant_text_delta"]
        assert {"reply_done", "turn_metrics"} <= {m["type"] for m in turn}
    assert {a.generation for _t, a in received.audio} == {1, 2}
    states = [(s["state"], s["generation"]) for s in received.of_type("state_changed")]
    assert states[:3] == [("thinking", 1), ("assistant_speaking", 1), ("listening", 2)]


def test_every_json_type_in_the_fields_table_is_one_the_tests_know():
    assert {t for row in FIELDS for t in allowed(row)} <= set(JSON_TYPES) == set(WRONG_TYPE)
