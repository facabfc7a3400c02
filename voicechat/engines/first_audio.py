"""Speech a listener is waiting for: the first piece of a reply while it is being synthesized.

The TTS pool marks each such synthesis from its start to its first chunk (``begin`` / ``end``, from its
worker threads). The LLM scheduler asks ``busy()`` before each step: while it is, replies far ahead of
their listener sit out the model's steps even when nobody else needs them, because on a CPU the
synthesis and the decoding share the cores (docs/benchmarks.md). ``on_idle`` tells the scheduler when
the last such synthesis ends, so it waits on its own condition instead of polling. A synthesis counts
for at most ``max_age_s``: one stuck in its engine must not hold the model back.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable


class FirstAudio:
    """The first pieces in synthesis, by token; thread-safe."""

    def __init__(self, max_age_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}  # token -> when its synthesis began
        self._tokens = itertools.count(1)
        self._idle: list[Callable[[], None]] = []

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the thread that ends the last synthesis) each time none is left."""
        with self._lock:
            self._idle.append(callback)

    def begin(self) -> int:
        """A first piece's synthesis starts; returns the token that ends it."""
        with self._lock:
            token = next(self._tokens)
            self._started[token] = self._clock()
            return token

    def end(self, token: int) -> None:
        with self._lock:
            self._started.pop(token, None)
            callbacks = [] if self._started else list(self._idle)
        for callback in callbacks:
            callback()

    def busy(self) -> bool:
        """A first piece is being synthesized (and began less than ``max_age_s`` ago)."""
        now = self._clock()
        with self._lock:
            return any(now - began < self.max_age_s for began in self._started.values())
