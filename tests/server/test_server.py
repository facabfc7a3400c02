"""The LAN server over real sockets: HTTP routes, auth, Origin, bad input, isolation, resume, metrics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from support.engines import scripted_engines
from support.helpers import SENTENCES, utterance
from support.server import (
    TOKEN,
    client,
    http_get,
    http_json,
    run,
    running_server,
    server_process,
    ws_url,
)

from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.server.client import VoiceClient
from voicechat.server.connection import ConnectionLimits
from voicechat.server.protocol import CLIENT_AUDIO_HEADER, encode_client_audio
from voicechat.server.routes import HttpRoutes
from voicechat.server.tls import cert_fingerprint
from voicechat.stt.frontend import ListeningFrontEnd


def test_http_routes(make_manager, tmp_path):
    with running_server(make_manager(), tmp_path) as server:
        status, page = http_get(server, "/")
        assert status == 200 and b"<html" in page.lower()
        assert http_json(server, "/health") == {"status": "ok"}
        detailed = http_json(server, "/health/detailed")
        for key in ("sessions", "system", "engines", "models", "uptime_s", "server"):
            assert key in detailed
        assert detailed["engines"]["llm"]["engine"] == "ScriptedLLM"
        assert detailed["system"]["threads"]["count"] > 0
        for bad in ("/nope", "/static/../server/server.py", "/static/%2e%2e/server/server.py",
                    "/static/..%2fserver%2fserver.py", "/static//etc/passwd", "/static/"):
            assert http_get(server, bad)[0] == 404, bad
        status, text = http_get(server, "/metrics")
        assert status == 200 and b"voicechat_sessions_active" in text


def test_token_required(make_manager, tmp_path):
    async def scenario(server):
        for token in (None, "", "wrong-token"):
            c = client(server, token=None)
            await c.connect(hello=False)
            if token is not None:
                await c.send_json(type="hello", token=token)
            else:
                await c.send_json(type="text", text="let me in")  # not a hello: refused, still waiting
                await c.wait_type("error")
                assert c.received.of_type("error")[0]["code"] == "not_ready"
                await c.send_json(type="hello", token="")
            assert await c.wait_closed() == 1008
            assert c.received.of_type("error")[-1]["code"] == "unauthorized"
            assert not c.received.of_type("session")
        async with client(server) as good:
            (session,) = await good.wait_type("session")
            assert session["resumed"] is False and session["resume_token"]

    # The growing delay after wrong tokens has its own test (test_server_abuse.py).
    with running_server(make_manager(), tmp_path, auth_delay_s=0.0) as server:
        run(scenario(server))


def test_hello_timeout(make_manager, tmp_path):
    async def scenario(server):
        c = client(server, token=None)
        await c.connect(hello=False)
        assert await c.wait_closed(timeout=10) == 1008
        assert c.received.of_type("error")[0]["code"] == "hello_timeout"

    with running_server(make_manager(), tmp_path, limits=ConnectionLimits(hello_timeout_s=0.5)) as server:
        run(scenario(server))


def test_origin_checked(make_manager, tmp_path):
    async def scenario(server):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await client(server, origin="https://evil.example").connect()
        assert refused.value.response.status_code == 403
        for origin in (f"http://127.0.0.1:{server.port}", "https://voice.example"):
            async with client(server, origin=origin) as ok:
                await ok.wait_type("session")

    with running_server(make_manager(), tmp_path, allowed_origins=("https://voice.example",)) as server:
        run(scenario(server))


def test_bad_frames_get_errors_and_the_connection_goes_on(make_manager, tmp_path):
    bad = [
        ("not json", "bad_json"), ('["a list"]', "bad_message"), ('{"type": "launch"}', "unknown_type"),
        ('{"type": "text", "text": ""}', "bad_message"), ('{"type": "mute"}', "bad_message"),
        ('{"type": "hello", "token": "x"}', "bad_message"),
        (b"\x01", "bad_audio_frame"), (b"\x07" + bytes(CLIENT_AUDIO_HEADER.size), "bad_audio_frame"),
        (CLIENT_AUDIO_HEADER.pack(1, 9, 0, 0, 0) + b"\0\0", "bad_version"),
        (encode_client_audio(0, 0, b"\0\0\0"), "bad_audio_frame"),
    ]

    async def scenario(server):
        async with client(server) as c:
            await c.wait_type("session")
            for n, (frame, _code) in enumerate(bad, start=1):
                await c.send_raw(frame)
                await c.wait_type("error", n)
            assert [e["code"] for e in c.received.of_type("error")] == [code for _f, code in bad]
            await c.send_json(type="ping", t=1.5)
            (pong,) = await c.wait_type("pong")
            assert pong["t"] == 1.5
            await c.send_json(type="text", text="still here")
            done = await c.wait_type("reply_done")
            assert done[0]["text"].startswith("You said: still here")

    with running_server(make_manager(), tmp_path) as server:
        run(scenario(server))


def test_abuse_closes_only_that_connection(make_manager, tmp_path):
    limits = ConnectionLimits(max_messages_per_second=20, max_frame_bytes=4096, malformed_in_a_row=5)

    async def scenario(server):
        async with client(server) as bystander, client(server) as malformed, client(server) as flood, \
                client(server) as big:
            for c in (bystander, malformed, flood, big):
                await c.wait_type("session")
            for _ in range(5):
                await malformed.send_raw("{")
            await big.send_raw(encode_client_audio(0, 0, bytes(8000)))
            for _ in range(200):
                try:
                    await flood.send_json(type="ping")
                except websockets.ConnectionClosed:
                    break
            assert await malformed.wait_closed() == 1008
            assert [e["code"] for e in malformed.received.of_type("error")] == ["bad_json"] * 5  # one each
            assert await big.wait_closed() == 1009
            assert await flood.wait_closed() == 1008
            assert any(e["code"] == "rate_limited" for e in flood.received.of_type("error"))
            await bystander.send_json(type="text", text="are you fine")
            done = await bystander.wait_type("reply_done")
            assert done[0]["text"].startswith("You said: are you fine")
            assert bystander.received.close_code is None

    with running_server(make_manager(), tmp_path, limits=limits) as server:
        run(scenario(server))


def test_twenty_clients_each_hear_only_their_own_conversation(tmp_path):
    """20 browsers' worth of real-time speech into a server process (real VAD; STT and LLM scripted)."""
    n = 20
    assert len(set(SENTENCES[:n])) == n

    async def speak(url: str, text: str):
        async with VoiceClient(url, TOKEN) as c:
            await c.wait_type("session")
            await c.stream(utterance(text, after_s=0.5))
            silence = c.keep_streaming_silence()
            await c.wait_type("reply_done", timeout=90)
            silence.cancel()
            return c.received

    async def scenario(url: str):
        return await asyncio.gather(*(speak(url, SENTENCES[i]) for i in range(n)))

    with server_process(tmp_path, f"sessions.max_sessions={n}") as (url, _proc):
        results = run(scenario(url))
    for text, received in zip(SENTENCES[:n], results, strict=True):
        finals = [m["text"] for m in received.of_type("final_transcript")]
        assert finals == [text]
        assert [m["text"] for m in received.of_type("reply_done")] == [scripted_reply(text, 24)]
        deltas = "".join(m["text"] for m in received.of_type("assistant_text_delta"))
        assert deltas.strip() == scripted_reply(text, 24)
        assert received.audio, "no reply audio"
        assert {a.generation for _t, a in received.audio} == {received.of_type("reply_done")[0]["generation"]}


def test_resume_keeps_the_conversation(make_manager, tmp_path):
    from voicechat.session.manager import SessionLimits

    manager = make_manager(limits=SessionLimits(resume_grace_s=30))

    async def scenario(server):
        async with client(server, playback_reports=True) as first:
            (session,) = await first.wait_type("session")
            await first.send_json(type="text", text="remember the blue door")
            (done,) = await first.wait_type("reply_done")
            # The reply joins the history once it has been heard: report it played out.
            await first.send_json(type="playback", generation=done["generation"],
                                  played_samples=done["total_samples"], finished=True)
            await first.wait_for(lambda r: r.of_type("state_changed")[-1]["state"] == "listening")
        async with client(server, resume=session["resume_token"]) as again:
            (resumed,) = await again.wait_type("session")
        async with client(server, resume="not-a-token") as stranger:
            (fresh,) = await stranger.wait_type("session")
        return session, resumed, fresh

    with running_server(manager, tmp_path) as server:
        session, resumed, fresh = run(scenario(server))
    assert resumed["resumed"] is True and resumed["session_id"] == session["session_id"]
    assert resumed["history"][0] == {"role": "user", "text": "remember the blue door"}
    assert resumed["history"][1]["role"] == "assistant"
    assert resumed["history"][1]["text"].startswith("You said: remember the blue door")
    assert fresh["resumed"] is False and fresh["session_id"] != session["session_id"] and fresh["resume_error"]
    assert fresh["history"] == []


def test_leaving_mid_reply_keeps_what_was_heard(make_manager, tmp_path):
    from voicechat.session.manager import SessionLimits

    manager = make_manager(
        scripted_engines(llm=ScriptedLLM(reply_words=300, token_s=0.005)), SessionLimits(resume_grace_s=30)
    )

    async def scenario(server):
        async with client(server, playback_reports=True) as first:
            (session,) = await first.wait_type("session")
            await first.send_json(type="text", text="tell me everything")
            await first.wait_for(lambda r: len(r.audio) >= 3)
            generation = first.received.audio[0][1].generation
            # Heard about the first words' worth, then the phone's screen went off.
            await first.send_json(type="playback", generation=generation, played_samples=16000, finished=False)
            await first.send_json(type="ping")
            await first.wait_type("pong")
        async with client(server, resume=session["resume_token"]) as again:
            (resumed,) = await again.wait_type("session")
            await again.send_json(type="ping")
            await again.wait_type("pong")
            return resumed, again.received

    with running_server(manager, tmp_path) as server:
        resumed, received = run(scenario(server))
    assert resumed["resumed"] and resumed["state"] == "listening"
    user, assistant = resumed["history"]
    assert user == {"role": "user", "text": "tell me everything"}
    heard = assistant["text"]
    assert heard and scripted_reply("tell me everything", 300).startswith(heard.rstrip(".…"))
    assert len(heard) < len(scripted_reply("tell me everything", 300)) / 2
    assert not received.of_type("reply_done")  # the cut reply does not go on playing after the resume


def test_metrics_count_what_happened(make_manager, tmp_path):
    async def scenario(server):
        async with client(server) as a, client(server) as b:
            for c in (a, b):
                await c.wait_type("session")
                await c.send_json(type="text", text="count me")
            for c in (a, b):
                await c.wait_type("turn_metrics")
            await a.send_raw("nonsense")
            await a.wait_type("error")
            await a.stream(np.zeros(1600, dtype=np.int16))  # 5 frames of silence

    manager = make_manager()
    with running_server(manager, tmp_path) as server:
        run(scenario(server))
        status, text = http_get(server, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("voicechat_turns_total", ())] == 2
    assert samples[("voicechat_ws_connections_opened_total", ())] == 2
    assert samples[("voicechat_protocol_errors_total", (("code", "bad_json"),))] == 1
    assert samples[("voicechat_audio_frames_received_total", ())] == 5
    assert samples[("voicechat_sessions_created_total", ())] == 2
    assert samples[("voicechat_stage_latency_seconds_count", (("stage", "llm_first_token"),))] == 2
    assert samples[("voicechat_audio_frames_sent_total", ())] > 0
    if isinstance(getattr(manager.engines.recognizer_factory, "frontend", None), ListeningFrontEnd):
        assert samples[("voicechat_vad_passes_total", (("kind", "tick"),))] > 0  # the front end heard the silence
        assert samples[("voicechat_vad_chunks_total", ())] >= 2  # 5 frames of 20 ms: at least 2 chunks of 32 ms
        assert samples[("voicechat_vad_probes_total", ())] == 0  # silence: no onset to look for between chunks
        assert samples[("voicechat_vad_errors_total", ())] == 0


def test_server_full_is_refused_with_1013(make_manager, tmp_path):
    from voicechat.session.manager import SessionLimits

    async def scenario(server):
        async with client(server) as one:
            await one.wait_type("session")
            two = client(server)
            await two.connect()
            assert await two.wait_closed() == 1013
            assert two.received.of_type("error")[0]["code"] == "server_full"

    with running_server(make_manager(limits=SessionLimits(max_sessions=1)), tmp_path) as server:
        run(scenario(server))


def test_shutdown_tells_clients_and_leaves_no_threads(make_manager, tmp_path, thread_baseline):
    import threading

    manager = make_manager(scripted_engines(llm=ScriptedLLM(reply_words=200, token_s=0.02)))

    async def scenario(server):
        clients = [client(server) for _ in range(3)]
        for c in clients:
            await c.connect()
            await c.wait_type("session")
            await c.send_json(type="text", text="talk for a while")
        for c in clients:
            await c.wait_type("assistant_text_delta")
        await asyncio.to_thread(server.stop)
        for c in clients:
            assert await c.wait_closed() == 1001
            assert c.received.of_type("shutdown")

    with running_server(manager, tmp_path) as server:
        run(scenario(server))
    manager.shutdown()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ws-server")]
    assert len(manager) == 0


def test_tls_with_self_signed_certificate(make_manager, tmp_path):
    import ssl

    async def scenario(server):
        context = ssl.create_default_context(cafile=str(server.cert_file))
        async with VoiceClient(ws_url(server).replace("127.0.0.1", "localhost"), TOKEN, ssl_context=context) as c:
            await c.wait_type("session")
        with pytest.raises(ssl.SSLCertVerificationError):
            await VoiceClient(ws_url(server), TOKEN, ssl_context=ssl.create_default_context()).connect()

    with running_server(make_manager(), tmp_path, tls="on") as server:
        assert server.scheme == "https" and server.cert_file is not None
        assert server.urls()[0].startswith("https://")
        run(scenario(server))


def test_metrics_and_detailed_health_need_the_token_from_the_lan(make_manager, tmp_path):
    from types import SimpleNamespace

    from websockets.datastructures import Headers
    from websockets.http11 import Request

    with running_server(make_manager(), tmp_path) as server:
        routes = HttpRoutes(TOKEN, server.metrics, server.detailed_health, lambda: False)
        lan = SimpleNamespace(remote_address=("192.168.1.23", 50000))
        local = SimpleNamespace(remote_address=("127.0.0.1", 50000))

        def status(conn, path: str, auth: str | None = None) -> int:
            headers = Headers({"Authorization": auth} if auth else {})
            return run(routes.handle(conn, Request(path, headers))).status_code

        for path in ("/metrics", "/health/detailed"):
            assert status(lan, path) == 401
            assert status(lan, path, "Bearer wrong") == 401
            assert status(lan, f"{path}?token=wrong") == 401
            assert status(lan, path, f"Bearer {TOKEN}") == 200
            assert status(lan, f"{path}?token={TOKEN}") == 200
            assert status(local, path) == 200
        assert status(lan, "/health") == 200


def test_banner_shows_every_join_url_a_qr_code_and_the_fingerprint(make_manager, tmp_path):
    from voicechat.serve import banner

    with running_server(make_manager(), tmp_path, host="0.0.0.0", tls="auto") as server:
        text = banner(server)
    assert server.scheme == "https"
    for url in server.urls():
        assert url in text and url.endswith(f"#token={TOKEN}")
    assert "▀" in text or "█" in text  # the QR code, drawn with half blocks
    assert cert_fingerprint(server.cert_file) in text


def test_resume_takes_over_a_connection_that_has_not_noticed_it_is_gone(make_manager, tmp_path):
    async def scenario(server):
        old = client(server)
        await old.connect()
        (session,) = await old.wait_type("session")
        async with client(server, resume=session["resume_token"]) as new:  # e.g. a page reloaded at once
            (resumed,) = await new.wait_type("session")
            assert resumed["resumed"] and resumed["session_id"] == session["session_id"]
            assert await old.wait_closed() == 1000
            await new.send_json(type="text", text="still me")  # the old connection's end did not detach us
            (done,) = await new.wait_type("reply_done")
            assert done["text"].startswith("You said: still me")
            assert server.manager.get(session["session_id"]).connected

    with running_server(make_manager(), tmp_path) as server:
        run(scenario(server))
