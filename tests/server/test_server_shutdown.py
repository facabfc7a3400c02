"""`python run.py` as a process: SIGTERM mid-reply exits 0 quickly, leaves no thread, loses no conversation."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.server import TOKEN, complete_turn, last_state, server_process

from voicechat.engines.scripted.llm import scripted_reply
from voicechat.serve import wait_for_stop
from voicechat.server.client import VoiceClient
from voicechat.session.conversation_store import ConversationStore

N_CLIENTS = 20
# Replies long enough to be mid-way at SIGTERM: about 1.5 s of synthesis; with playback reports a
# reply also stays active until its client says it finished playing.
SLOW = ("llm.scripted_token_s=0.02", "tts.scripted_chunk_s=0.05", f"sessions.max_sessions={N_CLIENTS}")


def stop(proc: subprocess.Popen[str], how: signal.Signals = signal.SIGTERM) -> tuple[float, str]:
    """Send ``how``; seconds until the process exited, and its stderr (the log)."""
    started = time.monotonic()
    proc.send_signal(how)
    _out, err = proc.communicate(timeout=20)
    return time.monotonic() - started, err


def saved(data_dir: Path, token: str) -> list[tuple[str, str]]:
    stored = ConversationStore(data_dir / "conversations").load(token)
    assert stored is not None, "conversation not on disk"
    return [(c.kind, c.text) for c in stored.changes]


def test_sigterm_during_twenty_active_turns_exits_0_within_10_s_and_keeps_every_conversation(tmp_path):
    with server_process(tmp_path, *SLOW) as (url, proc):

        async def talk_then_stop() -> tuple[list[VoiceClient], list[str], float, str]:
            clients = [VoiceClient(url, TOKEN, playback_reports=True) for _ in range(N_CLIENTS)]

            async def join(c: VoiceClient) -> str:
                await c.connect()
                return str((await c.wait_type("session"))[0]["resume_token"])

            tokens = await asyncio.gather(*(join(c) for c in clients))
            firsts = await asyncio.gather(
                *(complete_turn(c, f"first question of client {i}") for i, c in enumerate(clients)))
            for i, c in enumerate(clients):
                await c.send_json(type="text", text=f"second question of client {i}, please talk for a while")
            for c, first in zip(clients, firsts, strict=True):  # until each is hearing its second reply
                await c.wait_for(lambda r, g=first["generation"]: any(a.generation > g for _t, a in r.audio))
            active = [last_state(c.received.messages) for c in clients]
            elapsed, err = await asyncio.to_thread(stop, proc)
            for c in clients:
                await c.wait_closed(timeout=10)
            assert all(state in ("thinking", "assistant_speaking") for state in active), active
            return clients, tokens, elapsed, err

        clients, tokens, elapsed, err = asyncio.run(talk_then_stop())
    assert proc.returncode == 0, err[-3000:]
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert "threads left: none" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for i, (c, token) in enumerate(zip(clients, tokens, strict=True)):
        assert c.received.close_code == 1001 and c.received.of_type("shutdown")
        first = f"first question of client {i}"
        second = f"second question of client {i}, please talk for a while"
        changes = saved(tmp_path, token)
        assert changes[:3] == [("user", first), ("assistant", scripted_reply(first, 24)), ("user", second)]
        # What was heard of the reply cut off by the shutdown, if anything, follows it.
        assert all(kind == "assistant" and scripted_reply(second, 24).startswith(text) for kind, text in changes[3:])


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_client_resuming_after_a_restart_gets_its_conversation_back(tmp_path, how):
    """Stopped, or killed with no chance to clean up (each record is written as it happens)."""
    question = "remember the blue door"
    with server_process(tmp_path) as (url, proc):

        async def first_run() -> str:
            async with VoiceClient(url, TOKEN, playback_reports=True) as c:
                (session,) = await c.wait_type("session")
                await complete_turn(c, question)
                return session["resume_token"]

        token = asyncio.run(first_run())
        _elapsed, err = stop(proc, how)
    assert proc.returncode == (0 if how == signal.SIGTERM else -how) and "Traceback" not in err, err[-3000:]
    heard = [{"role": "user", "text": question}, {"role": "assistant", "text": scripted_reply(question, 24)}]

    with server_process(tmp_path) as (url, proc):

        async def second_run() -> tuple[dict[str, Any], dict[str, Any]]:
            async with VoiceClient(url, TOKEN, playback_reports=True, resume=token) as c:
                (session,) = await c.wait_type("session")
                done = await complete_turn(c, "what colour was the door?")
            return session, done

        session, done = asyncio.run(second_run())
        _elapsed, err = stop(proc)
    assert session["resumed"] is True and session["resume_error"] is None
    assert session["resume_token"] == token
    assert session["history"] == heard
    assert done["text"] == scripted_reply("what colour was the door?", 24)
    # The restored session goes on in the same file.
    assert [text for _kind, text in saved(tmp_path, token)][-2:] == ["what colour was the door?", done["text"]]
    assert "Traceback" not in err, err[-3000:]


def test_the_main_thread_wakes_for_a_signal_delivered_to_another_thread():
    """Linux may hand a process's SIGTERM to any thread; the main thread must still run its handler."""
    stop = threading.Event()
    handled_on: list[str] = []

    def on_signal(_signum: int, _frame: object) -> None:
        handled_on.append(threading.current_thread().name)
        stop.set()

    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def signal_another_thread() -> None:
        """Once the main thread is inside the wait, signal this thread (not the main one), and only it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code.co_name in ("wait_for_stop", "wait"):
                break
            time.sleep(0.001)  # the main thread gives no other sign of having started to wait
        time.sleep(0.05)  # and is asleep in it (were it not yet, the test could only pass wrongly, never fail)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    other = threading.Thread(target=signal_another_thread, name="other")
    # If the wakeup fd did not work, the watchdog ends the wait the old way: the test fails instead of hanging.
    watchdog = threading.Timer(5, signal.pthread_kill, (main, signal.SIGUSR1))
    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        watchdog.start()
        started = time.monotonic()
        other.start()
        wait_for_stop(stop)
        waited = time.monotonic() - started
    finally:
        watchdog.cancel()
        other.join(timeout=10)
        signal.signal(signal.SIGUSR1, previous)
    assert handled_on == ["MainThread"] and waited < 3, (handled_on, waited)
