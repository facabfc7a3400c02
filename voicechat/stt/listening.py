"""One session's listening state: where speech starts and ends, and what to transcribe (pure).

The shared front end (``frontend.py``) runs Silero over every session's next
32 ms chunk and hands each verdict here, with the chunk. This class owns the
turn rules: speech starts on a chunk whose speech probability reaches
``onset_probability`` and goes on while it stays above that less
``release_margin`` (Silero's own advice: a lower threshold to let go); it
ends ``post_speech_silence_s`` after the last voiced 10 ms frame
(``EndOfSpeech``: Silero says *whether* speech ended, the level says *when*),
once at least ``min_utterance_s`` was recorded; a partial is due every
``partial_interval_s`` of new speech, but not once the level has been quiet
``partial_quiet_s`` (the pause's transcript is near). Positions are samples of the session's own
stream, so the caller can date each decision on the audio's clock.

A pause (``pause_s`` after the level's last voiced frame, even while Silero still
calls speech, once per pause) is reported with the audio so far, so the caller
can transcribe it inside the silence and judge whether
the turn is finished; speech after it is reported too (``SpeechResumed``). Sooner
still (``guess_s`` of the level's quiet, before the pause), a guess that a pause is
coming is reported with the audio so far (``PauseLikely``), so its transcript can
start; a pause that opens in the same quiet names that guess, whose audio differs
from the pause's only by quiet. With a
``turn_end`` judge the turn ends when the judge says so, given the silence and the
signals the caller hands back (``signal``); without one, after the fixed
``post_speech_silence_s``.

No threads, no model, no clock: the front end's thread calls ``chunk`` and
``tail``; everything here is a function of the audio and the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from voicechat.audio import pcm16_to_float
from voicechat.stt.endpointing import SAMPLE_RATE, EndOfSpeech

BYTES_PER_SAMPLE = 2
CHUNK = 512  # Silero's chunk at 16 kHz


@dataclass(frozen=True)
class ListeningRules:
    onset_probability: float = 0.6  # 1 - vad.silero_sensitivity, as RealtimeSTT reads the sensitivity
    release_margin: float = 0.15  # speech goes on while the probability stays above onset - margin (hysteresis)
    post_speech_silence_s: float = 0.6
    min_utterance_s: float = 0.3
    pre_roll_s: float = 1.0
    partials: bool = True
    partial_interval_s: float = 0.3
    partial_pre_roll_s: float = 0.5  # partials need less of the room than the final does
    partial_min_s: float = 0.3
    # No partial starts once the level has been quiet this long (None: no such rule): the speaker may have
    # finished, and a partial then would only hold up the pause's transcript (the model does one at a time).
    # A partial so skipped waits for the next voiced chunk.
    partial_quiet_s: float | None = 0.05
    quiet_dbfs: float = -55.0  # while nobody speaks, quieter chunks are silence without asking the model
    pause_s: float | None = 0.1  # report a pause (for a transcript inside the silence) after this; None: never
    guess_s: float | None = None  # report a likely pause after this much of the level's quiet (< pause_s); None: never
    probe_onsets: bool = True  # look for an onset in every loud frame, not only at whole chunks (front end's)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    utterance: int
    sample: int  # first sample of the chunk (or the probe's window) that showed speech


@dataclass(frozen=True, slots=True)
class PartialDue:
    utterance: int
    audio: np.ndarray  # float32, the utterance so far with a short pre-roll


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    utterance: int
    audio: np.ndarray  # float32: pre-roll, speech and the silence up to the decision
    last_voiced_sample: int  # where the speech ended, on the stream's clock
    decided_sample: int  # how much of the stream had arrived when the end was decided
    pause: int = 0  # the pause it ended in (its ``PauseStarted``), 0 if none was reported
    silence_s: float = 0.0  # the silence after the speech when the end was decided
    signals: tuple[float | None, float | None] = (None, None)  # (audio, words) in by then (none in a pause: None)


@dataclass(frozen=True, slots=True)
class PauseStarted:
    utterance: int
    pause: int  # numbers the pauses of the stream (the signals about it carry it back)
    audio: np.ndarray  # float32: pre-roll, the speech so far and the silence after it
    guess: int = 0  # the ``PauseLikely`` of the same quiet (no voice since), 0 if none


@dataclass(frozen=True, slots=True)
class PauseLikely:
    utterance: int
    guess: int  # numbers the guesses of the stream
    audio: np.ndarray  # float32: pre-roll, the speech so far and the quiet after it


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    utterance: int
    pause: int  # the pause that speech ended


Event = SpeechStarted | PartialDue | UtteranceEnded | PauseStarted | PauseLikely | SpeechResumed


class TurnEndJudge(Protocol):
    def __call__(self, silence_s: float, audio: float | None, words: float | None) -> bool:
        """Whether the turn ends after ``silence_s`` of silence, given the signals so far (None: not yet):
        ``audio``, the sound's probability that the turn is finished; ``words``, the transcript's."""
        ...


@dataclass
class ListeningState:
    rules: ListeningRules = field(default_factory=ListeningRules)
    turn_end: TurnEndJudge | None = None  # None: the fixed post_speech_silence_s
    recording: bool = field(default=False, init=False)
    utterance: int = field(default=0, init=False)  # bumped at every onset
    analysed: int = field(default=0, init=False)  # samples given to ``chunk`` so far
    _audio: bytearray = field(default_factory=bytearray, init=False, repr=False)  # pre-roll, then the utterance
    _recorded: int = field(default=0, init=False)  # samples since the onset
    _since_partial: int = field(default=0, init=False)
    _end: EndOfSpeech = field(default_factory=EndOfSpeech, init=False, repr=False)
    pause: int = field(default=0, init=False)  # the open pause's number, 0 while none is open
    _pauses: int = field(default=0, init=False)
    _guess: int = field(default=0, init=False)  # the guess made in the level's current quiet, 0 while none
    _guesses: int = field(default=0, init=False)
    _signals: tuple[float | None, float | None] = field(default=(None, None), init=False)  # (audio, words)
    _pause_on_level: bool = field(default=False, init=False)  # the open pause opened on the level's quiet

    def chunk(self, pcm16: bytes, probability: float | None) -> list[Event]:
        """The next chunk of the stream and Silero's verdict on it (None: no verdict, keep the last one)."""
        samples = len(pcm16) // BYTES_PER_SAMPLE
        start = self.analysed
        self.analysed += samples
        if not self.recording:
            if probability is None or probability < self.rules.onset_probability:
                self._end.pass_over(samples)
                self._keep_pre_roll(pcm16)
                return []
            return self._start(pcm16, start)
        self._audio += pcm16
        self._recorded += samples
        self._end.hear(pcm16)
        release = self.rules.onset_probability - self.rules.release_margin
        speech = self._end.silence_s is None if probability is None else probability >= release
        silence = self._end.decide(speech, samples)
        events: list[Event] = []
        if self.pause and self._resumed(speech, samples):
            events.append(SpeechResumed(self.utterance, self.pause))
            self._close_pause()
        if silence is not None and self._may_end(silence):
            events.append(self._finish(silence, self.analysed))
        else:
            events.extend(self._pause_likely())
            events.extend(self._pause_started(silence) or (self._partial(samples) if speech else []))
        return events

    @property
    def in_silence(self) -> bool:
        """Recording, and the speaker has gone quiet: each new sample may end the turn or open a pause."""
        return self.recording and self._end.silence_s is not None

    def signal(self, pause: int, audio: float | None = None, words: float | None = None) -> None:
        """A judge's signal about pause ``pause`` (ignored once that pause is over)."""
        if pause and pause == self.pause:
            old_audio, old_words = self._signals
            self._signals = (old_audio if audio is None else audio, old_words if words is None else words)

    def tail(self, waiting: bytes) -> list[Event]:
        """Between chunks: end the utterance if ``waiting``, the less-than-a-chunk not yet analysed,
        completes the silence.

        Silero needs whole chunks, but once it has said "silence" the rest of the
        wait needs no model: this takes the end from the chunk's grain to the
        arrival's. The level judges the waiting samples: voice in them is no
        silence. A whole chunk or more waiting means the stream is behind, and
        is Silero's to judge first.
        """
        waiting_samples = len(waiting) // BYTES_PER_SAMPLE
        if not self.recording or self._end.silence_s is None or waiting_samples >= CHUNK:
            return []
        if self._end.level.voiced(waiting):
            return []
        silence, _ = self._end.silence_at(self._end.heard_samples + waiting_samples)
        if silence is None or not self._may_end(silence):
            return []
        return [self._finish(silence, self.analysed + waiting_samples)]

    def probed(self, waiting_samples: int, probability: float | None) -> list[Event]:
        """Silero's verdict on the 32 ms ending ``waiting_samples`` into the audio not yet given to ``chunk``
        (a probe between chunks): speech starts now where it reaches the onset threshold. The samples stay
        the next chunks' to record, judge and count, as after any onset."""
        if self.recording or probability is None or probability < self.rules.onset_probability:
            return []
        return self._start(b"", max(0, self.analysed + waiting_samples - CHUNK))

    # -- internals ---------------------------------------------------------------------
    def _start(self, pcm16: bytes, start: int) -> list[Event]:
        self.recording = True
        self.utterance += 1
        self._end.speech_started(bytes(self._audio))
        self._end.hear(pcm16)
        self._end.decide(True, len(pcm16) // BYTES_PER_SAMPLE)
        self._audio += pcm16
        self._recorded = len(pcm16) // BYTES_PER_SAMPLE
        self._since_partial = self._recorded
        return [SpeechStarted(self.utterance, start)]

    def _long_enough(self) -> bool:
        return self._recorded >= self.rules.min_utterance_s * SAMPLE_RATE

    def _close_pause(self) -> None:
        self.pause, self._signals = 0, (None, None)

    def _may_end(self, silence_s: float) -> bool:
        if not self._long_enough():
            return False
        if self.turn_end is None or not self.pause:
            return silence_s >= self.rules.post_speech_silence_s
        return self.turn_end(silence_s, *self._signals)

    def _pause_started(self, silence_s: float | None) -> list[Event]:
        """Open a pause once the level has been quiet ``pause_s``, whether or not Silero has let go yet.

        Silero releases 64-170 ms after the sound stops; the level knows within a frame, and the pause's
        transcript is on the critical path of the reply. The level's quiet also keeps the whole of a soft
        ending ("moo-n", which Silero may release inside) in the audio. Where the level does not settle
        (noise it takes for voice), the pause opens once Silero's longest release (``max_release_s``) more
        than ``pause_s`` has passed after Silero let go."""
        pause_s = self.rules.pause_s
        if self.pause or pause_s is None or not self._long_enough():
            return []
        level = self._end.level
        on_level = level.heard_voice and level.quiet_samples >= pause_s * SAMPLE_RATE
        if not on_level and (silence_s is None or silence_s < pause_s + self._end.max_release_s):
            return []
        self._pauses += 1
        self.pause, self._signals, self._pause_on_level = self._pauses, (None, None), on_level
        return [PauseStarted(self.utterance, self.pause, pcm16_to_float(bytes(self._audio)), self._guess)]

    def _pause_likely(self) -> list[Event]:
        """Guess once per quiet of the level, ``guess_s`` into it, that a pause is coming (none while one is
        open); voice forgets the guess."""
        guess_s, level = self.rules.guess_s, self._end.level
        if guess_s is None or not level.heard_voice:
            return []
        if level.quiet_samples < guess_s * SAMPLE_RATE:
            self._guess = 0
            return []
        if self._guess or self.pause or not self._long_enough():
            return []
        self._guesses += 1
        self._guess = self._guesses
        return [PauseLikely(self.utterance, self._guess, pcm16_to_float(bytes(self._audio)))]

    def _resumed(self, speech: bool, samples: int) -> bool:
        """Whether the chunk just heard ends the open pause: Silero calls speech and, for a pause the level
        opened, the level heard voice in the chunk too (Silero's release tail, quiet, is still the pause)."""
        if not speech:
            return False
        return not self._pause_on_level or self._end.level.quiet_samples < samples

    def _finish(self, silence_s: float, decided: int) -> UtteranceEnded:
        audio = pcm16_to_float(bytes(self._audio))
        event = UtteranceEnded(self.utterance, audio, max(0, decided - round(silence_s * SAMPLE_RATE)), decided,
                               self.pause, silence_s, self._signals if self.pause else (None, None))
        self._close_pause()
        self.recording = False
        self._recorded = 0
        self._guess = 0
        # The silence after the speech is the next utterance's room; none of this one's speech may leak into it.
        # (the samples the decision counted beyond the analysed ones are not in the buffer yet; and where the
        # level heard voice more recently than the decision assumed, only what followed that voice)
        silence_in_buffer = min(round(silence_s * SAMPLE_RATE) - (decided - self.analysed),
                                self._end.level.quiet_samples)
        silence_bytes = min(len(self._audio), max(0, silence_in_buffer) * BYTES_PER_SAMPLE)
        del self._audio[: len(self._audio) - silence_bytes]
        self._keep_pre_roll(b"")
        return event

    def _partial(self, samples: int) -> list[Event]:
        rules = self.rules
        if not rules.partials:
            return []
        self._since_partial += samples
        if self._since_partial < rules.partial_interval_s * SAMPLE_RATE:
            return []
        if self._recorded < rules.partial_min_s * SAMPLE_RATE:
            return []
        if rules.partial_quiet_s is not None and self._end.level.quiet_samples >= rules.partial_quiet_s * SAMPLE_RATE:
            return []
        self._since_partial = 0
        keep = (self._recorded + round(rules.partial_pre_roll_s * SAMPLE_RATE)) * BYTES_PER_SAMPLE
        return [PartialDue(self.utterance, pcm16_to_float(bytes(self._audio[-keep:])))]

    def _keep_pre_roll(self, pcm16: bytes) -> None:
        self._audio += pcm16
        keep = round(self.rules.pre_roll_s * SAMPLE_RATE) * BYTES_PER_SAMPLE
        if len(self._audio) > keep:
            del self._audio[: len(self._audio) - keep]
