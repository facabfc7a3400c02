"""Churn: 200 sessions come and go; nothing is left behind."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.engines import scripted_engines
from support.helpers import EventCollector, count

from voicechat.audio import AudioFrame
from voicechat.core.events import AudioChunk
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.session.manager import SessionLimits
from voicechat.stt.realtimestt_recognizer import realtimestt_handler_count

SESSIONS = 200
WAVE = 10


def join_new_threads(baseline: set[threading.Thread], timeout: float) -> list[str]:
    """Wait (by joining, not polling) for threads started since ``baseline``; names still alive."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t not in baseline and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threading.enumerate() if t not in baseline and t.is_alive()]


@pytest.mark.timeout(400)
def test_two_hundred_sessions_leave_no_threads_or_handlers(make_manager):
    llm = ScriptedLLM(token_s=0.02, reply_words=60)
    limits = SessionLimits(max_sessions=WAVE, join_timeout_s=2.0)
    manager = make_manager(scripted_engines(llm=llm, partials=False), limits)
    baseline = set(threading.enumerate())
    handlers = realtimestt_handler_count()
    mid_reply = 0

    def lifecycle(i: int) -> bool:
        session = manager.create("test")
        session.pipeline.feed_audio(AudioFrame(bytes(640), 16000))
        if i % 3:
            manager.close(session.id, "churn")
            return False
        collector = EventCollector(session.pipeline)
        session.pipeline.send_text(f"question number {i}")
        collector.wait_for(count(AudioChunk), timeout=30)
        assert session.pipeline.state.value in ("thinking", "assistant_speaking")
        manager.close(session.id, "churn mid-reply")
        assert collector.join(5), "outbox consumer was not released"
        return True

    with ThreadPoolExecutor(WAVE, thread_name_prefix="churn") as pool:
        baseline |= set(threading.enumerate())  # the pool's own threads are not leaks
        mid_reply = sum(pool.map(lifecycle, range(SESSIONS)))

    assert manager.stats.created == SESSIONS and manager.stats.closed == SESSIONS
    assert mid_reply == SESSIONS // 3 + 1
    assert manager.stats.forced_terminations == 0, manager.stats.stuck_threads
    assert len(manager) == 0
    assert join_new_threads(baseline, timeout=20) == []
    assert realtimestt_handler_count() == handlers
    assert len(llm.released) == SESSIONS
