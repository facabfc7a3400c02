"""The shared STT scheduler: one speech-to-text model, every session's requests.

Each session's recognizer hands its work here instead of owning a model:
finals through the blocking ``transcribe`` (RealtimeSTT calls it from a thread
of its own per utterance), partials through ``request_partial`` (fire and
forget, latest wins). ``workers`` threads take batches chosen by the pure
``SttSchedule`` policy and run them on the model in one ``transcribe_batch``
call each, so finals of sessions that end their turns together are decoded
together. With ``partial_max_load`` set, partials run only while the model was
busy less than that share of the last seconds (``scheduling.BusyMeter``); the
others are dropped. ``warm_up`` pays the model's first-call costs before any
session and measures its pace.

Faults. A circuit breaker (``breaker``, shared by every session) counts failed
and timed-out batches; while it is open finals fail at once with a message the
user can read and partials are skipped. With ``call_timeout_s`` set, a watchdog
thread keeps the queue moving when a batch hangs (deadlines: ``stall_watch``):
after ``stall_after_s`` (by default a few times the recent time per utterance
of the same kind, final or partial, and never less than the warm-up's)
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
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future

import numpy as np

from voicechat.audio import as_float32
from voicechat.engines import stall_watch
from voicechat.engines.call_guard import EngineTimeout
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from voicechat.engines.protocols import AbortableTranscriber, BatchTranscriber, EngineError, SpeechInput
from voicechat.engines.stuck_calls import STUCK_CALLS, StuckCalls
from voicechat.stt.requests import Request, Running, SttStats, fail, settle
from voicechat.stt.scheduling import BusyMeter, Job, SttSchedule, partials_may_run

log = logging.getLogger(__name__)

LABEL = "speech recogniser"


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
        partial_max_load: float | None = None,
    ) -> None:
        self.model = model
        self.call_timeout_s = call_timeout_s
        self.partial_max_load = partial_max_load
        self._fixed_stall_s = stall_after_s
        # Recent batches' seconds per utterance, finals (True) and partials apart; and one utterance's
        # time measured by warm_up: the stall limits follow these.
        self._durations: dict[bool, deque[float]] = {True: deque(maxlen=64), False: deque(maxlen=64)}
        self._baseline: dict[bool, float] = {}
        self._busy = BusyMeter()
        self.breaker = breaker or CircuitBreaker(LABEL)
        self.stats = SttStats()
        self._stuck = stuck
        self._name = name
        self._target = workers
        self._max_threads = workers + max(0, spare_workers)
        self._numbers = itertools.count()
        self._schedule: SttSchedule[Request] = SttSchedule(max_batch)
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._running: dict[threading.Thread, Running] = {}
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

    def _wait(self, request: Request) -> str:
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

    def has_spare_time(self) -> bool:
        """No final waits and the model was busy less than ``partial_max_load`` of the last seconds: the test
        partials pass, asked for a final that may go to waste (a guess at a pause)."""
        with self._cond:
            return not self._schedule.finals_waiting and partials_may_run(
                self._busy.load(time.monotonic()), self.partial_max_load)

    def cancel(self, session_id: str, *, partials_only: bool = False) -> None:
        """Drop the session's queued requests; a model with ``abort`` (remote) also stops its running ones."""
        with self._cond:
            removed = self._schedule.cancel(session_id, partials_only=partials_only)
            running = [r for batch in self._running.values() for r in batch.requests
                       if r.input.session_id == session_id and not (partials_only and r.input.final)]
        for job in removed:
            job.payload.future.cancel()
        if running and isinstance(self.model, AbortableTranscriber):  # callers learn at once; the others go on
            fail(running, CancelledError())  # first: what the aborted call returns must not reach its caller
            self.model.abort([r.input for r in running])

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

    def stall_after_s(self, size: int = 1, final: bool = True) -> float | None:
        """How long a batch of ``size`` finals (or partials) may run before a spare worker takes the queue."""
        with self._cond:
            return self._stall_limit(size, final)

    def _stall_limit(self, size: int, final: bool) -> float | None:
        return stall_watch.stall_limit(self._durations[final], self.call_timeout_s, self._fixed_stall_s, size,
                                       self._baseline.get(final))

    def warm_up(self, audio: np.ndarray, language: str | None = None) -> dict[bool, float]:
        """Decode ``audio`` once as a final, then as a partial, in the calling thread before any session.

        The model's first-call costs are paid here rather than by the first user, and each kind's
        time (seconds, keyed by ``final``) becomes the least its stall limit assumes. Returns them."""
        for final in (True, False):
            started = time.monotonic()
            self.model.transcribe_batch([SpeechInput("warm-up", as_float32(audio), final, language)])
            with self._cond:
                self._baseline[final] = time.monotonic() - started
        return dict(self._baseline)

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

    def _submit(self, speech: SpeechInput) -> Request:
        request = Request(speech, Future())
        with self._cond:
            if self._closed:
                request.future.cancel()
                return request
            replaced = self._schedule.submit(Job(speech.session_id, speech.final, request))
            if replaced is not None:
                self.stats.partials_dropped += 1
            if speech.final and any(not r.final for r in self._running.values()):
                self.stats.finals_behind_partial += 1  # a running decode is not interrupted
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
                shed = []
                if not self._schedule.finals_waiting and not partials_may_run(
                        self._busy.load(time.monotonic()), self.partial_max_load):
                    shed = self._schedule.drop_partials()
                    self.stats.partials_shed += len(shed)
                    self.stats.partials_dropped += len(shed)
                batch = [job.payload for job in self._schedule.next_batch()]
            for job in shed:
                job.payload.future.cancel()
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if batch and self._run_batch(me, batch):
                for r in batch:  # one input may be to blame: each is retried alone, and counted alone
                    self._run_batch(me, [r])

    def _run_batch(self, me: threading.Thread, batch: list[Request]) -> bool:
        """Decode ``batch`` under the watchdog's eye; True if it failed and should be retried one by one."""
        running = Running(batch, me, time.monotonic())
        for r in batch:
            r.started_at = running.started
        try:
            running.permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            with self._cond:
                self.stats.rejected += len(batch)
            fail(batch, exc)
            return False
        with self._cond:
            self._running[me] = running
            self._busy.begin(running.started)
            if running.final:
                self.stats.final_wait_s += sum(running.started - r.queued_at for r in batch)
            self._cond.notify_all()  # the watchdog learns the new deadlines
        try:
            return self._decode(running)
        finally:
            with self._cond:
                self._busy.end(time.monotonic())
                del self._running[me]
                if running.stalled:
                    self._stalled -= 1
                give_up = running.give_up
                self._cond.notify_all()
            if give_up is not None:
                give_up.ended()

    def _decode(self, running: Running) -> bool:
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
            fail(batch, exc)
            return False
        self._record(running, started, failed=False)
        if not running.timed_out:
            permit.succeed()
            for r, text in zip(batch, texts, strict=True):
                settle(r.future, text.strip())
        return False

    def _record(self, running: Running, started: float, *, failed: bool) -> None:
        batch = running.requests
        with self._cond:  # several workers decode at once
            stats = self.stats
            took = time.monotonic() - started
            stats.busy_s += took
            if failed:
                stats.errors += 1
                return
            if not running.timed_out:  # a hang that came back says nothing about the engine's pace
                self._durations[running.final].append(took / len(batch))
            stats.batches += 1
            stats.batch_sizes[len(batch)] += 1
            finals = sum(r.input.final for r in batch)
            if finals:
                stats.busy_final_s += took
            else:
                stats.busy_partial_s += took
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
                    self._running.values(), time.monotonic(), lambda call: self._stall_limit(call.size, call.final),
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
                fail(running.requests, error)
