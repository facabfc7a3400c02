"""A client that stops reading: its memory on the server stays bounded, it is closed after
``send_timeout_s``, its session stays resumable, and everyone else is served meanwhile.

The stuck client is a bare socket with a 4 KiB receive buffer that reads its ``session``
message and then nothing. Its session speaks a long reply (250 s of audio, 8 MB of PCM),
so the server's writer for it blocks in websockets' ``send`` (the write buffer is over its
high-water mark) and its outbox evicts the oldest events. Memory growth is measured with
tracemalloc; run with ``-s`` to see the figures.

On loopback the kernel grows a socket's send buffer up to ``net.ipv4.tcp_wmem``'s maximum
(4 MiB here), enough to swallow seconds of audio before ``send`` ever waits; the test pins
the server side's ``SO_SNDBUF`` to 32 KiB, as a slow Wi-Fi link would, so that it blocks at once.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc
from collections.abc import Callable

from support.engines import scripted_engines
from support.raw_ws import RawWebSocket
from support.server import client, run, running_server

from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.server.connection import ConnectionLimits
from voicechat.session.manager import SessionLimits

REPLY_WORDS, SECONDS_PER_WORD, RATE = 250, 1.0, 16000
CHUNK_BYTES = RATE * 40 // 1000 * 2  # ScriptedTTS's 40 ms chunks

# Where the audio of a stuck client could pile up: our code, the WebSocket library, the event loop.
SERVING_PATH = [tracemalloc.Filter(True, f"*{part}*") for part in ("voicechat", "websockets", "asyncio")]


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for a server-side condition (no event reaches the test's loop); the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def talkative_manager(make_manager):
    return make_manager(
        scripted_engines(llm=ScriptedLLM(reply_words=REPLY_WORDS),
                         tts=ScriptedTTS(sample_rate=RATE, seconds_per_word=SECONDS_PER_WORD)),
        SessionLimits(resume_grace_s=60),
    )


def stuck_client(server) -> tuple[RawWebSocket, dict[str, object]]:
    """Hello, read the session message, ask for a long reply, then never read again."""
    raw = RawWebSocket(server.port, rcvbuf=4096)
    raw.send_json(type="hello", token=server.token, output_sample_rate=RATE)
    session = raw.read_json()
    assert session["type"] == "session", session
    ws = server_side(server, raw)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    raw.send_json(type="text", text="tell me everything")
    return raw, session


def server_side(server, raw: RawWebSocket):
    """The server's connection object for this raw client."""
    for ws in list(server._connections):
        if ws.remote_address and ws.remote_address[1] == raw.local_port:
            return ws
    return None


def test_a_client_that_stops_reading_is_bounded_then_closed(make_manager, tmp_path):
    send_timeout_s = 3.0
    limits = ConnectionLimits(send_timeout_s=send_timeout_s, close_timeout_s=1.0)
    manager = talkative_manager(make_manager)
    figures: dict[str, float] = {}

    async def scenario(server):
        async with client(server) as bystander:
            await bystander.wait_type("session")
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                raw, session = await asyncio.to_thread(stuck_client, server)
                asked = time.monotonic()
                stuck = manager.get(str(session["session_id"]))
                assert stuck is not None
                outbox = stuck.pipeline.outbox
                ws = server_side(server, raw)
                assert ws is not None
                # Well past what the socket buffers hold: the outbox is evicting. Twice as much again later
                # costs no more memory.
                await until(lambda: outbox.evicted >= 2000, 30, "outbox eviction")
                figures["traced_growth_mb"] = (tracemalloc.get_traced_memory()[0] - baseline) / 1e6
                before = tracemalloc.take_snapshot().filter_traces(SERVING_PATH)
                figures["serving_growth_mb"] = sum(s.size for s in before.statistics("filename")) / 1e6
                await until(lambda: outbox.evicted >= 5000, 30, "more outbox eviction")
                figures["traced_growth_later_mb"] = (tracemalloc.get_traced_memory()[0] - baseline) / 1e6
                # Only what the serving path allocated: other tests' leftover daemon threads share the process.
                after = tracemalloc.take_snapshot().filter_traces(SERVING_PATH)
                growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
                figures["serving_growth_later_mb"] = growth / 1e6
                figures["traced_peak_mb"] = (tracemalloc.get_traced_memory()[1] - baseline) / 1e6
            finally:
                tracemalloc.stop()
            figures["outbox_len"] = len(outbox)
            figures["write_buffer_kb"] = ws.transport.get_write_buffer_size() / 1024
            figures["evicted_mb"] = outbox.evicted * CHUNK_BYTES / 1e6
            assert len(outbox) <= outbox.maxsize
            assert ws.transport.get_write_buffer_size() <= 64 * 1024  # websockets' high-water mark + a frame or two
            # While 2.5+ MB of audio was produced and dropped: the full outbox (512 chunks, 0.67 MB) and little else.
            assert figures["serving_growth_mb"] < 1.5, figures
            assert figures["serving_growth_later_mb"] < 0.5, figures  # while 3.8 MB more was dropped

            # The bystander is served while the other writer is blocked.
            await bystander.send_json(type="text", text="are you fine")
            (done,) = await bystander.wait_type("reply_done")
            assert done["text"].startswith("You said: are you fine")
            assert bystander.received.close_code is None

            # Closed after send_timeout_s of not reading; the session detached, not closed.
            await until(lambda: not stuck.connected, send_timeout_s + 15, "disconnect")
            figures["closed_after_s"] = asked_to_close = time.monotonic() - asked
            assert send_timeout_s <= asked_to_close <= send_timeout_s + limits.close_timeout_s + 10
            assert manager.get(stuck.id) is stuck
            assert await until(lambda: server_side(server, raw) is None, 10, "connection gone") >= 0
            raw.close()

            async with client(server, resume=str(session["resume_token"])) as again:
                (resumed,) = await again.wait_type("session")
                assert resumed["resumed"] and resumed["history"][0]["text"] == "tell me everything"
            await bystander.send_json(type="text", text="still fine")
            await bystander.wait_type("reply_done", 2)

    with running_server(manager, tmp_path, limits=limits) as server:
        run(scenario(server))
        closes = server.metrics.closes.labels("1008")._value.get()
    assert closes >= 1
    print(f"\nstuck client: {figures}")


def test_a_client_that_stops_reading_cannot_hold_up_shutdown(make_manager, tmp_path):
    manager = talkative_manager(make_manager)
    limits = ConnectionLimits(send_timeout_s=600.0, close_timeout_s=1.0)  # only shutdown can end it here

    with running_server(manager, tmp_path, limits=limits, shutdown_timeout_s=2.0) as server:
        raw, session = stuck_client(server)
        outbox = manager.get(str(session["session_id"])).pipeline.outbox
        run(until(lambda: outbox.evicted > 0, 30, "outbox eviction"))
        start = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - start
        raw.close()
    assert stopped_in < 2.0 + 2.0, stopped_in
