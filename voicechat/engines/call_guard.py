"""One session's calls to one shared engine, with a deadline and the engine's circuit breaker.

A stage worker must never wait on an engine without a deadline: a hung call
would freeze the session for good. ``CallGuard.open`` runs the engine's
iterator on a call thread of its own and hands the pieces over through a
queue, so the worker waits at most ``timeout_s`` for each piece. When that
passes, the call counts as a failure of the engine, the engine is asked to
abort it, the worker gets ``EngineTimeout`` (its turn ends with an error) and
moves on to the next turn; the call thread is handed to ``StuckCalls``, which
names, counts and logs it if it does not end within its grace period.

The engine's ``breaker`` (shared by every session) is consulted before each
call: while it is open the call fails at once with a message the user can read.
Engines that count their own failures (``counts_own_failures = True``, the
OpenAI client: its retries must not count) only hear about hangs here.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from voicechat.engines.circuit_breaker import CircuitBreaker, CircuitOpenError, Permit
from voicechat.engines.protocols import EngineError
from voicechat.engines.stuck_calls import STUCK_CALLS, GiveUp, StuckCalls

log = logging.getLogger(__name__)

__all__ = ["CallGuard", "EngineTimeout", "GuardedStream", "error_code", "seconds"]

T = TypeVar("T")

_ITEM, _END, _ERROR, _CANCEL = range(4)


def seconds(value: float) -> str:
    """A duration for people: "30 s", "1.5 s", "0.25 s"."""
    return f"{round(value, 2):g} s"


class EngineTimeout(EngineError):
    """The engine did not produce its next piece within the call timeout."""

    def __init__(self, label: str, timeout_s: float) -> None:
        super().__init__(f"The {label} did not answer within {seconds(timeout_s)}; this turn was ended.")
        self.timeout_s = timeout_s


def error_code(stage: str, error: BaseException) -> str:
    """The wire code of a stage error: ``<stage>_timeout``, ``<stage>_unavailable`` (circuit open) or ``_failed``."""
    if isinstance(error, EngineTimeout):
        return f"{stage}_timeout"
    if isinstance(error, CircuitOpenError):
        return f"{stage}_unavailable"
    return f"{stage}_failed"


class CallGuard:
    """Deadline, circuit breaker and abandoned-call accounting for one session and one engine."""

    def __init__(
        self,
        stage: str,
        session_id: str,
        engine: object,
        *,
        label: str,
        timeout_s: float,
        abort: Callable[[], None],
        stuck: StuckCalls = STUCK_CALLS,
        grace_s: float = 2.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"{stage} call timeout must be > 0, got {timeout_s}")
        self.stage = stage
        self.session_id = session_id
        self.label = label
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        breaker = getattr(engine, "breaker", None)
        self.breaker = breaker if isinstance(breaker, CircuitBreaker) else None
        self.engine_counts = bool(getattr(engine, "counts_own_failures", False))
        self.stuck = stuck
        self._abort = abort
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._current: GuardedStream[object] | None = None
        self._live: set[GuardedStream[object]] = set()
        self._newest = 0  # the latest reply a call was opened for
        self.timeouts = 0

    def open(self, generation: int, start: Callable[[], Iterable[T]]) -> GuardedStream[T]:
        """Start ``start()`` on a call thread; ``CircuitOpenError`` at once while the engine is failing."""
        permit = None
        if self.breaker is not None and not self.engine_counts:
            permit = self.breaker.acquire()
        stream: GuardedStream[T] = GuardedStream(self, generation, start, permit, next(self._numbers))
        with self._lock:
            self._current = stream  # type: ignore[assignment]
            self._live.add(stream)  # type: ignore[arg-type]
            self._newest = max(self._newest, generation)
        stream.thread.start()
        return stream

    def cancel_stale(self, generation: int) -> None:
        """Barge-in: end the running call if it belongs to a reply older than ``generation``."""
        with self._lock:
            current = self._current
        if current is not None and current.generation < generation:
            current.cancel("interrupted")

    def unless_newer(self, generation: int, action: Callable[[], None]) -> bool:
        """Run ``action`` (an engine-wide stop for this session: abort, discard) unless a call for reply
        ``generation`` or later was opened (running or done), which the action would hit instead of the
        stale one; False then. Decided under the lock ``open`` registers under, and a call reaches its
        engine only after that: an action that runs comes before any newer call's request."""
        with self._lock:
            if self._newest >= generation:
                return False
            action()
            return True

    def cancel_all(self, reason: str = "stopped") -> None:
        with self._lock:
            live = list(self._live)
        for stream in live:
            stream.cancel(reason)

    def join(self, timeout: float) -> list[str]:
        """Wait for call threads to end; the names of those still running."""
        with self._lock:
            live = list(self._live)
        for stream in live:
            stream.thread.join(timeout)
            timeout = 0.0 if stream.thread.is_alive() else timeout
        return [s.thread.name for s in live if s.thread.is_alive()]

    # -- called by streams ----------------------------------------------------------
    def _abort_engine(self) -> None:
        try:
            self._abort()
        except Exception:
            log.exception("session %s: aborting the %s failed", self.session_id, self.label)

    def _ended(self, stream: GuardedStream[object]) -> None:
        with self._lock:
            self._live.discard(stream)
            if self._current is stream:
                self._current = None


class GuardedStream(Iterator[T], Generic[T]):
    """The worker's side of one call: pieces with a deadline each; ``close`` abandons the call."""

    def __init__(
        self, guard: CallGuard, generation: int, start: Callable[[], Iterable[T]], permit: Permit | None, n: int
    ) -> None:
        self.generation = generation
        self._guard = guard
        self._start = start
        self._permit = permit
        self._queue: queue.SimpleQueue[tuple[int, object]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished = False  # the consumer is done with it
        self._running = True  # the call thread has not returned yet
        self._give_up: GiveUp | None = None
        self.thread = threading.Thread(
            target=self._pump, name=f"{guard.stage}-call-{guard.session_id[:8]}-{n}", daemon=True
        )

    # -- consumer ---------------------------------------------------------------------
    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        try:
            kind, value = self._queue.get(timeout=self._guard.timeout_s)
        except queue.Empty:
            raise self._time_out() from None
        if kind == _ITEM:
            return value  # type: ignore[return-value]
        self._finished = True
        if kind == _END:
            self._resolve(failed=None)
            raise StopIteration
        if kind == _ERROR:
            assert isinstance(value, BaseException)
            self._resolve(failed=str(value) or type(value).__name__)
            raise value
        raise StopIteration  # _CANCEL

    def close(self) -> None:
        """The consumer stops early (stale reply, shutdown): abandon the call, no failure counted."""
        self.cancel("abandoned")

    def cancel(self, reason: str) -> None:
        """End the call from any thread: the consumer's next wait returns at once."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self._permit is not None:
            self._permit.cancel()
        self._queue.put((_CANCEL, None))
        self._abandon(reason)

    # -- internals ---------------------------------------------------------------------
    def _time_out(self) -> EngineTimeout:
        guard = self._guard
        with self._lock:
            self._finished = True
        error = EngineTimeout(guard.label, guard.timeout_s)
        guard.timeouts += 1
        log.warning("session %s: %s (%s)", guard.session_id, error, self.thread.name)
        if self._permit is not None:
            self._permit.fail(str(error))
        elif guard.breaker is not None:
            guard.breaker.record_failure(str(error))
        self._abandon("timed out")
        return error

    def _resolve(self, failed: str | None) -> None:
        if self._permit is None:
            return
        if failed is None:
            self._permit.succeed()
        else:
            self._permit.fail(failed)

    def _abandon(self, reason: str) -> None:
        """Ask the engine to stop; if the call thread is still inside it, start its grace period."""
        guard = self._guard
        guard._abort_engine()
        with self._lock:
            if self._running and self._give_up is None:
                self._give_up = guard.stuck.give_up(
                    self.thread.name, guard.stage, guard.session_id, reason=reason, grace_s=guard.grace_s
                )

    def _pump(self) -> None:
        items: Iterator[T] | None = None
        try:
            items = iter(self._start())
            for item in items:
                if self._finished:
                    break
                self._queue.put((_ITEM, item))
            self._queue.put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who decides
            self._queue.put((_ERROR, exc))
        finally:
            close = getattr(items, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("closing a %s call failed", self._guard.stage)
            with self._lock:
                self._running = False
                give_up = self._give_up
            if give_up is not None:
                give_up.ended()
            self._guard._ended(self)  # type: ignore[arg-type]
