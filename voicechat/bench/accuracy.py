"""How well a transcript matches what was spoken: normalised exact match and word error rate (pure).

Whisper writes numbers as digits ("nine" -> "9"), capitalises and punctuates; none
of that is an error of hearing, so both sides are normalised before comparing:
lower case, punctuation dropped, number words up to ninety-nine as digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
NUMBERS = {word: str(i) for i, word in enumerate(_UNITS)} | {word: str(n) for word, n in _TENS.items()}
_TEN_DIGITS = {str(n) for n in _TENS.values()}


def normalise(text: str) -> list[str]:
    """Words of ``text``: lower case, no punctuation, number words as digits ("twenty one" -> "21")."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    words = [w.strip("'") for w in words if w.strip("'")]
    out: list[str] = []
    for word in words:
        digits = NUMBERS.get(word, word)
        if out and out[-1] in _TEN_DIGITS and len(digits) == 1 and digits in "123456789":
            out[-1] = str(int(out[-1]) + int(digits))  # "twenty" "one" -> 21
            continue
        out.append(digits)
    return out


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis`` (Levenshtein on words)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class Accuracy:
    """Transcripts against what was spoken: ``exact`` of ``count`` match after normalising; ``wer`` pooled."""

    count: int
    exact: int
    word_errors: int
    reference_words: int

    @property
    def wer(self) -> float | None:
        return self.word_errors / self.reference_words if self.reference_words else None

    def as_dict(self) -> dict[str, object]:
        wer = self.wer
        return {"transcripts": self.count, "exact": self.exact,
                "wer_percent": None if wer is None else round(100 * wer, 1)}


def accuracy(pairs: Iterable[tuple[str, str]]) -> Accuracy:
    """Score (spoken, transcript) pairs."""
    count = exact = errors = words = 0
    for spoken, heard in pairs:
        ref, hyp = normalise(spoken), normalise(heard)
        n = word_errors(ref, hyp)
        count, exact, errors, words = count + 1, exact + (n == 0), errors + n, words + len(ref)
    return Accuracy(count, exact, errors, words)
