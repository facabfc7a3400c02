"""Word error rate of transcripts against what was spoken, with the failures listed (the real-model tests).

The scoring is the benchmark's (``voicechat.bench.accuracy``): lower case, no
punctuation, number words as digits, Levenshtein distance on words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voicechat.bench.accuracy import normalise, word_errors


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
    errors = sum(word_errors(normalise(ref), normalise(hyp)) for ref, hyp in pairs)
    return WerReport(pairs, errors, sum(len(normalise(ref)) for ref, _ in pairs))
