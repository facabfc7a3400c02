"""`python run.py` as a process: SIGTERM with sessions mid-reply exits 0 quickly and leaves no thread."""

from __future__ import annotations

import asyncio
import signal
import time

from server_helpers import TOKEN, server_process

from voicechat.ws_client import VoiceClient


def test_sigterm_with_active_sessions_exits_0_within_10_s(tmp_path):
    with server_process(tmp_path, "llm.scripted_token_s=0.2") as (url, proc):

        async def talk_then_stop() -> list[VoiceClient]:
            clients = [VoiceClient(url, TOKEN) for _ in range(4)]
            for c in clients:
                await c.connect()
                await c.wait_type("session")
                await c.send_json(type="text", text="please talk for a long while")
            for c in clients:
                await c.wait_type("assistant_text_delta")
            proc.send_signal(signal.SIGTERM)
            for c in clients:
                await c.wait_closed(timeout=10)
            return clients

        started = time.monotonic()
        clients = asyncio.run(talk_then_stop())
        _out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, err[-3000:]
    assert elapsed < 10
    for c in clients:
        assert c.received.close_code == 1001 and c.received.of_type("shutdown")
        assert not c.received.of_type("reply_done")  # they really were mid-reply
    assert "threads left: none" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
