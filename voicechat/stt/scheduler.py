"""The shared STT scheduler: one speech-to-text model, every session's requests.

Each session's recognizer hands its work here instead of owning a model:
finals through the blocking ``transcribe`` (RealtimeSTT calls it from a thread
of its own per utterance), partials through ``request_partial`` (fire and
forget, latest wins). ``workers`` threads take batches chosen by the pure
``SttSchedule`` policy and run them on the model in one ``transcribe_batch``
call each, so finals of sessions that end their turns together are decoded
together.

Faults. A circuit breaker (``breaker``, shared by every session) counts failed
and timed-out batches; while it is open finals fail at once with a message the
user can read and partials are skipped. With ``call_timeout_s`` set, a watchdog
thread keeps the queue moving when a batch hangs (deadlines: ``stall_watch``):
after ``stall_after_s`` (by default a few times the recent time per utterance)
the hung worker no longer counts and a spare worker takes over the queue (at
most ``spare_workers`` extra threads), and after ``call_timeout_s`` the batch's
callers get ``EngineTimeout`` and the hung thread is handed to ``StuckCalls``
(named, counted, logged; it retires if it ever returns). A failed batch of
several sessions' utterances is retried one by one, so one bad input fails only
its own session.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from voicechat.audio import as_float32
from voicechat.engines import stall_watch
from voicechat.engines.call_guard import EngineTimeout
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError, Permit
from voicechat.engines.protocols import BatchTranscriber, EngineError, SpeechInput
from voicechat.engines.stuck_calls import STUCK_CALLS, GiveUp, StuckCalls
from voicechat.stt.scheduling import Job, SttSchedule

log = logging.getLogger(__name__)

LABEL = "speech recogniser"


@dataclass(slots=True)
class _Request:
    input: SpeechInput
    future: Future[str]
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None  # set when its batch starts


@dataclass(eq=False, slots=True)
class _Running:
    """A batch on a worker thread, as the watchdog sees it."""

    requests: list[_Request]
    thread: threading.Thread
    started: float
    permit: Permit | None = None
    stalled: bool = False
    timed_out: bool = False
    give_up: GiveUp | None = None

    @property
    def size(self) -> int:
        return len(self.requests)


@dataclass
class SttStats:
    """Counters for /metrics and benchmarks (updated under the scheduler's lock)."""

    batches: int = 0
    finals: int = 0
    partials: int = 0
    partials_dropped: int = 0
    errors: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    busy_s: float = 0.0
    timeouts: int = 0  # batches that ran past call_timeout_s
    stalls: int = 0  # batches that ran past stall_after_s (a spare worker took over the queue)
    rejected: int = 0  # requests refused while the circuit was open


class SttScheduler:
    """Fair, batching front of one shared ``BatchTranscriber``."""

    counts_own_failures = True  # the pipeline does not call it: failures are counted here

    def __init__(
        self,
        model: BatchTranscriber,
        *,
        workers: int = 1,
        max_batch: int = 8,
        call_timeout_s: float | None = None,
        stall_after_s: float | None = None,
        spare_workers: int = 4,
        breaker: CircuitBreaker | None = None,
        stuck: StuckCalls = STUCK_CALLS,
        name: str = "stt",
    ) -> None:
        self.model = model
        self.call_timeout_s = call_timeout_s
        self._fixed_stall_s = stall_after_s
        self._durations: deque[float] = deque(maxlen=64)  # recent batches' seconds per utterance: stall limit
        self.breaker = breaker or CircuitBreaker(LABEL)
        self.stats = SttStats()
        self._stuck = stuck
        self._name = name
        self._target = workers
        self._max_threads = workers + max(0, spare_workers)
        self._numbers = itertools.count()
        self._schedule: SttSchedule[_Request] = SttSchedule(max_batch)
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._running: dict[threading.Thread, _Running] = {}
        self._stalled = 0  # running batches past stall_after_s (their threads do not count as available)
        with self._cond:
            for _ in range(workers):
                self._spawn()
        self._watchdog: threading.Thread | None = None
        if self.call_timeout_s is not None or stall_after_s is not None:
            self._watchdog = threading.Thread(target=self._watch, name=f"{name}-scheduler-watchdog", daemon=True)
            self._watchdog.start()

    # -- TranscriptionModel ------------------------------------------------------
    def transcribe(self, audio: np.ndarray, *, session_id: str, final: bool, language: str | None = None) -> str:
        """Queue a request and wait for its text (finals; partials use ``request_partial``)."""
        try:
            self.breaker.check()
        except CircuitOpenError:
            with self._cond:
                self.stats.rejected += 1
            raise
        request = self._submit(SpeechInput(session_id, as_float32(audio), final, language or None))
        try:
            return self._wait(request)
        except CancelledError:
            raise EngineError("transcription cancelled (session closed or scheduler stopped)") from None

    def _wait(self, request: _Request) -> str:
        """The request's text; ``EngineTimeout`` after ``call_timeout_s`` in the queue or in a batch.

        A request already in a batch is settled by the watchdog at the batch's
        own deadline, which also counts the hang against the engine (once).
        """
        future, limit = request.future, self.call_timeout_s
        if limit is None:
            return future.result()
        try:
            return future.result(timeout=limit)
        except TimeoutError:
            pass
        started = request.started_at
        if started is not None:
            try:
                return future.result(timeout=max(0.0, started + limit + 1.0 - time.monotonic()))
            except TimeoutError:
                pass
        future.cancel()  # still queued: it will not run
        with self._cond:
            starved = self._threads and self._stalled >= len(self._threads)
            hung = self._stalled
        if starved:  # no batch of ours to blame, but the engine serves nobody: that is a failure too
            self.breaker.record_failure(f"all {hung} of its workers are stuck")
        raise EngineTimeout(LABEL, limit)

    def request_partial(
        self, session_id: str, audio: np.ndarray, on_text: Callable[[str], None], language: str | None = None
    ) -> None:
        if self.breaker.state is BreakerState.OPEN:
            return  # an interim transcript is not worth a probe or an error message
        future = self._submit(SpeechInput(session_id, as_float32(audio), False, language or None)).future

        def deliver(done: Future[str]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            on_text(done.result())

        future.add_done_callback(deliver)

    def cancel(self, session_id: str, *, partials_only: bool = False) -> None:
        with self._cond:
            removed = self._schedule.cancel(session_id, partials_only=partials_only)
        for job in removed:
            job.payload.future.cancel()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the workers; waiting requests are cancelled (their callers get EngineError).

        Returns False if a worker is still inside the model after ``timeout``
        (a hung call): the model is then left open rather than closed under it.
        """
        with self._cond:
            if self._closed:
                return True
            self._closed = True
            pending = []
            while len(self._schedule):
                pending.extend(self._schedule.next_batch())
            threads = [t for t in self._threads if t is not threading.current_thread()]
            abandoned = {r.thread for r in self._running.values() if r.timed_out}
            self._cond.notify_all()
        for job in pending:
            job.payload.future.cancel()
        deadline = time.monotonic() + timeout
        for thread in [*threads, self._watchdog]:
            if thread is not None and thread not in abandoned:
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.error("STT workers still inside the model after close: %s; the model is left open", stuck)
            return False
        close = getattr(self.model, "close", None)
        if callable(close):
            close()
        return True

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._schedule)

    def stall_after_s(self, size: int = 1) -> float | None:
        """How long a batch of ``size`` may run before a spare worker takes the queue (None: never)."""
        with self._cond:
            return self._stall_limit(size)

    def _stall_limit(self, size: int) -> float | None:
        return stall_watch.stall_limit(self._durations, self.call_timeout_s, self._fixed_stall_s, size)

    @property
    def worker_threads(self) -> int:
        """Live worker threads, hung ones included."""
        with self._cond:
            return len(self._threads)

    # -- internals ---------------------------------------------------------------
    def _spawn(self) -> None:
        """Start one more worker thread (lock held)."""
        thread = threading.Thread(target=self._run, name=f"{self._name}-scheduler-{next(self._numbers)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _surplus(self) -> bool:
        """More threads are available than ``workers`` (a hung one came back): one may retire."""
        return len(self._threads) - self._stalled > self._target

    def _submit(self, speech: SpeechInput) -> _Request:
        request = _Request(speech, Future())
        with self._cond:
            if self._closed:
                request.future.cancel()
                return request
            replaced = self._schedule.submit(Job(speech.session_id, speech.final, request))
            if replaced is not None:
                self.stats.partials_dropped += 1
            self._cond.notify_all()
        if replaced is not None:
            replaced.payload.future.cancel()
        return request

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._closed and not len(self._schedule) and not self._surplus():
                    self._cond.wait()
                if self._closed or self._surplus():
                    self._threads.remove(me)
                    self._cond.notify_all()
                    return
                batch = [job.payload for job in self._schedule.next_batch()]
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if batch and self._run_batch(me, batch):
                for r in batch:  # one input may be to blame: each is retried alone, and counted alone
                    self._run_batch(me, [r])

    def _run_batch(self, me: threading.Thread, batch: list[_Request]) -> bool:
        """Decode ``batch`` under the watchdog's eye; True if it failed and should be retried one by one."""
        running = _Running(batch, me, time.monotonic())
        for r in batch:
            r.started_at = running.started
        try:
            running.permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            with self._cond:
                self.stats.rejected += len(batch)
            _fail(batch, exc)
            return False
        with self._cond:
            self._running[me] = running
            self._cond.notify_all()  # the watchdog learns the new deadlines
        try:
            return self._decode(running)
        finally:
            with self._cond:
                del self._running[me]
                if running.stalled:
                    self._stalled -= 1
                give_up = running.give_up
                self._cond.notify_all()
            if give_up is not None:
                give_up.ended()

    def _decode(self, running: _Running) -> bool:
        batch, permit = running.requests, running.permit
        assert permit is not None
        started = time.monotonic()
        try:
            texts = self.model.transcribe_batch([r.input for r in batch])
            if len(texts) != len(batch):
                raise EngineError(f"model returned {len(texts)} transcripts for {len(batch)} inputs")
        except Exception as exc:  # every caller of the batch learns of the failure
            self._record(running, started, failed=True)
            if running.timed_out:
                return False  # already failed and counted by the watchdog
            if len(batch) > 1:
                permit.cancel()
                log.warning("stt batch of %d failed (%s); retrying its utterances one by one", len(batch), exc)
                return True
            permit.fail(str(exc) or type(exc).__name__)
            log.warning("stt request of session %s failed: %s", batch[0].input.session_id, exc)
            _fail(batch, exc)
            return False
        self._record(running, started, failed=False)
        if not running.timed_out:
            permit.succeed()
            for r, text in zip(batch, texts, strict=True):
                _settle(r.future, text.strip())
        return False

    def _record(self, running: _Running, started: float, *, failed: bool) -> None:
        batch = running.requests
        with self._cond:  # several workers decode at once
            stats = self.stats
            took = time.monotonic() - started
            stats.busy_s += took
            if failed:
                stats.errors += 1
                return
            if not running.timed_out:  # a hang that came back says nothing about the engine's pace
                self._durations.append(took / len(batch))
            stats.batches += 1
            stats.batch_sizes[len(batch)] += 1
            finals = sum(r.input.final for r in batch)
            stats.finals += finals
            stats.partials += len(batch) - finals

    # -- watchdog ------------------------------------------------------------------
    def _watch(self) -> None:
        """Sleep until the next stall or timeout deadline of a running batch; act on it."""
        while True:
            with self._cond:
                if self._closed:
                    return
                due = stall_watch.check(
                    self._running.values(), time.monotonic(), lambda call: self._stall_limit(call.size),
                    self.call_timeout_s,
                )
                for running in due.stalled:
                    self._stalled += 1
                    self.stats.stalls += 1
                    log.warning("stt batch on %s is stalled: a spare worker takes the queue", running.thread.name)
                for running in due.timed_out:
                    self.stats.timeouts += 1
                    sessions = ",".join(sorted({r.input.session_id[:8] for r in running.requests}))
                    running.give_up = self._stuck.give_up(
                        running.thread.name, "stt", sessions, reason="timed out", grace_s=0.0
                    )
                waiting = len(self._schedule)
                if stall_watch.needs_spare(len(self._threads), self._stalled, self._target, self._max_threads, waiting):
                    self._spawn()
                if not due.timed_out:
                    self._cond.wait(due.wake_in_s)
                    continue
            for running in due.timed_out:
                error = EngineTimeout(LABEL, self.call_timeout_s or 0.0)
                if running.permit is not None:
                    running.permit.fail(str(error))
                _fail(running.requests, error)


def _settle(future: Future[str], text: str) -> None:
    try:
        future.set_result(text)
    except InvalidStateError:
        pass  # the watchdog failed it first


def _fail(requests: Sequence[_Request], error: BaseException) -> None:
    for r in requests:
        try:
            r.future.set_exception(error)
        except InvalidStateError:
            pass  # settled meanwhile (by the watchdog, or the batch came back first)
