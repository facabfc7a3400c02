"""The language model's server (llama.cpp's, real, with the starter model) killed mid-reply.

voicechat runs as ``run.py`` with ``llm.backend = "openai"`` (scripted speech engines: this is about
the LLM's server). The reply being generated ends with the stage's error, the session goes on, the
other session notices nothing but the same outage, and once the server is back both talk again.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from support.server import run

from voicechat.deploy.engine_servers import llm_server
from voicechat.deploy.processes import ServerProcess
from voicechat.server.client import VoiceClient

pytestmark = pytest.mark.slow

LONG = "Tell me a long story about a lighthouse keeper and the sea, with many details."


async def answered(c: VoiceClient, text: str) -> dict:
    """Ask ``text``; the reply_done of the reply it starts."""
    done = len(c.received.of_type("reply_done"))
    await c.send_json(type="text", text=text)
    return (await c.wait_type("reply_done", done + 1, timeout=120))[-1]


@pytest.mark.timeout(300)
def test_a_killed_llm_server_ends_that_reply_with_the_llm_error_and_both_sessions_talk_once_it_is_back(
        tmp_path: Path):
    token = secrets.token_urlsafe(12)
    llm = llm_server()
    settings = {**llm.settings, "server.host": "127.0.0.1", "server.port": "0", "server.tls": "off",
                "server.token": token, "server.data_dir": str(tmp_path), "llm.retries": "0",
                "llm.max_tokens": "200", "logging.level": "WARNING"}

    async def scenario(url: str) -> None:
        async with VoiceClient(url, token) as a, VoiceClient(url, token) as b:
            await a.wait_type("session")
            await b.wait_type("session")
            assert (await answered(b, "Say hello.")).get("text")  # the server answers at all
            await a.send_json(type="text", text=LONG)
            await a.wait_type("assistant_text_delta", timeout=120)  # a's reply is being generated...
            llm.kill()  # ...when the LLM's server dies
            errors = await a.wait_type("error", timeout=60)
            assert errors[-1]["stage"] == "llm" and errors[-1]["code"].startswith("llm_"), errors
            assert not b.received.of_type("error")  # b had nothing in flight: it saw nothing
            await asyncio.to_thread(llm.start)  # the server comes back on its port
            for c, question in ((a, "What is two plus two?"), (b, "Name a colour.")):
                assert (await answered(c, question)).get("text")
            assert len(a.received.of_type("session")) == 1 and len(b.received.of_type("session")) == 1

    llm.start()
    try:
        with ServerProcess("voicechat", settings, scripted=True) as server:
            run(scenario(server.ws_url))
    finally:
        llm.stop()
