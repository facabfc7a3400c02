"""Word error rate of transcripts against the sentences spoken, after normalising both sides.

Whisper writes what it hears its own way: digits for numbers ("at 11"), American spelling,
its own punctuation. Both sides are normalised alike (lower case, no punctuation but the
apostrophe inside a word, numbers as words, one spelling) so that only wrong words count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SPELLING = {"favourite": "favorite", "colour": "color", "centre": "center", "theatre": "theater"}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in words: 21 -> 'twenty one', 305 -> 'three hundred five'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return f"{_ONES[n // 100]} hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return f"{number_words(n // 1000)} thousand" + ("" if rest == 0 else " " + number_words(rest))


def _spoken_number(match: re.Match[str]) -> str:
    whole, _, fraction = match.group().partition(".")
    words = number_words(int(whole)) if int(whole) < 1_000_000 else whole
    return words + (" point " + " ".join(_ONES[int(d)] for d in fraction) if fraction else "")


def normalise(text: str) -> list[str]:
    """The words of ``text`` as compared: 'Set a timer for 12 minutes.' -> [..., 'twelve', 'minutes']."""
    text = _NUMBER.sub(lambda m: f" {_spoken_number(m)} ", text.lower().replace(",", ""))
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = [w.strip("'") for w in text.split()]
    return [_SPELLING.get(w, w) for w in words if w]


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions that turn ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class WerReport:
    """Errors over a set of utterances: the corpus WER (total edits / total reference words)."""

    pairs: tuple[tuple[str, str], ...]  # (spoken, transcribed)
    errors: int
    words: int

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.words)

    @property
    def exact(self) -> int:
        """Utterances transcribed without one word wrong."""
        return sum(normalise(ref) == normalise(hyp) for ref, hyp in self.pairs)

    def describe(self, label: str) -> str:
        lines = [f"{label}: WER {self.wer:.1%} ({self.errors} errors / {self.words} words), "
                 f"{self.exact}/{len(self.pairs)} exact"]
        lines += [f"  {ref!r} -> {hyp!r}" for ref, hyp in self.pairs if normalise(ref) != normalise(hyp)]
        return "\n".join(lines)


def word_error_rate(pairs: Iterable[tuple[str, str]]) -> WerReport:
    pairs = tuple(pairs)
    errors = sum(edit_distance(normalise(ref), normalise(hyp)) for ref, hyp in pairs)
    return WerReport(pairs, errors, sum(len(normalise(ref)) for ref, _ in pairs))
