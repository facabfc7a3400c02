"""Per-session recognizer on the shared listening front end (``vad.frontend = "batched"``).

The capture stage writes 16 kHz PCM16 into ``backlog`` from the receiving
thread; the front end's thread takes it in Silero chunks, and this session's
``ListeningState`` decides where speech starts and ends. Speech start and end
are reported from the front end's thread (they only take a lock and post to
queues); partials go to the shared STT scheduler as fire-and-forget requests;
a finished utterance is queued for ``next_final``, which the session's STT
worker calls and which asks the shared model for the transcript.

Every chunk written is dated on arrival, so the end of speech, found in
samples of the stream, is also known on the wall clock: the time the last
voiced sample reached the server (``voice_ended_at`` of ``on_speech_end``).

Inside the silence: when the user pauses, the STT worker transcribes the
utterance so far at once (``on_transcript_early``); if the turn then ends in that
pause, that transcript is the final one. Where the rules guess a pause before it
opens (``PauseLikely``) and the shared model has spare time, the worker starts
that transcript then, and the pause that opens in the same quiet takes it
instead of transcribing again. The turn's judges (``TurnSignals``: the
sound's verdict from a shared Smart Turn model, the words' from the early
transcript) report back here and reach the listening state at the front end's
next pass, which they ask for. Speech after the pause drops all of it (``on_speech_resumed``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voicechat.audio import frame_rms, pcm16_samples, pcm16_to_float
from voicechat.core.events import EndOfTurn
from voicechat.engines.protocols import EngineError, RecognizerCallbacks, TranscriptionModel
from voicechat.session.bounded_queue import BoundedLRUQueue, QueueClosed
from voicechat.stt.frontend import ListeningFrontEnd
from voicechat.stt.listening import (
    Event,
    ListeningRules,
    ListeningState,
    PartialDue,
    PauseLikely,
    PauseStarted,
    SpeechResumed,
    SpeechStarted,
    TurnEndJudge,
)
from voicechat.stt.sample_backlog import SampleBacklog
from voicechat.stt.silero_batch import SileroStream, probe


@dataclass(frozen=True, slots=True)
class _Final:
    audio: np.ndarray
    pause: int  # the pause the utterance ended in (0: none reported)


@dataclass(frozen=True, slots=True)
class _Early:
    audio: np.ndarray  # the utterance up to a pause, for a transcript inside the silence
    pause: int
    guess: int = 0  # the guess of the same quiet, whose transcript is this one's


@dataclass(frozen=True, slots=True)
class _Guess:
    audio: np.ndarray  # the utterance up to a quiet that may become a pause
    guess: int


class AudioJudge(Protocol):
    """The shared model that judges from the sound whether a turn is finished (``turn_judge.TurnJudge``)."""

    def ask(self, session_id: str, audio: np.ndarray, on_result: Callable[[float | None], None]) -> None: ...

    def cancel(self, session_id: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TurnSignals:
    """What judges the end of a turn: ``judge`` decides from the silence and the signals (None: the fixed
    silence), ``audio`` scores the sound, ``words`` the early transcript (either may be None). With
    ``llm_words`` the words' signal is the language model's probability that the message ends there,
    which the session reports back through ``on_transcript_early`` (``words`` where it cannot)."""

    judge: TurnEndJudge | None = None
    audio: AudioJudge | None = None
    words: Callable[[str], float | None] | None = None
    llm_words: bool = False


class BatchedRecognizer:
    """One session's listener; its thread-shared state is the backlog and the finals queue."""

    def __init__(
        self,
        session_id: str,
        model: TranscriptionModel,
        callbacks: RecognizerCallbacks,
        frontend: ListeningFrontEnd,
        *,
        rules: ListeningRules | None = None,
        language: str = "en",
        backlog_s: float = 2.0,
        signals: TurnSignals | None = None,
    ) -> None:
        self.session_id = session_id
        self._model = model
        self._callbacks = callbacks
        self._frontend = frontend
        self._language = language or None
        self._signals = signals or TurnSignals()
        self.backlog = SampleBacklog(backlog_s)
        self.stream = SileroStream()  # front-end thread only
        self._state = ListeningState(rules or ListeningRules(), self._signals.judge)  # front-end thread only
        self._quiet_rms = 10 ** (self._state.rules.quiet_dbfs / 20)
        self._recording = self._urgent_silence = False  # the state's, as of the last pass (hints for ``feed``)
        self._probe_onsets = self._state.rules.probe_onsets
        self._probe_due = False  # a loud frame came in: the next pass may look for an onset in what waits of it
        self._last_chunk: bytes = b""  # the last chunk analysed, the start of a probe's window (front-end thread)
        self._probed = 0  # samples waiting when the last probe looked (front-end thread)
        self._finals: BoundedLRUQueue[_Final | _Early | _Guess] = BoundedLRUQueue(8, "finals")
        self._lock = threading.Lock()
        self._pause = 0  # the pause being transcribed early, 0 when none (guarded by _lock)
        self._early_text: str | None = None  # its transcript, once made
        self._guess = 0  # the latest guess of a pause (guarded by _lock)
        self._guessed: tuple[int, str] = (0, "")  # (guess, its transcript): the STT worker's only
        self.guesses_used = self.guesses_made = 0  # transcripts made at a guess, and those a pause took
        self._inbox: list[tuple[int, float | None, float | None]] = []  # signals for the front end's next pass
        self._closed = threading.Event()
        frontend.attach(self)

    # -- capture thread ------------------------------------------------------------------
    def feed(self, pcm16: bytes) -> None:
        if self._closed.is_set():
            return
        completed = self.backlog.write(pcm16, time.monotonic())
        # Urgent, so the front end serves it before its next tick: any audio while the speaker is silent (it
        # may end the turn), a loud frame while nobody speaks (a barge-in may start: the verdict on a chunk it
        # completes, and a probe of the 32 ms ending with it). ``_urgent_silence`` and ``_recording`` are set by
        # the front end's thread and read here as hints: a stale value costs a pass, or waits a tick.
        if self._urgent_silence:
            self._frontend.wake(self)
        elif not self._recording and (completed or self._probe_onsets) and self._loud(pcm16):
            self._probe_due = self._probe_onsets  # looked at after any chunk's verdict, if 10 ms or more waits
            self._frontend.wake(self)

    def _loud(self, pcm16: bytes) -> bool:
        samples = pcm16_samples(pcm16)
        return samples.size > 0 and float(frame_rms(samples, samples.size)[0]) / 32768.0 >= self._quiet_rms

    # -- front-end thread (Listener) --------------------------------------------------------
    def take_chunk(self) -> bytes | None:
        return self.backlog.take()

    def needs_vad(self, rms: float) -> bool:
        return self._state.recording or rms >= self._quiet_rms

    def on_verdict(self, chunk: bytes, probability: float | None) -> None:
        self._last_chunk, self._probed = chunk, 0
        for event in self._state.chunk(chunk, probability):
            self._handle(event)

    def onset_probe(self) -> tuple[SileroStream, np.ndarray] | None:
        if not self._probe_due:
            return None
        self._probe_due = False
        if self._state.recording or not self._last_chunk:
            return None
        waiting = self.backlog.peek()
        if len(waiting) // 2 <= self._probed:  # nothing new since the last look (or a whole chunk: the round's)
            return None
        self._probed = len(waiting) // 2
        return probe(self.stream, pcm16_to_float(self._last_chunk), pcm16_to_float(waiting))

    def on_probe(self, probability: float | None) -> None:
        for event in self._state.probed(self._probed, probability):
            self._handle(event)

    def on_tick(self) -> None:
        if self._inbox:  # a signal posted after this look asks for a pass of its own
            with self._lock:
                inbox, self._inbox = self._inbox, []
            for pause, audio, words in inbox:
                self._state.signal(pause, audio, words)
        if self._state.recording:
            for event in self._state.tail(self.backlog.peek()):
                self._handle(event)
        self._recording, self._urgent_silence = self._state.recording, self._state.in_silence

    def _handle(self, event: Event) -> None:
        if self._closed.is_set():
            return
        if isinstance(event, SpeechStarted):
            self._callbacks.on_speech_start()
        elif isinstance(event, PartialDue):
            self._request_partial(event)
        elif isinstance(event, PauseLikely):
            with self._lock:
                self._guess = event.guess
            self._finals.put(_Guess(event.audio, event.guess))
        elif isinstance(event, PauseStarted):
            self._pause_started(event)
        elif isinstance(event, SpeechResumed):
            self._forget_pause()
            self._callbacks.on_speech_resumed()
        else:
            self._model.cancel(self.session_id, partials_only=True)
            self._finals.put(_Final(event.audio, event.pause))
            end = EndOfTurn(round(event.silence_s * 1000, 1), *event.signals)
            self._callbacks.on_speech_end(self.backlog.arrived_at(event.last_voiced_sample), end)

    def _pause_started(self, event: PauseStarted) -> None:
        with self._lock:
            self._pause, self._early_text = event.pause, None
        self._finals.put(_Early(event.audio, event.pause, event.guess))
        judge = self._signals.audio
        if judge is not None and self._signals.judge is not None:
            judge.ask(self.session_id, event.audio, lambda p: self._post(event.pause, audio=p))

    def _forget_pause(self) -> None:
        with self._lock:
            self._pause, self._early_text = 0, None
        if self._signals.audio is not None:
            self._signals.audio.cancel(self.session_id)

    def _post(self, pause: int, audio: float | None = None, words: float | None = None) -> None:
        """A signal about ``pause`` for the listening state (any thread); it applies at the pass it asks for."""
        with self._lock:
            if pause != self._pause:
                return
            self._inbox.append((pause, audio, words))
        self._frontend.wake(self)

    def _request_partial(self, event: PartialDue) -> None:
        def deliver(text: str) -> None:  # in the scheduler's thread
            current = self._state.recording and self._state.utterance == event.utterance
            if current and text and not self._closed.is_set():
                self._callbacks.on_partial(text)

        self._model.request_partial(self.session_id, event.audio, deliver, self._language)

    # -- the session's STT worker ---------------------------------------------------------
    def next_final(self) -> str | None:
        """Block until an utterance ends, then its transcript (the shared model's); None once closed.

        Meanwhile transcribes the utterance at each pause (``on_transcript_early``); an utterance that
        ends in the pause so transcribed takes that transcript as its final.
        """
        while True:
            try:
                item = self._finals.get()
            except QueueClosed:
                return None
            if self._closed.is_set():
                return None
            if isinstance(item, _Early):
                self._transcribe_early(item)
                continue
            if isinstance(item, _Guess):
                self._transcribe_guess(item)
                continue
            with self._lock:
                mine = bool(item.pause) and item.pause == self._pause
                early = self._early_text if mine else None
                if mine:
                    self._pause, self._early_text = 0, None
            if early is not None:
                return early
            text = self._transcribe(item.audio)
            return None if self._closed.is_set() else text

    def _transcribe_guess(self, item: _Guess) -> None:
        with self._lock:
            if item.guess != self._guess:
                return  # a later quiet guessed again
        if not self._model.has_spare_time():
            return  # other sessions' work first: the pause, if it opens, transcribes for itself
        try:
            self._guessed = (item.guess, self._transcribe(item.audio))
        except EngineError:
            return  # a guess fails quietly: the pause, if it opens, asks again and reports what it gets
        self.guesses_made += 1

    def _transcribe_early(self, item: _Early) -> None:
        with self._lock:
            if item.pause != self._pause:
                return  # the user spoke again, or the utterance ended in a later pause
        if item.guess and self._guessed[0] == item.guess:  # made in this quiet: only quiet came after its audio
            text = self._guessed[1]
            self.guesses_used += 1
        else:
            text = self._transcribe(item.audio)
        with self._lock:
            if item.pause != self._pause or self._closed.is_set():
                return
            self._early_text = text
        pause, rule = item.pause, self._signals.words if self._signals.judge is not None else None
        if not text:  # nothing said: nothing to wait for
            self._post(pause, words=1.0)
        elif rule is None:  # the words judge nothing
            self._callbacks.on_transcript_early(text, None)
        elif self._signals.llm_words:  # the session's answer (any thread, once); the rule where it has none
            self._callbacks.on_transcript_early(
                text, lambda p: self._post(pause, words=rule(text) if p is None else p))
        else:
            self._post(pause, words=rule(text))
            self._callbacks.on_transcript_early(text, None)

    def _transcribe(self, audio: np.ndarray) -> str:
        text = self._model.transcribe(audio, session_id=self.session_id, final=True, language=self._language)
        return (text or "").strip()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._frontend.detach(self)
        self.backlog.clear()
        self._model.cancel(self.session_id)
        if self._signals.audio is not None:
            self._signals.audio.cancel(self.session_id)
        self._finals.close()


class BatchedRecognizerFactory:
    """Makes each session's ``BatchedRecognizer`` on one shared front end, which it owns and closes."""

    def __init__(
        self,
        model: TranscriptionModel,
        *,
        rules: ListeningRules | None = None,
        language: str = "en",
        backlog_s: float = 2.0,
        frontend: ListeningFrontEnd | None = None,
        signals: TurnSignals | None = None,
    ) -> None:
        self.model = model
        self.rules = rules or ListeningRules()
        self.language = language
        self.backlog_s = backlog_s
        self.frontend = frontend or ListeningFrontEnd()
        self.signals = signals or TurnSignals()

    def __call__(self, session_id: str, callbacks: RecognizerCallbacks) -> BatchedRecognizer:
        return BatchedRecognizer(
            session_id, self.model, callbacks, self.frontend,
            rules=self.rules, language=self.language, backlog_s=self.backlog_s, signals=self.signals,
        )

    def close(self) -> None:
        self.frontend.close()
        if self.signals.audio is not None:
            self.signals.audio.close()
