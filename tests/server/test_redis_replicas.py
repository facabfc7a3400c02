"""Two `run.py` processes on one Redis: a client of a killed server resumes on the other with its history."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from support.server import TOKEN, complete_turn, server_process

from voicechat.engines.scripted.llm import scripted_reply
from voicechat.server.client import VoiceClient
from voicechat.session.redis_store import RedisConversationStore

pytestmark = pytest.mark.timeout(180)


def test_a_client_of_a_killed_server_resumes_on_another_with_its_history(tmp_path, redis_server):
    shared = ("sessions.store=redis", f"sessions.redis_url={redis_server.url}")
    question = "remember the blue door"
    with server_process(tmp_path / "a", *shared) as (url, proc):

        async def first_run() -> str:
            async with VoiceClient(url, TOKEN, playback_reports=True) as c:
                (session,) = await c.wait_type("session")
                await complete_turn(c, question)
                return str(session["resume_token"])

        token = asyncio.run(first_run())
        proc.send_signal(signal.SIGKILL)  # no shutdown: only what each change saved as it happened
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL and "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "a" / "conversations").exists()  # it was Redis, not the files

    with server_process(tmp_path / "b", *shared) as (url, proc):  # another replica: its own data dir

        async def second_run() -> tuple[dict[str, Any], dict[str, Any]]:
            async with VoiceClient(url, TOKEN, playback_reports=True, resume=token) as c:
                (session,) = await c.wait_type("session")
                done = await complete_turn(c, "what colour was the door?")
            return session, done

        session, done = asyncio.run(second_run())
    assert session["resumed"] is True and session["resume_error"] is None and session["resume_token"] == token
    assert session["history"] == [{"role": "user", "text": question},
                                  {"role": "assistant", "text": scripted_reply(question, 24)}]
    store = RedisConversationStore(redis_server.url)
    try:
        stored = store.load(token)
    finally:
        store.close()
    assert stored is not None
    assert [c.text for c in stored.changes] == [question, scripted_reply(question, 24),
                                                "what colour was the door?", done["text"]]
