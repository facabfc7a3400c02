"""The listening front end: one thread that runs voice activity detection for every session.

Every ``tick_s`` (32 ms, one Silero chunk) the thread takes the next 512-sample
chunk of each session that has one, runs Silero once over all of them as one
batch (``SileroBatch``) and hands each session its verdict; a session behind by
more than a chunk gets up to ``max_rounds`` chunks a tick, one batch a round.
Then each session may end its utterance from the audio that arrived since
(``Listener.on_tick``). Sessions' own threads are not woken for audio at all,
only by what their listener reports (speech started, partial due, utterance
ended).

Contract for listeners: ``take_chunk`` and the ``on_*`` calls come from this
thread only, one listener at a time; they must not block (they post events and
return). A Silero call that fails gives no verdict for that round (each
listener keeps its last one) and is counted; one that is slow delays the tick,
which is counted as an overrun, not any session's other work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voicechat.stt.silero_batch import CHUNK, SileroBatch, SileroStream

log = logging.getLogger(__name__)

TICK_S = CHUNK / 16000


class Listener(Protocol):
    stream: SileroStream

    def needs_vad(self, rms: float) -> bool:
        """Whether a chunk of this loudness (RMS of samples in -1..1) needs the model; False = no speech."""
        ...

    def take_chunk(self) -> bytes | None:
        """The next whole chunk (1024 bytes of PCM16), or None."""
        ...

    def on_verdict(self, chunk: bytes, probability: float | None) -> None: ...

    def on_tick(self) -> None: ...


@dataclass
class FrontEndStats:
    ticks: int = 0
    batches: int = 0
    chunks: int = 0
    skipped: int = 0  # chunks too quiet to need the model (nobody speaking)
    vad_errors: int = 0
    overruns: int = 0  # ticks that started late because the last one ran over
    listener_errors: int = 0
    max_tick_ms: float = 0.0
    max_batch: int = 0


class ListeningFrontEnd:
    """Owns its thread: started by ``attach``, it returns once no listener is left (the next ``attach``
    joins it and starts another) and ``close`` stops and joins it."""

    def __init__(
        self,
        vad: Callable[[], SileroBatch] = SileroBatch,
        *,
        tick_s: float = TICK_S,
        max_rounds: int = 4,
    ) -> None:
        self._make_vad = vad
        self._vad: SileroBatch | None = None
        self.tick_s = tick_s
        self.max_rounds = max_rounds
        self.stats = FrontEndStats()
        self._listeners: list[Listener] = []
        self._cond = threading.Condition()
        self._closed = False
        self._stopping = False  # the thread found no listener and is returning
        self._thread: threading.Thread | None = None

    def attach(self, listener: Listener) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the listening front end is closed")
            if self._vad is None:
                self._vad = self._make_vad()  # loads the model once, in the caller's thread
            self._listeners.append(listener)
            if self._thread is None or self._stopping:
                if self._thread is not None:
                    self._thread.join()  # it saw no listener and is returning: reap it before the next
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="listening-frontend", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def detach(self, listener: Listener) -> None:
        """Forget ``listener``; once this returns, the thread makes no further call into it."""
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)
            while self._busy_with is listener and threading.current_thread() is not self._thread:
                self._cond.wait()

    @property
    def listeners(self) -> int:
        with self._cond:
            return len(self._listeners)

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._listeners.clear()
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------
    _busy_with: Listener | None = None

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            with self._cond:
                if self._closed or not self._listeners:
                    self._stopping = True  # nobody to listen to: the next attach starts a new thread
                    return
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    if self._closed:
                        return
                listeners = list(self._listeners)
            now = time.monotonic()
            if now - next_tick > self.tick_s:
                self.stats.overruns += 1
                next_tick = now
            next_tick += self.tick_s
            started = time.perf_counter()
            self._tick(listeners)
            self.stats.ticks += 1
            self.stats.max_tick_ms = max(self.stats.max_tick_ms, (time.perf_counter() - started) * 1000.0)

    def _tick(self, listeners: list[Listener]) -> None:
        for _ in range(self.max_rounds):
            batch: list[tuple[Listener, bytes]] = []
            for listener in listeners:
                chunk = self._call(listener, listener.take_chunk)
                if chunk:
                    batch.append((listener, chunk))
            if not batch:
                break
            probabilities = self._verdicts(batch)
            for (listener, chunk), p in zip(batch, probabilities, strict=True):
                self._call(listener, listener.on_verdict, chunk, p)
        for listener in listeners:
            self._call(listener, listener.on_tick)

    def _verdicts(self, batch: list[tuple[Listener, bytes]]) -> list[float | None]:
        """Silero's verdicts; a chunk its listener calls too quiet for speech gets 0 without the model."""
        assert self._vad is not None
        chunks = np.stack([np.frombuffer(chunk, dtype=np.int16) for _, chunk in batch]).astype(np.float32) / 32768.0
        rms = np.sqrt(np.mean(chunks * chunks, axis=1))
        verdicts: list[float | None] = [0.0] * len(batch)
        rows = []
        for i, (listener, _) in enumerate(batch):
            if self._call(listener, listener.needs_vad, float(rms[i])):
                rows.append(i)
                if listener.stream.skipped:  # a new burst after quiet: a fresh state, as RealtimeSTT gives each
                    listener.stream.state[:] = 0.0
                    listener.stream.skipped = False
            else:
                listener.stream.skip(chunks[i])
        self.stats.chunks += len(batch)
        self.stats.skipped += len(batch) - len(rows)
        if not rows:
            return verdicts
        self.stats.batches += 1
        self.stats.max_batch = max(self.stats.max_batch, len(rows))
        try:
            probabilities = self._vad.run([batch[i][0].stream for i in rows], chunks[rows])
        except Exception:
            self.stats.vad_errors += 1
            if self.stats.vad_errors == 1 or self.stats.vad_errors % 1000 == 0:
                log.exception("voice activity detection failed (%d so far)", self.stats.vad_errors)
            probabilities = [None] * len(rows)
        for i, p in zip(rows, probabilities, strict=True):
            verdicts[i] = None if p is None else float(p)
        return verdicts

    def _call(self, listener: Listener, method: Callable[..., object], *args: object) -> object:
        """One call into a listener; a listener that raises is counted, never the end of the thread."""
        with self._cond:
            if listener not in self._listeners:
                return None
            self._busy_with = listener
        try:
            return method(*args)
        except Exception:
            self.stats.listener_errors += 1
            log.exception("listener %r failed", listener)
            return None
        finally:
            with self._cond:
                self._busy_with = None
                self._cond.notify_all()
