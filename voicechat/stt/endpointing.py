"""Where the user's speech ended, measured on the audio's own clock.

Silero calls speech over two to five 32 ms chunks after the sound stops,
depending on the last phoneme (64-170 ms on the espeak-ng samples). A turn
timer started when Silero notices therefore ends the turn anywhere in a 100 ms
window, and later still when the recording thread lags behind the audio. Users
feel the end of their turn as a fixed pause after their last sound, so this
module finds that last sound from 10 ms energy frames and counts the silence
from it in samples: the turn ends ``post_speech_silence_s`` after the last
sound whatever the detector's release and whatever the thread's lag.

Silero stays the judge of *whether* speech has ended; the level only says
*when*. Where the level cannot tell (noise keeps it up, or it fell long before
Silero released, so Silero heard a soft ending the level missed), the end is
put a typical release before Silero's decision, as before.

Pure logic: no threads, no RealtimeSTT (``engines/realtimestt_vad.py`` wires
it into the recorder).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from voicechat.audio import frame_rms, pcm16_samples

SAMPLE_RATE = 16000
FRAME = 160  # 10 ms at 16 kHz


def _db(value: float) -> float:  # dB to an amplitude ratio
    return 10.0 ** (value / 20.0)


@dataclass
class LevelTracker:
    """Samples since the last voiced 10 ms frame of the current utterance.

    A frame is voiced when its RMS is within ``relative_db`` of the loudest
    frame of the utterance so far, at least ``floor_margin_db`` over the noise
    floor, and over ``absolute_rms``. The noise floor is the quietest frame of
    the last ``floor_window_s`` (minimum statistics, kept per chunk): the pauses
    between words keep it at the room's noise while someone speaks, and a room
    that gets noisier raises it within that window. Every session's recorder
    calls ``add`` 31 times a second, so it is a handful of vector operations.
    """

    relative_db: float = -40.0
    floor_margin_db: float = 12.0
    absolute_rms: float = 30.0  # about -61 dBFS
    floor_window_s: float = 1.5
    chunk_s: float = 0.032  # the size of the chunks ``add`` is given, to size the floor's window
    peak: float = field(default=0.0, init=False)
    quiet_samples: int = field(default=0, init=False)
    heard_voice: bool = field(default=False, init=False)
    _chunk_mins: deque[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._chunk_mins = deque(maxlen=max(1, round(self.floor_window_s / self.chunk_s)))
        self._relative = _db(self.relative_db)
        self._margin = _db(self.floor_margin_db)

    @property
    def floor(self) -> float:
        """The noise floor's RMS (0 before any audio)."""
        return min(self._chunk_mins, default=0.0)

    def new_utterance(self, before: bytes | np.ndarray = b"") -> None:
        """Forget the last utterance's peak and end; ``before`` is the audio that led up to it (for the floor)."""
        rms = frame_rms(pcm16_samples(before), FRAME)
        per_chunk = max(1, round(self.chunk_s * SAMPLE_RATE) // FRAME)
        self._chunk_mins.extend(float(rms[i : i + per_chunk].min()) for i in range(0, len(rms), per_chunk))
        self.peak = 0.0
        self.quiet_samples = 0
        self.heard_voice = False

    @property
    def quiet_s(self) -> float:
        return self.quiet_samples / SAMPLE_RATE

    def voiced(self, pcm16: bytes | np.ndarray) -> bool:
        """Whether any 10 ms frame of ``pcm16`` would count as voiced now (changes nothing)."""
        rms = frame_rms(pcm16_samples(pcm16), FRAME)
        threshold = max(self.absolute_rms, self.peak * self._relative, self.floor * self._margin)
        return bool(rms.size and (rms > threshold).any())

    def add(self, pcm16: bytes | np.ndarray) -> None:
        samples = pcm16_samples(pcm16)
        # A chunk holds three 10 ms frames: plain Python over their three values costs less than numpy calls
        # (this runs for every chunk of every speaking session, on the front end's thread).
        rms = frame_rms(samples, FRAME).tolist()  # a tail shorter than a frame goes with the last frame
        frames = len(rms)
        if frames == 0:
            self.quiet_samples += samples.size
            return
        self._chunk_mins.append(min(rms))
        self.peak = max(self.peak, max(rms))
        threshold = max(self.absolute_rms, self.peak * self._relative, self.floor * self._margin)
        last = next((i for i in range(frames - 1, -1, -1) if rms[i] > threshold), -1)
        if last >= 0:
            self.quiet_samples = 0 if last == frames - 1 else samples.size - (last + 1) * FRAME
            self.heard_voice = True
        else:
            self.quiet_samples += samples.size


@dataclass
class EndOfSpeech:
    """Silence since the end of the user's speech, in seconds of audio.

    ``speech_started()`` takes the pre-roll (the noise floor needs the room
    before the speech), ``hear()`` every chunk while recording, and ``decide()``
    the detector's verdict on the chunk just heard. It returns ``None`` while the detector hears
    speech, then the silence so far: from the last voiced frame when the level
    stopped between 10 ms and ``max_release_s`` before the detector's
    decision, else from ``fallback_release_s`` before that decision.
    ``chunk()`` is both at once.

    The detector needs whole 32 ms chunks, but once it has said "silence" the
    rest of the wait needs no model: ``silence_at()`` tells the thread that
    feeds the audio (in 20 ms frames) how much silence the stream holds so
    far, so it can hand over a short chunk on the frame that completes the
    silence, and ``decide_without_model()`` judges that short chunk by the
    level alone. That takes the turn's end from the 32 ms grain to the
    frame's.
    """

    fallback_release_s: float = 0.1
    max_release_s: float = 0.3
    level: LevelTracker = field(default_factory=LevelTracker)
    silence_s: float | None = field(default=None, init=False)
    anchored_on_level: bool = field(default=False, init=False)
    heard_samples: int = field(default=0, init=False)
    # (silence_s, heard_samples) as of the last decision: one tuple, so another thread reads both at once
    _verdict: tuple[float | None, int] = field(default=(None, 0), init=False, repr=False)

    def speech_started(self, before: bytes | np.ndarray = b"") -> None:
        """A new utterance; ``before`` is the pre-roll (the room before it, for the noise floor)."""
        self.level.new_utterance(before)
        self.silence_s = None
        self._verdict = (None, self.heard_samples)

    def chunk(self, pcm16: bytes | np.ndarray, is_speech: bool) -> float | None:
        self.hear(pcm16)
        return self.decide(is_speech, len(pcm16_samples(pcm16)))

    def hear(self, pcm16: bytes | np.ndarray) -> None:
        """A chunk while recording."""
        self.level.add(pcm16)
        self.heard_samples += len(pcm16_samples(pcm16))

    def pass_over(self, samples: int) -> None:
        """A chunk while listening: only counted, so that ``heard_samples`` counts the whole stream."""
        self.heard_samples += samples

    def decide(self, is_speech: bool, samples: int) -> float | None:
        if is_speech:
            self.silence_s = None
        elif self.silence_s is None:
            quiet = self.level.quiet_s
            self.anchored_on_level = self.level.heard_voice and FRAME / SAMPLE_RATE <= quiet <= self.max_release_s
            self.silence_s = quiet if self.anchored_on_level else self.fallback_release_s
        else:
            self.silence_s += samples / SAMPLE_RATE
        self._verdict = (self.silence_s, self.heard_samples)
        return self.silence_s

    def decide_without_model(self, samples: int) -> float | None:
        """A chunk too short for the detector: silence goes on unless the level heard voice in it."""
        voiced_in_it = self.level.quiet_samples < samples
        return self.decide(self.silence_s is None or voiced_in_it, samples)

    def silence_at(self, fed_samples: int) -> tuple[float | None, int]:
        """The silence once ``fed_samples`` (counted like ``heard_samples``) are heard, None while speech;
        with the sample count of the decision it rests on.

        Safe from another thread: it reads one snapshot of the last decision,
        so at worst it is a chunk out of date.
        """
        silence, decided_at = self._verdict
        return (None if silence is None else silence + (fed_samples - decided_at) / SAMPLE_RATE), decided_at
