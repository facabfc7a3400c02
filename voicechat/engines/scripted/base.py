"""What the scripted engines share: fault injection, delays, per-session abort.

Tests and benchmarks need engines that fail on a chosen call or hang for good,
to prove that one session's broken engine call never harms another session,
and engines whose compute time is a known, configurable delay.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.protocols import EngineError


@dataclass
class FaultPlan:
    """Raise on call ``fail_on_call`` and hang on call ``hang_on_call`` (1-based).

    A hang ignores abort on purpose (it models a stuck native call); it ends
    only when ``release()`` is called, so a test can clean up after itself.
    With ``session`` set, only that session's calls are counted and faulted;
    while ``down`` is set every counted call fails (an engine that is down).
    """

    fail_on_call: int | None = None
    hang_on_call: int | None = None
    session: str | None = None
    down: bool = False
    calls: int = 0
    hung: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_call(self, what: str, session_id: str = "") -> int:
        """Count one call; raise or hang if this is the chosen one. Returns the call number (0: not counted)."""
        with self._lock:
            if self.session is not None and session_id != self.session:
                return 0
            self.calls += 1
            n = self.calls
        if self.down:
            raise EngineError(f"scripted {what} is down (call {n})")
        if n == self.fail_on_call:
            raise EngineError(f"scripted {what} failed on call {n}")
        if n == self.hang_on_call:
            release = self._release
            self.hung.set()
            release.wait()
        return n

    def release(self) -> None:
        """Let every hung call return (test teardown)."""
        self._release.set()

    def rearm(self) -> None:
        """After ``release``: later hangs block again (a benchmark's hang per round)."""
        with self._lock:
            self._release = threading.Event()
            self.hung = threading.Event()


def wait_or_abort(delay_s: float, abort: threading.Event) -> bool:
    """Simulate ``delay_s`` of compute; returns True if aborted meanwhile.

    Waits on the abort event rather than sleeping, so an abort ends it at once.
    """
    if delay_s <= 0:
        return abort.is_set()
    return abort.wait(delay_s)


class AbortRegistry:
    """One abort event per session's running call; ``abort`` sets it at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self.calls: list[str] = []  # every abort asked for, in order (for tests)

    def begin(self, session_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[session_id] = event
        return event

    def end(self, session_id: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session_id) is event:
                del self._events[session_id]

    def abort(self, session_id: str, *, record: bool = True) -> None:
        with self._lock:
            if record:
                self.calls.append(session_id)
            event = self._events.get(session_id)
        if event is not None:
            event.set()


T = TypeVar("T")

KEPT_SESSIONS = 256  # sessions whose calls a scripted engine remembers for tests (the oldest forgotten first)


def remember(book: dict[str, list[T]], session_id: str, item: T) -> None:
    """Add ``item`` to what ``book`` keeps for the session; past ``KEPT_SESSIONS`` sessions the oldest
    session's records go, so a long scripted run (``bench load`` with churn) holds bounded memory."""
    items = book.get(session_id)
    if items is None:
        if len(book) >= KEPT_SESSIONS:
            del book[next(iter(book))]
        items = book[session_id] = []
    items.append(item)


class PacedEngine:
    """Base of the scripted LLM and TTS: a paced, abortable, faultable stream per call.

    The first item comes after ``first_s`` (time to first token/chunk), then one
    every ``step_s``; ``abort(session_id)`` ends that session's stream at once.
    """

    what = "engine"
    label = "engine"  # the circuit breaker's name, as users read it

    def __init__(
        self, first_s: float, step_s: float, faults: FaultPlan | None, breaker: CircuitBreaker | None = None
    ) -> None:
        self.first_s = first_s
        self.step_s = step_s
        self.faults = faults or FaultPlan()
        self.breaker = breaker or CircuitBreaker(self.label)
        self._aborts = AbortRegistry()

    def _paced(self, session_id: str, make_items: Callable[[], Iterable[T]]) -> Iterator[T]:
        # Registered now, not at the first next(): an abort before iteration counts.
        return self._run(session_id, make_items, self._aborts.begin(session_id))

    def _run(self, session_id: str, make_items: Callable[[], Iterable[T]], abort: threading.Event) -> Iterator[T]:
        try:
            self.faults.on_call(self.what, session_id)
            items = make_items()
            if wait_or_abort(self.first_s, abort):
                return
            for i, item in enumerate(items):
                if (i and wait_or_abort(self.step_s, abort)) or abort.is_set():
                    return
                yield item
        finally:
            self._aborts.end(session_id, abort)

    def abort(self, session_id: str) -> None:
        self._aborts.abort(session_id)

    @property
    def abort_calls(self) -> list[str]:
        """Every abort asked for, by session id, in order."""
        return self._aborts.calls
