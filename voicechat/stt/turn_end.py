"""When a turn ends: the silence so far and the end-of-turn signals in so far -> end now, wait, or hold.

Pure. The caller (the listening front end's tick) measures ``silence_s`` from the start of the
silence that may end the turn and passes what each signal said so far:

* ``audio``: Smart Turn's P(finished) on the audio up to the moment it was asked (``TurnJudge``),
* ``words``: the words' P(finished) for the transcript made inside the silence: the LLM's
  end-of-message probe there (``llm.probe``, read from the early reply's prefill: the default
  rules' threshold is for this), or, without it,
  ``transcript_end.words_score`` (use ``AUDIO_AND_WORDS``),

each None while it is not in (or never will be: the model is missing or failed). ``decide``
returns one of

* ``END``: end the turn now;
* ``WAIT``: too soon, or a signal the rules use is not in yet: call again on the next tick;
* ``HOLD``: the signals say the speaker is not finished: the turn ends only at ``max_silence_s``
  (new speech before that continues it; the caller keeps calling, the answer can only become END).

A decision needs every signal the rules use (except ``"either"``, where one finished signal is
enough): one still out keeps the turn waiting, up to ``max_silence_s``. Waiting for the words
costs the reply nothing, since the reply needs that transcript (and that prefill) anyway; ending
at 0.6 s without them cut 85-100 % of the pauses in `bench turns` when the machine was slow. With
no signal at all in by ``signal_timeout_s`` (default: never before the maximum) the turn ends
there. A missing model is the caller's to handle: rules that do not use it, or ``FIXED``.
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
    signal_timeout_s: float = 1.5  # no signal in by then: end (set 0.6 for the fixed rule's fallback)
    audio_threshold: float = 0.9
    words_threshold: float = 0.5
    combine: Combine = "words"
    mean_threshold: float = 0.6
    audio_weight: float = 0.5

    def uses(self) -> tuple[bool, bool]:
        """Whether the rules use (audio, words)."""
        return self.combine != "words", self.combine != "audio"


# The defaults: the words slot holds the LLM's end-of-message probe (``llm.probe``: the mean of P(end of message)
# and P(a sentence ends after the last word); SmolLM2-135M, the product's system prompt and example exchange). On
# the evidence set, with each signal in when asked, >= 0.5 ended 26 of 34 complete turns after 0.2 s and cut 0 of
# 34 mid-sentence pauses (Piper joe, where it was chosen); 22 of 34 and 2 of 34 on espeak-ng. Smart Turn added
# nothing to it there (docs/benchmarks.md).
LLM_WORDS = TurnEndRules()
# Without the LLM's probability: Smart Turn and ``words_score`` together. Joe: 26 of 34 ended at 0.2 s, 4 of 34
# pauses cut; espeak-ng: 17 of 34 and 19 of 34 (Whisper completes what it hears cut off, Smart Turn hears
# espeak's flat prosody as finished).
AUDIO_AND_WORDS = TurnEndRules(combine="both", audio_threshold=0.9, words_threshold=0.5)
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
    if audio is None and words is None:
        if silence_s >= rules.signal_timeout_s:
            return Verdict(Decision.END, "no_signal")
        return Verdict(Decision.WAIT, "waiting")
    missing = (use_audio and audio is None) or (use_words and words is None)
    if rules.combine == "either":
        if finished(rules, audio, words):
            return Verdict(Decision.END, "finished")
        return Verdict(Decision.WAIT, "waiting") if missing else Verdict(Decision.HOLD, "unfinished")
    if missing:
        return Verdict(Decision.WAIT, "waiting")
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
