"""Circuit breaker state machine, driven by a fake clock."""

from __future__ import annotations

import threading

import pytest

from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from voicechat.engines.protocols import EngineError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **kw) -> CircuitBreaker:
    kw = {"failure_threshold": 3, "window_s": 10.0, "cooldown_s": 5.0, **kw}
    return CircuitBreaker("language model", clock=clock, **kw)


def fail(breaker: CircuitBreaker, n: int = 1, error: str = "boom") -> None:
    for _ in range(n):
        breaker.acquire().fail(error)


def test_opens_after_n_failures_within_window(clock: FakeClock) -> None:
    b = make(clock)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    b.acquire().succeed()  # successes do not reset the window count
    fail(b, 1, "connection refused")
    assert b.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    err = info.value
    assert isinstance(err, EngineError)
    assert "language model is not available" in str(err)
    assert "connection refused" in str(err)
    assert err.retry_after_s == pytest.approx(5.0)
    s = b.stats()
    assert (s.failures_total, s.successes_total, s.rejected_total, s.opened_total) == (3, 1, 1, 1)


def test_failures_outside_window_do_not_count(clock: FakeClock) -> None:
    b = make(clock)
    fail(b, 2)
    clock.advance(10.5)  # both failures age out
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    assert b.stats().failures_in_window == 2
    clock.advance(4)
    fail(b)
    assert b.state is BreakerState.OPEN


def test_half_open_lets_exactly_one_probe_through(clock: FakeClock) -> None:
    b = make(clock)
    fail(b, 3)
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        b.acquire()
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    probe = b.acquire()
    assert probe.probe
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()  # a second caller while the probe runs fails fast
    assert info.value.retry_after_s == 0
    probe.succeed()
    assert b.state is BreakerState.CLOSED
    assert not b.acquire().probe
    assert b.stats().failures_in_window == 0


def test_probe_failure_reopens_for_a_new_cooldown(clock: FakeClock) -> None:
    b = make(clock)
    fail(b, 3)
    clock.advance(5)
    b.acquire().fail("still down")
    assert b.state is BreakerState.OPEN
    assert b.stats().opened_total == 2
    clock.advance(4)
    with pytest.raises(CircuitOpenError, match="still down"):
        b.acquire()
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN


def test_cancelled_probe_hands_the_slot_back(clock: FakeClock) -> None:
    b = make(clock)
    fail(b, 3)
    clock.advance(5)
    b.acquire().cancel()
    assert b.state is BreakerState.HALF_OPEN
    b.acquire().succeed()
    assert b.state is BreakerState.CLOSED


def test_stale_permits_neither_close_nor_count(clock: FakeClock) -> None:
    b = make(clock, failure_threshold=1)
    slow = b.acquire()  # started while closed
    fail(b)  # opens
    slow.succeed()  # a late success from before the opening does not close it
    assert b.state is BreakerState.OPEN
    clock.advance(5)
    probe = b.acquire()
    slow.fail()  # a late failure does not reopen a half-open circuit
    assert b.state is BreakerState.HALF_OPEN
    probe.succeed()
    assert b.state is BreakerState.CLOSED


def test_one_outcome_per_permit_but_failure_after_success_counts(clock: FakeClock) -> None:
    b = make(clock, failure_threshold=2)
    p = b.acquire()
    p.succeed()
    p.succeed()
    p.fail("broke off mid-stream")
    p.fail()
    s = b.stats()
    assert (s.successes_total, s.failures_total, s.failures_in_window) == (1, 1, 1)


def test_guard_reports_exceptions_and_returns(clock: FakeClock) -> None:
    b = make(clock, failure_threshold=2)
    with b.guard():
        pass
    for _ in range(2):
        with pytest.raises(ValueError), b.guard():
            raise ValueError("bad backend")
    assert b.state is BreakerState.OPEN
    assert b.stats().last_error == "bad backend"


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="window_s"):
        CircuitBreaker(window_s=0)


def test_thread_safety_smoke(clock: FakeClock) -> None:
    """Many threads hammering one breaker: counters add up, exactly one probe per half-open."""
    n_threads, per_thread = 8, 500
    b = make(clock, failure_threshold=n_threads * per_thread // 2 + 1, window_s=1e9)
    start = threading.Barrier(n_threads)

    def work(i: int) -> None:
        start.wait(timeout=10)
        for k in range(per_thread):
            permit = b.acquire()
            if (i + k) % 2:
                permit.fail("x")
            else:
                permit.succeed()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    s = b.stats()
    assert s.failures_total + s.successes_total == n_threads * per_thread
    assert s.failures_total == n_threads * per_thread // 2
    assert s.failures_in_window == s.failures_total
    assert s.state is BreakerState.CLOSED
    fail(b)  # the threshold-th failure opens it
    assert b.state is BreakerState.OPEN

    clock.advance(b.cooldown_s)
    probes: list[bool] = []
    lock = threading.Lock()
    start2 = threading.Barrier(n_threads)

    def race() -> None:
        start2.wait(timeout=10)
        try:
            b.acquire()
        except CircuitOpenError:
            return
        with lock:
            probes.append(True)

    threads = [threading.Thread(target=race) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert probes == [True]
