"""What the remote speech-to-text engines share: a batch as concurrent requests, abort, the audio they send.

``RemoteTranscriber`` is the ``AbortableTranscriber`` half that does not depend
on the protocol: the shared ``SttScheduler`` hands it a batch of utterances
(several sessions'), and since a remote server batches for itself, each
utterance becomes its own request, at most ``concurrency`` at once, on a thread
pool the engine owns (a batch of one runs in the calling thread). The
scheduler still gives every call its deadline (``stt.call_timeout_s``), its
circuit breaker, and finals before partials; the engine adds its client's
connect and read timeouts. ``abort`` (the scheduler's ``cancel`` of a session,
on its close or once its utterance ended) stops the named inputs' requests
through their ``Abortable`` handles; they come back as "" and the batch's other
texts are unaffected. A request that fails raises ``EngineError`` from
``transcribe_batch`` once all requests of the batch are done.

The audio helpers are pure: float32 mono 16 kHz in [-1, 1] to PCM16 and WAV.
"""

from __future__ import annotations

import io
import logging
import threading
import wave
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from voicechat.audio import float_to_pcm16
from voicechat.engines.protocols import EngineError, SpeechInput
from voicechat.engines.remote import Abortable, describe

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


def pcm16_bytes(audio: np.ndarray) -> bytes:
    """float32 mono samples in [-1, 1] as little-endian 16-bit PCM (clipped)."""
    return float_to_pcm16(np.asarray(audio, np.float32)).astype("<i2").tobytes()


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """float32 mono samples in [-1, 1] as a 16-bit mono WAV file at ``rate`` Hz."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16_bytes(audio))
    return out.getvalue()


class RemoteTranscriber(ABC):
    """A ``BatchTranscriber`` over a speech-to-text server; subclasses implement one request."""

    def __init__(self, endpoint: str, *, concurrency: int = 4, name: str = "stt-remote") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._calls: dict[SpeechInput, Abortable] = {}  # running requests (SpeechInput hashes by identity)
        self._closed = False
        self.aborted = 0  # requests stopped by abort or close

    # -- BatchTranscriber / AbortableTranscriber ------------------------------------------
    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        """One text per input, in order; EngineError if any request failed (after all have ended)."""
        calls = [Abortable() for _ in inputs]
        with self._lock:
            if self._closed:
                raise EngineError("The remote speech recogniser's client is closed")
            self._calls.update(zip(inputs, calls, strict=True))
        try:
            if len(inputs) == 1:
                results = [self._one(inputs[0], calls[0])]
            else:
                futures = [self._pool.submit(self._one, item, call) for item, call in zip(inputs, calls, strict=True)]
                results = [future.result() for future in futures]
        finally:
            with self._lock:
                for item in inputs:
                    self._calls.pop(item, None)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [str(text) for text in results]

    def abort(self, inputs: Sequence[SpeechInput]) -> None:
        with self._lock:
            calls = [self._calls[item] for item in inputs if item in self._calls]
            self.aborted += len(calls)
        for call in calls:
            call.abort()

    def close(self) -> None:
        """Abort what runs, then stop and join the request threads (idempotent)."""
        with self._lock:
            self._closed = True
            calls = list(self._calls.values())
            self.aborted += len(calls)
        for call in calls:
            call.abort()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @abstractmethod
    def remote_status(self) -> dict[str, object]:
        """For /health/detailed: endpoint, reachable, error (``engines.remote.RemoteEngine``)."""

    # -- one request ---------------------------------------------------------------------
    @abstractmethod
    def transcribe_one(self, item: SpeechInput, call: Abortable) -> str:
        """The text of one utterance; stops (any result) once ``call`` is aborted; errors raise."""

    def _one(self, item: SpeechInput, call: Abortable) -> str | BaseException:
        if len(item.audio) == 0:
            return ""
        try:
            text = self.transcribe_one(item, call)
        except Exception as exc:  # noqa: BLE001 - handed to transcribe_batch, raised there
            if not call.aborted.is_set():
                if isinstance(exc, EngineError):
                    return exc
                error = EngineError(f"The speech recogniser at {self.endpoint} failed: {describe(exc)}")
                error.__cause__ = exc
                return error
            text = ""
        return "" if call.aborted.is_set() else text.strip()
