"""When a spoken reply should stop early: it repeats itself, or it has said enough.

Small models loop ("This is a joke, but... This is a joke, but...") or run on
until ``max_tokens``; read aloud, that is minutes of noise. The guard sees each
sentence the voice would speak, in order, and returns what of it to speak;
once it has stopped the reply, the caller ends the generation. Pure: no
threads, no clock.

Rules, on the words of a sentence (lower case, punctuation ignored):

- after ``max_sentences`` spoken sentences the reply ends (0 = no cap; a
  clause or a first phrase the splitter released early counts with the
  sentence it begins);
- a sentence of at least ``min_words_compared`` words that the reply already
  said word for word (however it was split into pieces), or nearly the same as
  an earlier piece (``SequenceMatcher`` ratio at or above ``max_similarity``),
  ends the reply before it;
- a run of ``loop_ngram`` words seen ``loop_repeats`` times in the reply is a
  loop, and the reply ends: a sentence that loops on itself is cut where its
  run first came back (the part before is spoken); one that loops on earlier
  sentences is not spoken.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher

_WORD = re.compile(r"[\w']+")
CLAUSE_ENDS = (",", ";", ":", "-", "–", "—")
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*$")


@dataclass
class ReplyGuard:
    """One reply's guard; make a new one per reply."""

    max_sentences: int = 0
    max_similarity: float = 0.9
    loop_ngram: int = 6
    loop_repeats: int = 3
    min_words_compared: int = 3  # shorter sentences ("Yes.", "Okay.") may recur
    spoken: int = 0
    _pieces: int = field(default=0, init=False)
    stop_reason: str = ""  # non-empty once the reply is to end
    _sentences: list[tuple[str, ...]] = field(default_factory=list)
    _ngrams: Counter[tuple[str, ...]] = field(default_factory=Counter)

    @property
    def stopped(self) -> bool:
        return bool(self.stop_reason)

    def admit(self, sentence: str) -> str | None:
        """The part of ``sentence`` to speak (maybe all of it), or None; check ``stopped`` after each call."""
        if self.stopped:
            return None
        if self.max_sentences and self.spoken >= self.max_sentences:
            return self._stop(f"said {self.max_sentences} sentences")
        spans = [(m.group().lower(), m.start()) for m in _WORD.finditer(sentence)]
        words = tuple(w for w, _ in spans)
        if len(words) < self.min_words_compared:
            self._count(sentence)
            return sentence
        said = " " + " ".join(w for earlier in self._sentences for w in earlier) + " "
        if f" {' '.join(words)} " in said:  # word for word, however the earlier text was split
            return self._stop("repeated a sentence")
        for earlier in self._sentences:
            if SequenceMatcher(None, words, earlier).ratio() >= self.max_similarity:
                return self._stop("repeated a sentence")
        counts = self._ngrams.copy()
        own: set[tuple[str, ...]] = set()
        came_back = None  # word index where an n-gram of this same sentence first came back
        looped = False
        for i in range(len(words) - self.loop_ngram + 1):
            gram = words[i:i + self.loop_ngram]
            if gram in own and came_back is None:
                came_back = i
            own.add(gram)
            counts[gram] += 1
            looped = looped or counts[gram] >= self.loop_repeats
        if looped:
            if came_back is None:  # it loops on what earlier sentences said: none of it is new
                return self._stop("repeated a phrase")
            self.stop_reason = "repeated a phrase"
            head = sentence[:spans[came_back][1]].rstrip(" ,;:-")
            if not _WORD.search(head):
                return None
            self._count(head)
            return head
        self._ngrams = counts
        self._sentences.append(words)
        self._count(sentence)
        return sentence

    def _count(self, piece: str) -> None:
        """A clause released early ("You said:", "Well,") is part of the sentence that follows it, and so
        is a first piece cut before a phrase ("You said turn off the lights" | "at eleven.")."""
        piece = piece.rstrip()
        first_fragment = self._pieces == 0 and not _SENTENCE_END.search(piece)
        self._pieces += 1
        if not piece.endswith(CLAUSE_ENDS) and not first_fragment:
            self.spoken += 1

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        return None
