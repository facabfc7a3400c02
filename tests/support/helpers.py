"""Test harness: real espeak-ng speech, a paced audio feeder, an event collector."""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from voicechat.audio import AudioFrame
from voicechat.core.events import Event, ReplyDone, StateChanged, TurnState
from voicechat.session.bounded_queue import QueueClosed
from voicechat.session.pipeline import SpeechPipelineManager
from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k, with_silence

SENTENCES = SAMPLE_SENTENCES


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "the condition") -> None:
    """Wait for a condition another thread or process makes true (checked every 10 ms; fails after ``timeout_s``)."""
    deadline, tick = time.monotonic() + timeout_s, threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        tick.wait(0.01)


@lru_cache(maxsize=None)
def speech(text: str) -> np.ndarray:
    """espeak-ng speech of ``text`` at 16 kHz, made once per test run."""
    return speech_16k(text)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """``samples``: (n,) mono or (n, channels) int16, as a WAV file (the file audio backend's input)."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def utterance(text: str, before_s: float = 0.3, after_s: float = 1.2) -> np.ndarray:
    return with_silence(speech(text), before_s, after_s)


class EventCollector:
    """Drains a pipeline's outbox on its own thread; tests wait on conditions.

    The thread ends by itself when the pipeline closes its outbox.
    """

    def __init__(self, pipeline: SpeechPipelineManager) -> None:
        self.events: list[Event] = []
        self.on_event: Callable[[Event], None] | None = None
        self._cond = threading.Condition()
        self._pipeline = pipeline
        self._thread = threading.Thread(target=self._run, name="test-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                event = self._pipeline.outbox.get()
            except QueueClosed:
                return
            if self.on_event is not None:
                self.on_event(event)
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 20.0) -> list[Event]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events), timeout):
                kinds = [type(e).__name__ for e in self.events][-30:]
                raise AssertionError(f"condition not met within {timeout}s; last events: {kinds}")
            return list(self.events)

    def join(self, timeout: float = 5.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def count(kind: type, n: int = 1) -> Callable[[list[Event]], bool]:
    """Predicate for ``wait_for``: at least ``n`` events of ``kind`` arrived."""
    return lambda events: sum(isinstance(e, kind) for e in events) >= n


def back_to_listening(events: list[Event]) -> bool:
    """A reply is done and the session is listening again."""
    states = [e.state for e in events if isinstance(e, StateChanged)]
    return count(ReplyDone)(events) and bool(states) and states[-1] is TurnState.LISTENING


class Feeder:
    """Streams audio into a pipeline in 20 ms frames at real-time pace.

    Pacing models a microphone; it waits on a stop event, so it ends at once
    when the test is done.
    """

    def __init__(self, pipeline: SpeechPipelineManager, frame_ms: int = 20, rate: int = 16000) -> None:
        self.pipeline = pipeline
        self.frame = rate * frame_ms // 1000
        self.rate = rate
        self.stop = threading.Event()

    def play(self, audio: np.ndarray) -> float:
        """Feed ``audio`` in real time; returns the monotonic time it started."""
        start = time.monotonic()
        for n, i in enumerate(range(0, len(audio), self.frame)):
            frame = audio[i : i + self.frame]
            self.pipeline.feed_audio(AudioFrame(frame.tobytes(), self.rate, seq=n))
            due = start + (i + len(frame)) / self.rate - time.monotonic()
            if due > 0 and self.stop.wait(due):
                break
        return start

    def play_in_background(self, audio: np.ndarray) -> threading.Thread:
        t = threading.Thread(target=self.play, args=(audio,), name="test-feeder", daemon=True)
        t.start()
        return t


class FixedTextModel:
    """A TranscriptionModel that answers every final with ``text`` and ignores partials (recognizer tests)."""

    def __init__(self, text: str = "text") -> None:
        self.text = text

    def transcribe(self, audio, **_) -> str:
        return self.text

    def request_partial(self, *_, **__) -> None:
        pass

    def has_spare_time(self) -> bool:
        return True

    def cancel(self, *_, **__) -> None:
        pass
