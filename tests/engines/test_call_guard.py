"""CallGuard (deadline + breaker per engine call) and StuckCalls (abandoned threads), on their own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from voicechat.engines.call_guard import CallGuard, EngineTimeout, error_code, seconds
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from voicechat.engines.protocols import EngineError
from voicechat.engines.stuck_calls import StuckCalls

WAIT = 10.0


class Engine:
    """A fake engine: yields ``items``; ``hang`` blocks the call (ignoring abort) until ``release``."""

    counts_own_failures = False

    def __init__(self, items=("a", "b"), fail: str | None = None, hang: bool = False) -> None:
        self.breaker = CircuitBreaker("test engine", failure_threshold=2, window_s=60, cooldown_s=60)
        self.items, self.fail, self.hang = items, fail, hang
        self.release = threading.Event()
        self.entered = threading.Event()
        self.aborts = 0

    def call(self) -> Iterator[str]:
        self.entered.set()
        if self.hang:
            self.release.wait(WAIT)
        yield from self.items
        if self.fail:
            raise EngineError(self.fail)

    def abort(self) -> None:
        self.aborts += 1


def guard_for(engine: Engine, stuck: StuckCalls, timeout_s: float = 0.3, grace_s: float = 0.2) -> CallGuard:
    return CallGuard(
        "llm", "session-1234", engine, label="test engine", timeout_s=timeout_s, abort=engine.abort,
        stuck=stuck, grace_s=grace_s,
    )


def test_a_call_streams_through_and_counts_as_success() -> None:
    engine, stuck = Engine(), StuckCalls()
    stream = guard_for(engine, stuck).open(1, engine.call)
    assert list(stream) == ["a", "b"]
    stream.thread.join(WAIT)
    assert engine.breaker.stats().successes_total == 1
    assert stuck.stats().stuck_total == 0 and engine.aborts == 0


def test_an_engine_error_reaches_the_caller_and_counts_as_failure() -> None:
    engine, stuck = Engine(fail="backend exploded"), StuckCalls()
    stream = guard_for(engine, stuck).open(1, engine.call)
    assert next(stream) == "a" and next(stream) == "b"
    with pytest.raises(EngineError, match="backend exploded") as info:
        next(stream)
    assert error_code("llm", info.value) == "llm_failed"
    assert engine.breaker.stats().failures_total == 1


def test_a_hung_call_times_out_counts_as_failure_and_its_thread_is_accounted_for() -> None:
    engine, stuck = Engine(hang=True), StuckCalls()
    guard = guard_for(engine, stuck)
    stream = guard.open(1, engine.call)
    with pytest.raises(EngineTimeout, match="test engine did not answer within 0.3 s") as info:
        next(stream)
    assert error_code("tts", info.value) == "tts_timeout"
    assert engine.aborts == 1 and guard.timeouts == 1
    assert engine.breaker.stats().failures_total == 1
    with pytest.raises(StopIteration):
        next(stream)  # the worker is done with it
    assert stuck.wait_settled(WAIT)
    assert stuck.stuck_names() == [stream.thread.name] == ["llm-call-session--1"]
    assert stuck.stats().stuck_now[0].reason == "timed out"
    engine.release.set()
    stream.thread.join(WAIT)
    assert stuck.stuck_names() == [] and stuck.stats().recovered_total == 1
    assert guard.join(0) == []


def test_two_hangs_open_the_circuit_then_calls_fail_fast_without_a_thread() -> None:
    engine, stuck = Engine(hang=True), StuckCalls()
    guard = guard_for(engine, stuck, timeout_s=0.1)
    for _ in range(2):
        with pytest.raises(EngineTimeout):
            next(guard.open(1, engine.call))
    assert engine.breaker.state is BreakerState.OPEN
    before = threading.active_count()
    engine.entered.clear()
    with pytest.raises(CircuitOpenError, match="test engine is not available right now") as info:
        guard.open(2, engine.call)
    assert "did not answer" in str(info.value)  # the last error says why
    assert error_code("llm", info.value) == "llm_unavailable"
    assert not engine.entered.is_set() and threading.active_count() <= before
    engine.release.set()


def test_cancel_returns_at_once_and_counts_nothing() -> None:
    engine, stuck = Engine(hang=True), StuckCalls()
    guard = guard_for(engine, stuck, timeout_s=WAIT, grace_s=WAIT)
    stream = guard.open(3, engine.call)
    assert engine.entered.wait(WAIT)
    guard.cancel_stale(3)  # not older than the current reply: left alone
    guard.cancel_stale(4)
    with pytest.raises(StopIteration):
        next(stream)
    s = engine.breaker.stats()
    assert (s.failures_total, s.successes_total) == (0, 0) and engine.aborts == 1
    engine.release.set()
    stream.thread.join(WAIT)
    assert stuck.wait_settled(WAIT) and stuck.stats().stuck_total == 0  # it ended within its grace


def test_an_engine_that_counts_its_own_failures_hears_only_about_hangs() -> None:
    engine, stuck = Engine(fail="refused"), StuckCalls()
    engine.counts_own_failures = True
    guard = guard_for(engine, stuck)
    with pytest.raises(EngineError, match="refused"):
        list(guard.open(1, engine.call))
    assert engine.breaker.stats().failures_total == 0
    engine.hang, engine.fail = True, None
    with pytest.raises(EngineTimeout):
        next(guard.open(2, engine.call))
    assert engine.breaker.stats().failures_total == 1
    engine.release.set()


def test_stuck_calls_grace_and_on_stuck() -> None:
    stuck = StuckCalls()
    quick = stuck.give_up("quick", "tts", "s1", grace_s=WAIT)
    assert quick.ended() is False  # ended within its grace: never stuck
    seen: list[str] = []
    called = threading.Event()

    def on_stuck(handle) -> None:
        seen.append(handle.name)
        called.set()

    slow = stuck.give_up("slow", "tts", "s2", grace_s=0.05, on_stuck=on_stuck)
    assert called.wait(WAIT)
    assert seen == ["slow"] and stuck.stuck_names("s2") == ["slow"] and stuck.stuck_names("s1") == []
    assert slow.ended() is True
    s = stuck.stats()
    assert (s.stuck_now, s.stuck_total, s.recovered_total) == ((), 1, 1)


def test_a_late_stop_for_a_stale_reply_spares_a_newer_call() -> None:
    """An engine stops a session's latest call: a stop for reply 1 that comes after reply 2's call was
    opened would hit reply 2 (a prepared reply that then never speaks). The guard skips it."""
    engine, stuck = Engine(), StuckCalls()
    guard = guard_for(engine, stuck)
    stops: list[str] = []
    assert guard.unless_newer(2, lambda: stops.append("before any call"))  # nothing opened: it runs
    first = guard.open(1, engine.call)
    assert guard.unless_newer(2, lambda: stops.append("reply 1 is the latest")) and list(first) == ["a", "b"]
    second = guard.open(2, engine.call)
    assert not guard.unless_newer(2, lambda: stops.append("would hit reply 2"))
    assert stops == ["before any call", "reply 1 is the latest"] and list(second) == ["a", "b"]
    for stream in (first, second):
        stream.thread.join(WAIT)
    assert not guard.unless_newer(2, lambda: stops.append("reply 2 is done, but still the latest"))
    assert guard.unless_newer(3, lambda: stops.append("a stop for reply 2")) and stops[-1] == "a stop for reply 2"


def test_seconds_reads_well() -> None:
    assert [seconds(x) for x in (30, 0.5, 1.0, 1.5, 0.25)] == ["30 s", "0.5 s", "1 s", "1.5 s", "0.25 s"]
