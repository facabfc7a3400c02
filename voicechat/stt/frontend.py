"""The listening front end: one thread that runs voice activity detection for every session.

Every ``tick_s`` (32 ms, one Silero chunk) the thread takes the next 512-sample
chunk of each session that has one, runs Silero once over all of them as one
batch (``SileroBatch``) and hands each session its verdict; a session behind by
more than a chunk gets up to ``max_rounds`` chunks a tick, one batch a round.
Then each session may end its utterance from the audio that arrived since
(``Listener.on_tick``).

Between ticks, a session whose next decision is urgent asks for a pass of its
own (``wake``): a loud chunk while nobody speaks (speech may start: a barge-in),
any audio while the speaker is silent (the silence may now end the turn or open
a pause), a judge's signal. Such passes start at most once per
``batch_interval_s`` (5 ms) and serve only the sessions that asked, so those
that arrive within the interval share one batch (Silero costs about 0.075 ms a
call plus 0.058 ms a row here). A quiet room and the middle of an utterance
wait for the tick, as before.

Onsets need not wait for the chunk grid either: while nobody speaks, a session
whose newest frame is loud asks for a probe (``Listener.onset_probe``): after
any whole chunk it completed, Silero over the 32 ms ending at that frame, with a
copy of the stream's state, kept nowhere. Speech may thus start (a barge-in) up
to a chunk sooner; the chunks' own verdicts are unchanged.

Sessions' own threads are not woken for audio at all, only by what their
listener reports (speech started, partial due, utterance ended).

Contract for listeners: ``take_chunk`` and the ``on_*`` calls come from this
thread only, one listener at a time; they must not block (they post events and
return). ``wake`` may be called from any thread. A Silero call that fails gives
no verdict for that round (each listener keeps its last one) and is counted;
one that is slow delays the pass, which is counted as an overrun when it makes
the next tick late, not any session's other work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voicechat.engines.thread_names import set_native_name
from voicechat.stt.silero_batch import CHUNK, SileroBatch, SileroStream

log = logging.getLogger(__name__)

TICK_S = CHUNK / 16000
THREAD_NAME = "vc-listen"  # the OS name, for per-thread CPU


class Listener(Protocol):
    stream: SileroStream

    def needs_vad(self, rms: float) -> bool:
        """Whether a chunk of this loudness (RMS of samples in -1..1) needs the model; False = no speech."""
        ...

    def take_chunk(self) -> bytes | None:
        """The next whole chunk (1024 bytes of PCM16), or None."""
        ...

    def on_verdict(self, chunk: bytes, probability: float | None) -> None: ...

    def onset_probe(self) -> tuple[SileroStream, np.ndarray] | None:
        """Where speech may start in the audio waiting between chunks: a throwaway stream and the 512-sample
        window to look at (``silero_batch.probe``); None when no look is due (cheap: called every pass)."""
        ...

    def on_probe(self, probability: float | None) -> None:
        """Silero's verdict on the window ``onset_probe`` gave (None: the call failed)."""
        ...

    def on_tick(self) -> None:
        """After this pass's chunks: apply the signals in, and end the utterance if the audio waiting completes
        its silence."""
        ...


@dataclass
class FrontEndStats:
    ticks: int = 0  # passes: every tick, and the urgent ones between ticks
    urgent: int = 0  # passes between ticks, for listeners that woke the thread
    batches: int = 0
    chunks: int = 0
    probes: int = 0  # looks between chunks where speech may start (``Listener.onset_probe``)
    skipped: int = 0  # chunks too quiet to need the model (nobody speaking)
    vad_errors: int = 0
    overruns: int = 0  # ticks that started late because the last pass ran over
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
        batch_interval_s: float = 0.005,
        max_rounds: int = 4,
    ) -> None:
        self._make_vad = vad
        self._vad: SileroBatch | None = None
        self.tick_s = tick_s
        self.batch_interval_s = batch_interval_s
        self.max_rounds = max_rounds
        self.stats = FrontEndStats()
        self._listeners: dict[Listener, None] = {}  # an ordered set
        self._pending: dict[Listener, None] = {}  # listeners with work, in the order they asked
        self._cond = threading.Condition()
        self._idle = False  # the thread waits for work (a wake must notify it)
        self._closed = False
        self._stopping = False  # the thread found no listener and is returning
        self._thread: threading.Thread | None = None
        self._busy_with: Listener | None = None  # the listener the thread is calling into
        self._detaching = 0  # detach calls waiting for the thread to leave their listener

    def attach(self, listener: Listener) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the listening front end is closed")
            if self._vad is None:
                self._vad = self._make_vad()  # loads the model once, in the caller's thread
            self._listeners[listener] = None
            if self._thread is None or self._stopping:
                if self._thread is not None:
                    self._thread.join()  # it saw no listener and is returning: reap it before the next
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="listening-frontend", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wake(self, listener: Listener) -> None:
        """``listener`` has urgent work: serve it within ``batch_interval_s`` rather than at the next tick
        (any thread may call; cheap: a lock and, if the thread is idle, a notify)."""
        with self._cond:
            if listener in self._listeners:
                self._pending[listener] = None
                if self._idle:
                    self._cond.notify()

    def detach(self, listener: Listener) -> None:
        """Forget ``listener``; once this returns, the thread makes no further call into it."""
        with self._cond:
            self._listeners.pop(listener, None)
            self._pending.pop(listener, None)
            self._cond.notify_all()
            if threading.current_thread() is self._thread:
                return
            self._detaching += 1
            try:
                while self._busy_with is listener:  # in a call now: wait for it to return
                    self._cond.wait()
            finally:
                self._detaching -= 1

    @property
    def listeners(self) -> int:
        with self._cond:
            return len(self._listeners)

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._listeners.clear()
            self._pending.clear()
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        set_native_name(THREAD_NAME)
        next_tick, last_pass = time.monotonic(), float("-inf")
        while True:
            with self._cond:
                work = self._next_work(next_tick, last_pass)
            if work is None:
                return
            listeners, regular = work
            now = last_pass = time.monotonic()
            if regular:
                if now - next_tick > self.tick_s:
                    self.stats.overruns += 1
                    next_tick = now
                next_tick += self.tick_s
            else:
                self.stats.urgent += 1
            self.stats.ticks += 1  # with ``urgent``, before the pass: the two always agree
            started = time.perf_counter()
            self._pass(listeners)
            self.stats.max_tick_ms = max(self.stats.max_tick_ms, (time.perf_counter() - started) * 1000.0)

    def _next_work(self, next_tick: float, last_pass: float) -> tuple[list[Listener], bool] | None:
        """Under the lock: wait for the next tick (every listener) or for the batch interval after an urgent
        wake (those who asked); None when the thread should return (closed, or nobody left to listen to)."""
        while True:
            if self._closed or not self._listeners:
                self._stopping = True  # the next attach starts a new thread
                return None
            now = time.monotonic()
            if now >= next_tick:
                self._pending.clear()
                return list(self._listeners), True
            deadline = next_tick
            if self._pending:
                urgent_at = last_pass + self.batch_interval_s
                if urgent_at <= now:
                    asked = list(self._pending)
                    self._pending.clear()
                    return asked, False
                deadline = min(deadline, urgent_at)
            self._idle = not self._pending  # gathering an urgent batch: later wakes join it without a notify
            self._cond.wait(deadline - now)
            self._idle = False

    def _pass(self, listeners: list[Listener]) -> None:
        serving = listeners
        for _ in range(self.max_rounds):
            batch: list[tuple[Listener, bytes]] = []
            for listener in serving:
                chunk = self._call(listener, listener.take_chunk)
                if chunk:
                    batch.append((listener, chunk))
            if not batch:
                break
            probabilities = self._verdicts(batch)
            for (listener, chunk), p in zip(batch, probabilities, strict=True):
                self._call(listener, listener.on_verdict, chunk, p)
            serving = [listener for listener, _ in batch]  # only these may have another chunk
        self._probe(listeners)
        for listener in listeners:
            self._call(listener, listener.on_tick)

    def _probe(self, listeners: list[Listener]) -> None:
        """One batch over the windows that listeners ask to look at between chunks (onsets only)."""
        looks = []
        for listener in listeners:
            look = self._call(listener, listener.onset_probe)
            if look is not None:
                looks.append((listener, look))
        if not looks:
            return
        self.stats.probes += len(looks)
        streams = [stream for _, (stream, _) in looks]
        probabilities = self._run_vad(streams, np.stack([window for _, (_, window) in looks]))
        for (listener, _), p in zip(looks, probabilities, strict=True):
            self._call(listener, listener.on_probe, p)

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
        self.stats.max_batch = max(self.stats.max_batch, len(rows))
        probabilities = self._run_vad([batch[i][0].stream for i in rows], chunks[rows])
        for i, p in zip(rows, probabilities, strict=True):
            verdicts[i] = p
        return verdicts

    def _run_vad(self, streams: list[SileroStream], chunks: np.ndarray) -> list[float | None]:
        """One Silero batch; a failed call is counted and gives no verdict (None) to any row."""
        assert self._vad is not None
        self.stats.batches += 1
        try:
            return [float(p) for p in self._vad.run(streams, chunks)]
        except Exception:
            self.stats.vad_errors += 1
            if self.stats.vad_errors == 1 or self.stats.vad_errors % 1000 == 0:
                log.exception("voice activity detection failed (%d so far)", self.stats.vad_errors)
            return [None] * len(streams)

    def _call(self, listener: Listener, method: Callable[..., object], *args: object) -> object:
        """One call into a listener, unless it was detached; one that raises is counted, never the end of the
        thread.

        No lock on this hot path (three calls per session per tick): the thread marks the listener busy, then
        checks it is still attached; ``detach`` removes it, then waits while it is marked. Each step is atomic
        under the GIL, so either the thread sees the removal and skips, or ``detach`` sees the mark and waits.
        """
        self._busy_with = listener
        try:
            if listener not in self._listeners:
                return None
            return method(*args)
        except Exception:
            self.stats.listener_errors += 1
            log.exception("listener %r failed", listener)
            return None
        finally:
            self._busy_with = None
            if self._detaching:
                with self._cond:
                    self._cond.notify_all()
