"""A circuit breaker for shared engines: fail fast while a dependency is down.

Every session shares one engine, so when its backend is down every session's
turn would wait through timeouts and retries. After ``failure_threshold``
failures within ``window_s`` the circuit *opens*: calls fail at once with
``CircuitOpenError`` (a message the pipeline can show or speak). After
``cooldown_s`` it turns *half-open* and lets exactly one probe call through;
the probe's success closes the circuit, its failure opens it for another
cooldown.

Pure logic with an injectable clock and no threads of its own; a lock makes it
safe to share between sessions' threads. A call takes a ``Permit`` and reports
its outcome on it. Permits remember the breaker's epoch (bumped on every state
change), so a slow call that started before the circuit opened cannot close it
or count twice against a circuit that has moved on.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from voicechat.engines.protocols import EngineError

__all__ = ["BreakerState", "BreakerStats", "CircuitBreaker", "CircuitOpenError", "Permit"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(EngineError):
    """The engine is failing; the call was refused without trying it."""

    def __init__(self, name: str, retry_after_s: float, last_error: str) -> None:
        wait = f"in {retry_after_s:.0f} s" if retry_after_s >= 1 else "shortly"
        reason = f" (last error: {last_error})" if last_error else ""
        super().__init__(f"The {name} is not available right now{reason}; it will be tried again {wait}.")
        self.name = name
        self.retry_after_s = retry_after_s
        self.last_error = last_error


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot for /health and /metrics."""

    name: str
    state: BreakerState
    failures_in_window: int
    failures_total: int
    successes_total: int
    rejected_total: int
    opened_total: int
    retry_after_s: float
    last_error: str


class Permit:
    """One call's right to run; report exactly one outcome (later reports are ignored).

    ``fail()`` after ``succeed()`` still counts: a stream that started well
    and then broke is a failure of the backend.
    """

    __slots__ = ("_breaker", "epoch", "probe", "_outcome")

    def __init__(self, breaker: CircuitBreaker, epoch: int, probe: bool) -> None:
        self._breaker = breaker
        self.epoch = epoch
        self.probe = probe
        self._outcome: str | None = None

    @property
    def resolved(self) -> bool:
        return self._outcome is not None

    def succeed(self) -> None:
        if self._outcome is None:
            self._outcome = "success"
            self._breaker._on_success(self)

    def fail(self, error: str = "") -> None:
        if self._outcome in (None, "success"):
            self._outcome = "failure"
            self._breaker._on_failure(self, error)

    def cancel(self) -> None:
        """Neither outcome (aborted by the user): a probe slot is handed back."""
        if self._outcome is None:
            self._outcome = "cancelled"
            self._breaker._on_cancel(self)


class CircuitBreaker:
    """Closed -> open after N failures in a window -> half-open probe -> closed/open."""

    def __init__(
        self,
        name: str = "engine",
        *,
        failure_threshold: int = 5,
        window_s: float = 60.0,
        cooldown_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if window_s <= 0 or cooldown_s < 0:
            raise ValueError(f"window_s must be > 0 and cooldown_s >= 0, got {window_s}, {cooldown_s}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._epoch = 0
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._probe_out = False
        self._last_error = ""
        self._failures_total = 0
        self._successes_total = 0
        self._rejected_total = 0
        self._opened_total = 0

    # -- public ------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state (an open circuit past its cooldown reads half-open)."""
        with self._lock:
            self._advance(self._clock())
            return self._state

    def acquire(self) -> Permit:
        """A permit to call the engine, or ``CircuitOpenError`` at once."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            if self._state is BreakerState.CLOSED:
                return Permit(self, self._epoch, probe=False)
            if self._state is BreakerState.HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return Permit(self, self._epoch, probe=True)
            self._rejected_total += 1
            raise CircuitOpenError(self.name, self._retry_after(now), self._last_error)

    def check(self) -> None:
        """Raise ``CircuitOpenError`` if calls are being refused now, without taking a permit."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            if self._state is BreakerState.OPEN:
                self._rejected_total += 1
                raise CircuitOpenError(self.name, self._retry_after(now), self._last_error)

    @contextmanager
    def guard(self) -> Iterator[Permit]:
        """``with breaker.guard(): call()``: an exception fails the permit, a return succeeds it."""
        permit = self.acquire()
        try:
            yield permit
        except BaseException as exc:
            if isinstance(exc, Exception):
                permit.fail(str(exc))
            else:
                permit.cancel()  # KeyboardInterrupt, GeneratorExit: not the engine's fault
            raise
        else:
            permit.succeed()

    def record_failure(self, error: str = "") -> None:
        """Count a failure the call's own permit could not report (a hang the engine never noticed).

        For engines that take their own permits (the OpenAI client): a caller that
        gave up on a silent call reports it here; it counts like a failed call
        while the circuit is closed and is only recorded otherwise.
        """
        with self._lock:
            epoch = self._epoch
        self._on_failure(Permit(self, epoch, probe=False), error)

    def stats(self) -> BreakerStats:
        with self._lock:
            now = self._clock()
            self._advance(now)
            self._prune(now)
            return BreakerStats(
                name=self.name,
                state=self._state,
                failures_in_window=len(self._failures),
                failures_total=self._failures_total,
                successes_total=self._successes_total,
                rejected_total=self._rejected_total,
                opened_total=self._opened_total,
                retry_after_s=self._retry_after(now),
                last_error=self._last_error,
            )

    # -- permit callbacks ----------------------------------------------------------
    def _on_success(self, permit: Permit) -> None:
        with self._lock:
            self._successes_total += 1
            if permit.epoch != self._epoch:
                return
            if permit.probe and self._state is BreakerState.HALF_OPEN:
                self._transition(BreakerState.CLOSED)
                self._failures.clear()
                self._last_error = ""

    def _on_failure(self, permit: Permit, error: str) -> None:
        with self._lock:
            now = self._clock()
            self._failures_total += 1
            if error:
                self._last_error = error
            if permit.epoch != self._epoch:
                return
            if permit.probe and self._state is BreakerState.HALF_OPEN:
                self._open(now)
            elif self._state is BreakerState.CLOSED:
                self._failures.append(now)
                self._prune(now)
                if len(self._failures) >= self.failure_threshold:
                    self._open(now)

    def _on_cancel(self, permit: Permit) -> None:
        with self._lock:
            if permit.probe and permit.epoch == self._epoch and self._state is BreakerState.HALF_OPEN:
                self._probe_out = False

    # -- internals (lock held) -------------------------------------------------------
    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._epoch += 1
        self._probe_out = False

    def _open(self, now: float) -> None:
        self._transition(BreakerState.OPEN)
        self._opened_at = now
        self._opened_total += 1
        self._failures.clear()

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now - self._opened_at >= self.cooldown_s:
            self._transition(BreakerState.HALF_OPEN)

    def _prune(self, now: float) -> None:
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()

    def _retry_after(self, now: float) -> float:
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.cooldown_s - now)
        return 0.0
