"""The shared STT scheduler: one speech-to-text model, every session's requests.

Each session's recognizer hands its work here instead of owning a model:
finals through the blocking ``transcribe`` (RealtimeSTT calls it from a thread
of its own per utterance), partials through ``request_partial`` (fire and
forget, latest wins). ``workers`` threads take batches chosen by the pure
``SttSchedule`` policy and run them on the model in one ``transcribe_batch``
call each, so finals of sessions that end their turns together are decoded
together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

import numpy as np

from voicechat.audio import as_float32
from voicechat.engines.base import BatchTranscriber, EngineError, SpeechInput
from voicechat.stt_scheduling import Job, SttSchedule

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    input: SpeechInput
    future: Future[str]
    queued_at: float = field(default_factory=time.monotonic)


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


class SttScheduler:
    """Fair, batching front of one shared ``BatchTranscriber``."""

    def __init__(
        self,
        model: BatchTranscriber,
        *,
        workers: int = 1,
        max_batch: int = 8,
        final_timeout_s: float | None = None,
        name: str = "stt",
    ) -> None:
        self.model = model
        self.final_timeout_s = final_timeout_s
        self.stats = SttStats()
        self._schedule: SttSchedule[_Request] = SttSchedule(max_batch)
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-scheduler-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- TranscriptionModel ------------------------------------------------------
    def transcribe(self, audio: np.ndarray, *, session_id: str, final: bool, language: str | None = None) -> str:
        """Queue a request and wait for its text (finals; partials use ``request_partial``)."""
        future = self._submit(SpeechInput(session_id, as_float32(audio), final, language or None))
        try:
            return future.result(timeout=self.final_timeout_s)
        except CancelledError:
            raise EngineError("transcription cancelled (session closed or scheduler stopped)") from None
        except TimeoutError:
            future.cancel()
            raise EngineError(f"transcription took longer than {self.final_timeout_s:.0f} s") from None

    def request_partial(
        self, session_id: str, audio: np.ndarray, on_text: Callable[[str], None], language: str | None = None
    ) -> None:
        future = self._submit(SpeechInput(session_id, as_float32(audio), False, language or None))

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

    def close(self) -> None:
        """Stop the workers; waiting requests are cancelled (their callers get EngineError)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = []
            while len(self._schedule):
                pending.extend(self._schedule.next_batch())
            self._cond.notify_all()
        for job in pending:
            job.payload.future.cancel()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        close = getattr(self.model, "close", None)
        if callable(close):
            close()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._schedule)

    # -- internals ---------------------------------------------------------------
    def _submit(self, speech: SpeechInput) -> Future[str]:
        request = _Request(speech, Future())
        with self._cond:
            if self._closed:
                request.future.cancel()
                return request.future
            replaced = self._schedule.submit(Job(speech.session_id, speech.final, request))
            if replaced is not None:
                self.stats.partials_dropped += 1
            self._cond.notify()
        if replaced is not None:
            replaced.payload.future.cancel()
        return request.future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not len(self._schedule):
                    self._cond.wait()
                if self._closed:
                    return
                batch = [job.payload for job in self._schedule.next_batch()]
            self._decode([r for r in batch if r.future.set_running_or_notify_cancel()])

    def _decode(self, batch: Sequence[_Request]) -> None:
        if not batch:
            return
        started = time.monotonic()
        try:
            texts = self.model.transcribe_batch([r.input for r in batch])
            if len(texts) != len(batch):
                raise EngineError(f"model returned {len(texts)} transcripts for {len(batch)} inputs")
        except Exception as exc:  # every caller of the batch learns of the failure
            self._record(batch, started, failed=True)
            log.warning("stt batch of %d failed: %s", len(batch), exc)
            for r in batch:
                r.future.set_exception(exc)
            return
        self._record(batch, started, failed=False)
        for r, text in zip(batch, texts, strict=True):
            r.future.set_result(text.strip())

    def _record(self, batch: Sequence[_Request], started: float, *, failed: bool) -> None:
        with self._cond:  # several workers decode at once
            stats = self.stats
            stats.busy_s += time.monotonic() - started
            if failed:
                stats.errors += 1
                return
            stats.batches += 1
            stats.batch_sizes[len(batch)] += 1
            finals = sum(r.input.final for r in batch)
            stats.finals += finals
            stats.partials += len(batch) - finals
