"""The turn judge: one thread that runs the end-of-turn audio model for every session, batched.

A session whose speaker has gone silent asks ``ask(session_id, audio, on_result)`` (from the
listening front end's tick, say) and goes on; the judge's thread runs every waiting request in
one ``predict`` call and hands each its probability that the turn is finished. Per session only
the latest request counts: a new ask replaces one still waiting, and the result of one already
running is dropped when a newer ask or a ``cancel`` came meanwhile. A model call that raises
gives ``None`` to each of its callbacks and is counted; the thread goes on.

Contract for callbacks: called from the judge's thread, one at a time, never with the judge's
lock held; they must not block (post the value and return). After ``cancel(session_id)``
returns (from any other thread), no callback of that session's earlier asks runs.

The thread starts on the first ask and lives until ``close`` stops and joins it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voicechat.stt.smart_turn import WINDOW_SAMPLES

log = logging.getLogger(__name__)

OnResult = Callable[[float | None], None]


class TurnModel(Protocol):
    def predict(self, audios: Sequence[np.ndarray]) -> list[float]:
        """P(turn finished) for each float32 16 kHz mono utterance, in one call."""
        ...


@dataclass
class JudgeStats:
    calls: int = 0  # asks accepted
    superseded: int = 0  # asks replaced by a newer one of the same session, or cancelled, before their result
    batches: int = 0  # model calls
    rows: int = 0  # utterances judged
    max_batch: int = 0
    errors: int = 0  # model calls that raised (their callbacks got None)
    callback_errors: int = 0
    busy_s: float = 0.0  # seconds spent in the model


@dataclass(eq=False)
class _Request:
    session_id: str
    audio: np.ndarray
    on_result: OnResult


class TurnJudge:
    """Owns its thread (started lazily by ``ask``, stopped and joined by ``close``) and the model."""

    def __init__(self, model: TurnModel, *, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.max_batch = max_batch
        self.stats = JudgeStats()
        self._cond = threading.Condition()
        self._waiting: dict[str, _Request] = {}  # not yet in a batch, oldest first
        self._latest: dict[str, _Request] = {}  # each session's request whose result still counts
        self._delivering: str | None = None  # the session whose callback runs now
        self._closed = False
        self._thread: threading.Thread | None = None

    def ask(self, session_id: str, audio: np.ndarray, on_result: OnResult) -> bool:
        """Judge ``audio`` (float32 16 kHz mono, -1..1; only its last 8 s count, copied here) for
        ``session_id``; ``on_result`` gets P(finished) in [0, 1], or None when the model failed.
        Non-blocking. Returns False (and no callback will come) once the judge is closed."""
        tail = np.array(np.asarray(audio, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:], copy=True)
        request = _Request(session_id, tail, on_result)
        with self._cond:
            if self._closed:
                return False
            if session_id in self._latest:
                self.stats.superseded += 1
            self._waiting.pop(session_id, None)  # re-inserted last: a replaced request waits its turn again
            self._waiting[session_id] = request
            self._latest[session_id] = request
            self.stats.calls += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="turn-judge", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def cancel(self, session_id: str) -> None:
        """Forget the session's asks (new speech, session closed): no callback of them runs after this."""
        with self._cond:
            self._waiting.pop(session_id, None)
            if self._latest.pop(session_id, None) is not None:
                self.stats.superseded += 1
            while self._delivering == session_id and threading.current_thread() is not self._thread:
                self._cond.wait()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the batch it is running) and join it; waiting asks get no callback."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._latest.clear()
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = [self._waiting.pop(sid) for sid in list(self._waiting)[: self.max_batch]]
            results = self._predict(batch)
            for request, p in zip(batch, results, strict=True):
                self._deliver(request, p)

    def _predict(self, batch: list[_Request]) -> list[float | None]:
        started = time.perf_counter()
        try:
            out = [float(p) for p in self.model.predict([r.audio for r in batch])]
            if len(out) != len(batch):
                raise ValueError(f"the turn model gave {len(out)} results for {len(batch)} utterances")
            results: list[float | None] = list(out)
        except Exception:
            self.stats.errors += 1
            if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                log.exception("the end-of-turn model failed (%d so far)", self.stats.errors)
            results = [None] * len(batch)
        self.stats.busy_s += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        return results

    def _deliver(self, request: _Request, p: float | None) -> None:
        with self._cond:
            if self._closed or self._latest.get(request.session_id) is not request:
                return  # superseded or cancelled while it ran
            del self._latest[request.session_id]
            self._delivering = request.session_id
        try:
            request.on_result(p)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("end-of-turn callback for session %s failed", request.session_id)
        finally:
            with self._cond:
                self._delivering = None
                self._cond.notify_all()
