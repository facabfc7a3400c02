"""Scoring end-of-turn rules on observed utterances (pure): when each rule would end each turn.

``bench turns`` measures, for each evidence utterance, the first silence the listening rules
would judge (its length until speech resumes, when Silero reported it) and each signal's value
and the silence by which it is in (asked at a point of the silence, plus its compute time).
Here ``end_silence`` replays ``turn_end.decide`` over that silence on a 10 ms grid, and
``summarize`` turns a rule's end times into the table's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from voicechat.stt.turn_end import Decision, TurnEndRules, decide

STEP_S = 0.01


@dataclass(frozen=True)
class Signal:
    value: float | None  # None: the signal failed or had nothing to judge
    at_s: float  # the silence by which it is in (asked at some silence, plus its compute time)
    ms: float  # its compute time


@dataclass(frozen=True)
class Observed:
    """One utterance's first judged silence and the signals in it."""

    name: str
    voice: str
    kind: str  # "complete" (the silence is the end of the turn) or "paused" (speech resumes after it)
    available_s: float  # silence before speech resumes (inf: the recording ends in silence)
    vad_s: float  # silence when Silero first reported it
    expected_place: bool  # the silence is at the pause (paused) or after the last word (complete)
    transcript: str = ""  # Whisper's words up to the silence
    signals: dict[str, Signal] = field(default_factory=dict)  # "audio", "words", "llm"


def end_silence(rules: TurnEndRules, item: Observed, words_key: str = "words") -> float | None:
    """The silence (s) at which ``rules`` end the turn, or None when speech resumes first."""
    audio, words = item.signals.get("audio"), item.signals.get(words_key)
    limit = min(item.available_s, rules.max_silence_s + STEP_S)
    for k in range(math.ceil(limit / STEP_S) + 1):
        s = round(k * STEP_S, 6)
        if s > item.available_s:
            break
        a = audio.value if audio is not None and audio.at_s <= s else None
        w = words.value if words is not None and words.at_s <= s else None
        if decide(rules, s, a, w).decision is Decision.END:
            return s
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0-100) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Score:
    """One rule on a set of utterances."""

    complete: int
    end_p50_ms: float | None  # silence before the end of turn, complete utterances
    end_p95_ms: float | None
    ended_by_signals: int  # complete utterances ended before max_silence_s
    paused: int
    cut: int  # mid-sentence pauses taken as the end of the turn

    @property
    def cut_share(self) -> float:
        return self.cut / self.paused if self.paused else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"complete": self.complete, "end_p50_ms": self.end_p50_ms, "end_p95_ms": self.end_p95_ms,
                "ended_before_max": self.ended_by_signals, "paused": self.paused, "cut": self.cut,
                "cut_percent": round(100 * self.cut_share, 1)}


def summarize(rules: TurnEndRules, items: Iterable[Observed], words_key: str = "words") -> Score:
    ends: list[float] = []
    complete = paused = cut = early = 0
    for item in items:
        at = end_silence(rules, item, words_key)
        if item.kind == "complete":
            complete += 1
            if at is None:
                continue
            ends.append(at)
            early += at < rules.max_silence_s - 1e-9
        else:
            paused += 1
            cut += at is not None
    p50, p95 = percentile(ends, 50), percentile(ends, 95)
    return Score(complete, None if p50 is None else round(p50 * 1000), None if p95 is None else round(p95 * 1000),
                 early, paused, cut)


def sweep(base: TurnEndRules) -> list[TurnEndRules]:
    """Candidate rules around ``base``: each combination with a grid of thresholds."""
    grid = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95
    out = [replace(base, combine="audio", audio_threshold=t) for t in grid]
    out += [replace(base, combine="words", words_threshold=t) for t in grid]
    for a in grid:
        out += [replace(base, combine="both", audio_threshold=a, words_threshold=w) for w in grid]
        out += [replace(base, combine="either", audio_threshold=a, words_threshold=w) for w in grid]
    out += [replace(base, combine="mean", audio_weight=wt, mean_threshold=t) for wt in (0.25, 0.5, 0.75) for t in grid]
    return out


def choose(candidates: Sequence[TurnEndRules], items: Sequence[Observed], max_cut: float = 0.10,
           words_keys: Sequence[str] = ("words",)) -> tuple[TurnEndRules, str, Score] | None:
    """The candidate (with the words signal read from one of ``words_keys``) with the lowest p50 end
    silence (then p95) among those cutting at most ``max_cut`` of the pauses; None when none does."""
    best: tuple[tuple[float, float, float], TurnEndRules, str, Score] | None = None
    for key in words_keys:
        for rules in candidates:
            score = summarize(rules, items, key)
            if score.cut_share > max_cut + 1e-9 or score.end_p50_ms is None:
                continue
            rank = (score.end_p50_ms, score.end_p95_ms or 0.0, score.cut_share)
            if best is None or rank < best[0]:
                best = (rank, rules, key, score)
    return None if best is None else best[1:]


def describe(rules: TurnEndRules) -> str:
    """A short name for a rule, for the table."""
    if rules.min_silence_s == rules.max_silence_s:
        return f"fixed {rules.max_silence_s:.1f} s silence"
    if rules.combine == "audio":
        return f"audio >= {rules.audio_threshold:g}"
    if rules.combine == "words":
        return f"words >= {rules.words_threshold:g}"
    if rules.combine == "mean":
        return f"{rules.audio_weight:g} audio + {1 - rules.audio_weight:g} words >= {rules.mean_threshold:g}"
    joiner = "and" if rules.combine == "both" else "or"
    return f"audio >= {rules.audio_threshold:g} {joiner} words >= {rules.words_threshold:g}"
