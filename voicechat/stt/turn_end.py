"""When a turn ends: the silence so far and the end-of-turn signals in so far -> end now, wait, or hold.

Pure. The caller (the listening front end's tick) measures ``silence_s`` from the start of the
silence that may end the turn and passes what each signal said so far:

* ``audio``: Smart Turn's P(finished) on the audio up to the moment it was asked (``TurnJudge``),
* ``words``: ``transcript_end.words_score`` of the transcript made inside the silence,

each None while it is not in (or never will be: the model is missing or failed). ``decide``
returns one of

* ``END``: end the turn now;
* ``WAIT``: too soon, or a signal the rules use is not in yet: call again on the next tick;
* ``HOLD``: the signals say the speaker is not finished: the turn ends only at ``max_silence_s``
  (new speech before that continues it; the caller keeps calling, the answer can only become END).

With no signal in by ``signal_timeout_s`` the turn ends there: the fixed-silence rule, so a slow
or missing model never makes a turn wait longer than today's 0.6 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

Combine = Literal["audio", "words", "both", "either", "mean"]


class Decision(str, Enum):
    END = "end"
    WAIT = "wait"
    HOLD = "hold"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str  # "max_silence", "too_soon", "waiting", "no_signal", "finished", "unfinished"


@dataclass(frozen=True)
class TurnEndRules:
    """Seconds of silence and thresholds; defaults chosen with `bench turns` (docs/benchmarks.md).

    ``combine`` says how the signals decide "finished":
    ``"audio"`` / ``"words"``: that signal alone; ``"both"``: every signal in is at or above its
    threshold; ``"either"``: one is; ``"mean"``: ``audio_weight * audio + (1 - audio_weight) * words``
    (the weights of the signals in, renormalised) is at or above ``mean_threshold``.
    """

    min_silence_s: float = 0.2  # never end sooner (a breath between words is shorter)
    max_silence_s: float = 1.5  # always end by then, whatever the signals say
    signal_timeout_s: float = 0.6  # decide on the signals in by then; none in: end (the fixed rule)
    audio_threshold: float = 0.5
    words_threshold: float = 0.5
    combine: Combine = "both"
    mean_threshold: float = 0.6
    audio_weight: float = 0.5

    def uses(self) -> tuple[bool, bool]:
        """Whether the rules use (audio, words)."""
        return self.combine != "words", self.combine != "audio"


FIXED = TurnEndRules(min_silence_s=0.6, max_silence_s=0.6)  # today's rule: 0.6 s of silence, no signal


def decide(rules: TurnEndRules, silence_s: float, audio: float | None = None, words: float | None = None) -> Verdict:
    """The decision after ``silence_s`` seconds of silence, given the signals in so far (None: not in)."""
    if silence_s >= rules.max_silence_s:
        return Verdict(Decision.END, "max_silence")
    if silence_s < rules.min_silence_s:
        return Verdict(Decision.WAIT, "too_soon")
    use_audio, use_words = rules.uses()
    audio = audio if use_audio else None
    words = words if use_words else None
    missing = (use_audio and audio is None) or (use_words and words is None)
    if missing and silence_s < rules.signal_timeout_s:
        return Verdict(Decision.WAIT, "waiting")
    if audio is None and words is None:
        return Verdict(Decision.END, "no_signal")
    if finished(rules, audio, words):
        return Verdict(Decision.END, "finished")
    return Verdict(Decision.HOLD, "unfinished")


def finished(rules: TurnEndRules, audio: float | None, words: float | None) -> bool:
    """Whether the signals in (at least one not None) say the turn is finished, by ``rules.combine``."""
    if rules.combine == "mean":
        parts = [(rules.audio_weight, audio), (1.0 - rules.audio_weight, words)]
        weight = sum(w for w, v in parts if v is not None)
        if weight <= 0:
            return False
        return sum(w * v for w, v in parts if v is not None) / weight >= rules.mean_threshold
    votes = [v >= t for v, t in ((audio, rules.audio_threshold), (words, rules.words_threshold)) if v is not None]
    if rules.combine == "either":
        return any(votes)
    return bool(votes) and all(votes)  # "both", and "audio" / "words" (the other one is dropped above)
