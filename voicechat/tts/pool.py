"""A pool of K text-to-speech workers shared by every session.

RealtimeTTS-style engines keep one audio queue and one stop event per
instance, so two jobs on one engine mix their audio. Each worker thread here
owns its own engine instance (made by a factory) and runs one job at a time.

A job's chunks go to a per-job queue that the caller's iterator blocks on.
That queue is deliberately unbounded: a sentence's audio is small, and a
worker must never wait for a slow consumer while other sessions' sentences
wait behind it. Cancelling (``abort``, or dropping/closing the iterator) ends
the iterator before its next chunk and stops the engine, within one chunk.

An engine that does not stop within ``stop_grace_s`` is stuck: its thread is
handed to ``StuckCalls`` (named, counted, logged) and a replacement worker with
a new engine instance takes its place, so a hung synthesis costs no capacity.
The stuck thread retires if it ever returns. ``breaker`` is the pool's circuit
breaker; the sessions' call guards report to it.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.first_audio import FirstAudio
from voicechat.engines.protocols import EngineError, SpeechSynthesizer, VoiceSettings
from voicechat.engines.stuck_calls import STUCK_CALLS, GiveUp, StuckCalls
from voicechat.tts.priority import PriorityJobQueue

log = logging.getLogger(__name__)


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class PoolEngine(Protocol):
    """What a pool worker needs from its own engine instance."""

    sample_rate: int

    def stream(self, text: str, voice: VoiceSettings | None = None, cancel: StopFlag | None = None) -> Iterator[bytes]:
        """PCM16 mono chunks at ``sample_rate``; ends early once ``cancel`` is set."""
        ...

    def stop(self) -> None:
        """Interrupt this instance's running ``stream`` (called from another thread)."""
        ...

    def shutdown(self) -> None: ...


class RemoteClient(Protocol):
    """The shared client of a remote backend (``remote.py``)."""

    def remote_status(self) -> dict[str, object]: ...

    def close(self) -> None: ...


_END = object()  # end of a job's chunks


@dataclass(eq=False)
class _Job:
    session_id: str
    text: str
    voice: VoiceSettings
    first_in_reply: bool
    enqueued_at: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    out: queue.SimpleQueue[object] = field(default_factory=queue.SimpleQueue)

    def cancel_now(self) -> None:
        self.cancel.set()
        self.out.put(_END)  # wakes a consumer blocked on the next chunk


@dataclass(frozen=True, slots=True)
class TtsPoolStats:
    workers: int
    queued: int
    busy: int
    done: int
    cancelled: int
    failed: int
    first_chunk_p50_s: float | None  # from enqueue to the first chunk, over recent jobs
    first_chunk_p95_s: float | None
    replaced: int = 0  # workers replaced because their engine would not stop


class JobStream(Iterator[bytes]):
    """The caller's view of one job: blocks on its chunks, cancels it when closed or dropped."""

    def __init__(self, pool: TTSPool, job: _Job) -> None:
        self._pool = pool
        self._job = job
        self._finished = False

    def __next__(self) -> bytes:
        if self._finished:
            raise StopIteration
        item = self._job.out.get()
        if item is _END or self._job.cancel.is_set():
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        """Stop consuming: the job is removed from the queue or stopped where it runs."""
        if not self._finished:
            self._finished = True
            self._pool._cancel_where(lambda job: job is self._job)

    def __del__(self) -> None:
        # A finalizer may run inside any code, even the pool's own locked sections, so it
        # takes no lock: it only flags the job, which a worker then skips or stops.
        if not self._finished:
            self._job.cancel_now()


class TTSPool(SpeechSynthesizer):
    """K worker threads, each with its own engine; first sentences of replies first."""

    def __init__(
        self,
        engine_factory: Callable[[], PoolEngine],
        workers: int = 2,
        join_timeout_s: float = 5.0,
        *,
        breaker: CircuitBreaker | None = None,
        stop_grace_s: float = 2.0,
        stuck: StuckCalls = STUCK_CALLS,
        remote: RemoteClient | None = None,
        first_audio: FirstAudio | None = None,
    ) -> None:
        """``remote``: the shared client of a remote backend (its ``health()`` goes to /health/detailed, and
        it is closed with the pool). ``first_audio``: marked while a reply's first piece is synthesized, up to
        its first chunk (the language model makes way meanwhile)."""
        if workers < 1:
            raise ValueError("a TTS pool needs at least one worker (tts.workers >= 1)")
        self._engines: list[PoolEngine] = []
        try:
            for _ in range(workers):  # in the caller's thread: a missing model fails at startup
                self._engines.append(engine_factory())
        except BaseException:
            for engine in self._engines:
                engine.shutdown()
            raise
        rates = {engine.sample_rate for engine in self._engines}
        if len(rates) != 1:
            raise EngineError(f"TTS engine instances disagree on their sample rate: {sorted(rates)}")
        self.sample_rate = rates.pop()
        self.join_timeout_s = join_timeout_s
        self.breaker = breaker or CircuitBreaker("speech synthesizer")
        self.stop_grace_s = stop_grace_s
        self.remote = remote
        self._first_audio = first_audio
        self._factory = engine_factory
        self._stuck = stuck
        self._stopping: dict[int, GiveUp] = {}  # worker index -> grace period of its stopped job
        self._retired: set[int] = set()  # workers replaced while stuck
        self._replaced = 0
        self._cond = threading.Condition()
        self._queue: PriorityJobQueue[_Job] = PriorityJobQueue()
        self._running: dict[int, _Job] = {}
        self._closed = False
        self._done = self._cancelled = self._failed = 0
        self._first_chunk_s: deque[float] = deque(maxlen=1000)
        self._threads = {
            i: threading.Thread(target=self._work, args=(i,), name=f"tts-pool-{i}", daemon=True) for i in range(workers)
        }
        for thread in self._threads.values():
            thread.start()

    # -- SpeechSynthesizer ---------------------------------------------------------
    def synthesize(
        self, session_id: str, text: str, voice: VoiceSettings, *, first_in_reply: bool = False
    ) -> Iterator[bytes]:
        job = _Job(session_id, text, voice, first_in_reply)
        with self._cond:
            if self._closed:
                raise EngineError("the TTS pool is closed")
            self._queue.push(job, first_in_reply)
            self._cond.notify()
        return JobStream(self, job)

    def abort(self, session_id: str) -> None:
        self._cancel_where(lambda job: job.session_id == session_id)

    # -- lifecycle and metrics -----------------------------------------------------
    def close(self) -> bool:
        """Cancel every job, stop and join the workers; False if one would not end in time."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._cancelled += len(self._queue)
                for job in self._queue.drain():
                    job.cancel_now()
                self._stop_running(lambda job: True)
                self._cond.notify_all()
        deadline = time.monotonic() + self.join_timeout_s
        with self._cond:
            threads = list(self._threads.values())
            engines = [e for i, e in enumerate(self._engines) if i in self._threads and i not in self._retired]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("TTS workers still running after %.1f s: %s", self.join_timeout_s, stuck)
        else:
            for engine in engines:
                engine.shutdown()
        if self.remote is not None:
            self.remote.close()
        return not stuck

    def stats(self) -> TtsPoolStats:
        with self._cond:
            samples = sorted(self._first_chunk_s)
            return TtsPoolStats(
                workers=len(self._threads) - len(self._retired), queued=len(self._queue), busy=len(self._running),
                done=self._done, cancelled=self._cancelled, failed=self._failed,
                first_chunk_p50_s=statistics.median(samples) if samples else None,
                first_chunk_p95_s=samples[min(len(samples) - 1, int(0.95 * len(samples)))] if samples else None,
                replaced=self._replaced,
            )

    # -- internals -----------------------------------------------------------------
    def _cancel_where(self, predicate: Callable[[_Job], bool]) -> None:
        with self._cond:
            removed = self._queue.remove_if(predicate)
            self._cancelled += len(removed)
            for job in removed:
                job.cancel_now()
            self._stop_running(predicate)

    def _stop_running(self, predicate: Callable[[_Job], bool]) -> None:
        # Called with the lock held: a worker takes the lock before its next job,
        # so stopping its engine here can only hit the job we mean.
        for index, job in self._running.items():
            if predicate(job) and not job.cancel.is_set():
                job.cancel_now()
                self._engines[index].stop()
                if not self._closed and index not in self._stopping:
                    self._stopping[index] = self._stuck.give_up(
                        self._threads[index].name, "tts", job.session_id, reason="stopped",
                        grace_s=self.stop_grace_s, on_stuck=lambda _h, i=index, j=job: self._replace(i, j),
                    )

    def _replace(self, index: int, job: _Job) -> None:
        """Worker ``index`` did not stop ``job`` in time: retire it and start a new worker and engine."""
        with self._cond:
            if self._closed or self._running.get(index) is not job:
                return  # it came back after all, or the pool is closing
            self._retired.add(index)
            del self._running[index]
        try:
            engine = self._factory()
        except Exception:
            log.exception("could not start a replacement TTS worker; the pool has one worker less")
            return
        with self._cond:
            if self._closed:
                engine.shutdown()
                return
            new = len(self._engines)
            self._engines.append(engine)
            thread = threading.Thread(target=self._work, args=(new,), name=f"tts-pool-{new}", daemon=True)
            self._threads[new] = thread
            self._replaced += 1
            thread.start()
        log.warning("TTS worker %d replaced by worker %d (its engine did not stop)", index, new)

    def _work(self, index: int) -> None:
        engine = self._engines[index]
        while True:
            with self._cond:
                while not self._closed and not len(self._queue) and index not in self._retired:
                    self._cond.wait()
                if index in self._retired:  # replaced while stuck: its replacement has a new engine
                    self._retired.discard(index)
                    del self._threads[index]
                    job = None
                elif self._closed:
                    return
                else:
                    job = self._queue.pop()
                    assert job is not None
                    if job.cancel.is_set():  # its iterator was dropped while it waited
                        self._cancelled += 1
                        continue
                    self._running[index] = job
            if job is None:
                engine.shutdown()
                return
            outcome = "cancelled"
            try:
                outcome = self._run(engine, job)
            finally:
                job.out.put(_END)
                with self._cond:
                    if self._running.get(index) is job:
                        del self._running[index]
                    stopping = self._stopping.pop(index, None)
                    if outcome == "done":
                        self._done += 1
                    elif outcome == "failed":
                        self._failed += 1
                    else:
                        self._cancelled += 1
                if stopping is not None:
                    stopping.ended()

    def _run(self, engine: PoolEngine, job: _Job) -> str:
        """Stream one job into its queue; returns done, cancelled or failed."""
        first = True
        chunks: Iterator[bytes] = iter(())
        urgent = self._first_audio if job.first_in_reply else None  # a listener waits for this one
        token = urgent.begin() if urgent is not None else 0
        try:
            chunks = engine.stream(job.text, job.voice, job.cancel)
            for chunk in chunks:
                if job.cancel.is_set():
                    return "cancelled"
                if first:
                    first = False
                    with self._cond:
                        self._first_chunk_s.append(time.monotonic() - job.enqueued_at)
                    if urgent is not None:
                        urgent.end(token)
                        urgent = None
                job.out.put(chunk)
        except Exception as exc:
            if job.cancel.is_set():
                return "cancelled"  # e.g. the engine complained about being stopped
            log.warning("TTS job of session %s failed: %s", job.session_id, exc)
            job.out.put(exc if isinstance(exc, EngineError) else EngineError(f"text to speech failed: {exc}"))
            return "failed"
        finally:
            if urgent is not None:
                urgent.end(token)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return "cancelled" if job.cancel.is_set() else "done"
