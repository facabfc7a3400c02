"""Stable and tentative words of interim transcripts (pure logic).

Each partial hypothesis re-transcribes the whole utterance so far, so its last
words flicker while the user is still saying them. A word becomes *stable* once
two consecutive hypotheses agree on it and on every word before it (the
"local agreement" rule of streaming Whisper systems). Stable words are never
taken back within an utterance: a client can render them solid and the rest
lighter, and nothing it drew solid changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD_EDGE = re.compile(r"^[^\w']+|[^\w']+$")


def _key(word: str) -> str:
    """Compare words case- and punctuation-insensitively ("Hello," == "hello")."""
    return _WORD_EDGE.sub("", word).lower()


@dataclass(frozen=True, slots=True)
class StablePartial:
    """``text`` = ``stable`` + (space) + ``tentative``."""

    stable: str
    tentative: str

    @property
    def text(self) -> str:
        return " ".join(p for p in (self.stable, self.tentative) if p)


class PartialStabilizer:
    """Tracks one utterance's hypotheses; ``reset`` at each new utterance."""

    def __init__(self) -> None:
        self._stable: list[str] = []
        self._previous: list[str] = []

    def reset(self) -> None:
        self._stable = []
        self._previous = []

    def update(self, hypothesis: str) -> StablePartial:
        words = hypothesis.split()
        n = len(self._stable)
        if [_key(w) for w in words[:n]] == [_key(w) for w in self._stable]:
            # Extend the stable prefix by what this and the previous hypothesis agree on.
            agreed = n
            for old, new in zip(self._previous[n:], words[n:], strict=False):
                if _key(old) != _key(new):
                    break
                agreed += 1
            # The newest word may still be cut mid-way: it only counts once a later word follows it.
            agreed = min(agreed, len(words) - 1)
            if agreed > n:
                self._stable = words[:agreed]
            tentative = words[len(self._stable):]
        else:
            # The model changed its mind about words already shown as stable: keep them,
            # and show the new hypothesis's words beyond that length as tentative.
            tentative = words[n:]
        self._previous = words
        return StablePartial(" ".join(self._stable), " ".join(tentative))
