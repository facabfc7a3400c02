"""Memory pressure: levels, the monitor thread, and what the SessionManager does at each level."""

from __future__ import annotations

import queue
import threading

import pytest
from support.engines import scripted_engines

from voicechat.memory.monitor import MB, Level, MemoryLimits, MemoryMonitor, MemoryReading, classify, read_memory
from voicechat.server.metrics import ServerMetrics
from voicechat.session.conversation_store import ConversationStore
from voicechat.session.manager import AdmissionError, SessionLimits, SessionManager
from voicechat.session.pipeline import PipelineOptions

LIMITS = MemoryLimits(soft_rss_mb=800, hard_rss_mb=1000, soft_system_percent=90, hard_system_percent=95,
                      pressure_history_tokens=100)


def reading(rss_mb: float = 100, percent: float = 10) -> MemoryReading:
    return MemoryReading(int(rss_mb * MB), percent, 8000 * MB)


class FakeMemory:
    """An injectable reading the test sets (thread-safe enough: one attribute swap)."""

    def __init__(self) -> None:
        self.now = reading()

    def __call__(self) -> MemoryReading:
        return self.now


def test_classify_by_rss_and_system_use_hardest_first():
    assert classify(reading(), LIMITS) == (Level.OK, "")
    assert classify(reading(rss_mb=900), LIMITS) == (Level.SOFT, "RSS 900 MB > limit 800 MB")
    assert classify(reading(rss_mb=1234), LIMITS) == (Level.HARD, "RSS 1234 MB > limit 1000 MB")
    assert classify(reading(percent=92), LIMITS) == (Level.SOFT, "system memory 92% in use > limit 90%")
    assert classify(reading(rss_mb=900, percent=96), LIMITS)[0] is Level.HARD
    off = MemoryLimits(soft_rss_mb=0, hard_rss_mb=0, soft_system_percent=0, hard_system_percent=0)
    assert classify(reading(rss_mb=10**6, percent=100), off) == (Level.OK, "")


def test_the_real_reading_is_plausible():
    now = read_memory()
    assert 10 * MB < now.rss_bytes < 100_000 * MB and 0 < now.system_percent <= 100


def test_the_thread_checks_at_start_and_every_interval_and_stops_at_once():
    memory = FakeMemory()
    levels: queue.Queue[Level] = queue.Queue()
    monitor = MemoryMonitor(MemoryLimits(hard_rss_mb=1000, check_interval_s=0.02), memory)
    monitor.start(levels.put)
    assert levels.get(timeout=10) is Level.OK
    memory.now = reading(rss_mb=2000)
    while levels.get(timeout=10) is not Level.HARD:
        pass
    monitor.stop(timeout=10)
    assert not any(t.name == "memory-monitor" for t in threading.enumerate())
    slow = MemoryMonitor(MemoryLimits(check_interval_s=3600), memory)
    slow.start(levels.put)
    levels.get(timeout=10)
    slow.stop(timeout=10)  # wakes the hour-long wait at once
    assert not any(t.name == "memory-monitor" for t in threading.enumerate())
    assert monitor.snapshot()["level"] == "hard" and monitor.stats.level_changes == 1


@pytest.fixture
def pressured(tmp_path):
    """A manager with a store and a monitor the test drives by hand (no thread)."""
    memory = FakeMemory()
    monitor = MemoryMonitor(LIMITS, memory, run_thread=False)
    store = ConversationStore(tmp_path)
    limits = SessionLimits(resume_grace_s=300)
    manager = SessionManager(scripted_engines(), limits, PipelineOptions(history_max_tokens=2000),
                             store=store, memory=monitor)
    manager.start()
    yield manager, memory, monitor
    manager.shutdown()
    manager.engines.close()


def long_history(session, turns: int = 20) -> None:
    for i in range(turns):
        session.pipeline.history.add_user(f"question {i} " + "words " * 10)
        session.pipeline.history.add_assistant(f"answer {i} " + "more words " * 10)


def test_soft_pressure_trims_histories_and_drops_disconnected_sessions(pressured):
    manager, memory, monitor = pressured
    connected, away = manager.create("test"), manager.create("test")
    long_history(connected)
    long_history(away)
    manager.detach(away.id)
    before = len(connected.pipeline.history.turns)

    memory.now = reading(rss_mb=900)
    assert monitor.check() is Level.SOFT
    history = connected.pipeline.history
    assert len(history.turns) < before and history.token_count() <= LIMITS.pressure_history_tokens
    assert history.turns[-1].content.startswith("answer 19")  # the newest stays
    assert manager.get(away.id) is None and manager.stats.close_reasons == {"memory pressure": 1}
    actions = monitor.snapshot()["actions"]
    assert actions["sessions_dropped"] == 1 and actions["histories_trimmed"] == 1
    assert actions["messages_trimmed"] == before - len(history.turns)
    # A dropped session's conversation is on disk: its client can still resume it, whole.
    back = manager.resume(away.resume_token)
    assert back.restored and len(back.pipeline.history.turns) == 40

    memory.now = reading()
    assert monitor.check() is Level.OK
    assert history.max_tokens == 2000  # budget back once the pressure is over


def test_hard_pressure_refuses_new_sessions_with_a_clear_reason(pressured):
    manager, memory, monitor = pressured
    memory.now = reading(rss_mb=1234)
    with pytest.raises(AdmissionError) as refused:
        manager.create("test")
    assert str(refused.value) == "server is low on memory (RSS 1234 MB > limit 1000 MB); try again later"
    assert manager.stats.refused == 1 and monitor.snapshot()["actions"]["sessions_refused"] == 1
    memory.now = reading()
    manager.create("test")  # admitted again as soon as memory is back


def test_memory_shows_in_metrics_and_health(pressured):
    manager, memory, monitor = pressured
    memory.now = reading(rss_mb=1234)
    monitor.check()
    with pytest.raises(AdmissionError):
        manager.create("test")
    text = ServerMetrics(manager).render().decode()
    assert "voicechat_memory_pressure_level 2.0" in text
    assert 'voicechat_memory_pressure_actions_total{action="sessions_refused"} 1.0' in text
    assert "voicechat_conversations_records_saved_total" in text
    snap = manager.snapshot()["memory"]
    assert snap["level"] == "hard" and snap["reason"] == "RSS 1234 MB > limit 1000 MB"


def test_the_monitor_thread_relieves_pressure_on_its_own(tmp_path):
    memory = FakeMemory()
    monitor = MemoryMonitor(MemoryLimits(soft_rss_mb=800, check_interval_s=0.02), memory)
    manager = SessionManager(scripted_engines(), SessionLimits(resume_grace_s=300), memory=monitor)
    manager.start()
    try:
        away = manager.create("test")
        manager.detach(away.id)
        memory.now = reading(rss_mb=900)
        assert manager.wait_until_gone(away.id, timeout=10)
    finally:
        manager.shutdown()
        manager.engines.close()
    assert not any(t.name == "memory-monitor" for t in threading.enumerate())
