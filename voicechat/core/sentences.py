"""Streaming sentence splitter: turns an LLM token stream into speakable pieces.

TTS latency is dominated by the first piece, so the first fragment of a reply
is released early at a clause boundary (comma, colon, semicolon, dash) once it
has a few words, or, with ``first_phrase_min_words``, before a word that opens a
phrase ("and", "because", "to", "with"...) once it has that many: the listener
hears the reply start after the first few words are decoded and synthesized,
not the whole first sentence (with Piper on a CPU, half the wait on a 12-word
sentence). Where no such boundary comes (a number's digits, a long name), the
caller may release the first piece at its last whole word (``cut_first``) once it
has waited long enough. Later pieces are whole sentences, which sound better.
Pure logic: no threads, no I/O.
"""

from __future__ import annotations

import re

# Abbreviations whose trailing dot does not end a sentence (lower-case, no dot).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e a.m p.m approx no fig cf mt ft inc ltd co".split()
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|\n+")
_CLAUSE_END = re.compile(r"[,;:]+(?=\s)|\s[-–—]+(?=\s)")
# Words a spoken phrase may start with (conjunctions, relative words, prepositions): a pause before them
# sounds like phrasing, not like a cut. Matched whole, followed by whitespace, so the word is complete.
_PHRASE_OPENERS = (
    "and but or so because since although though while when where which who whose that if unless until "
    "than as like to of in on at for with from by about into over under after before during through"
).split()
_PHRASE_START = re.compile(r"\s(?=(?:%s)\s)" % "|".join(_PHRASE_OPENERS), re.IGNORECASE)


class SentenceSplitter:
    """Feed token text; get back complete pieces ready for synthesis."""

    def __init__(self, first_fragment_min_words: int = 3, max_chars: int = 240,
                 first_phrase_min_words: int = 0) -> None:
        """``first_phrase_min_words``: release the first piece before a phrase opener once it has this many
        words (0: only at punctuation)."""
        self.first_fragment_min_words = first_fragment_min_words
        self.first_phrase_min_words = first_phrase_min_words
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the pieces it completed (maybe none)."""
        self._buf += text
        pieces: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                pieces.append(piece)
                self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        """End of stream: whatever is left is the last piece."""
        piece, self._buf = self._buf.strip(), ""
        if piece:
            self._emitted += 1
            return [piece]
        return []

    def cut_first(self, min_words: int) -> list[str]:
        """Before any piece: the words so far up to the last whole one (followed by whitespace), as the first
        piece, if there are at least ``min_words`` of them; else nothing. The caller says when (a time limit)."""
        if self._emitted or min_words <= 0:
            return []
        buf = self._buf
        end = next((i for i in range(len(buf) - 1, -1, -1) if buf[i].isspace()), -1)
        piece = buf[:end].strip() if end > 0 else ""
        if len(piece.split()) < min_words:
            return []
        self._buf = buf[end:]
        self._emitted += 1
        return [piece]

    def reset(self) -> None:
        self._buf = ""
        self._emitted = 0

    # -- internals -------------------------------------------------------------
    def _find_cut(self) -> int | None:
        """End of the first complete piece in the buffer, or None.

        Always the earliest candidate, so the pieces do not depend on how the
        stream was chunked into tokens.
        """
        buf = self._buf
        cuts: list[int] = []
        for m in _SENTENCE_END.finditer(buf):
            if m.end() > self.max_chars:
                break
            if (m.group().startswith("\n") or not self._is_abbreviation(buf, m.start())) and buf[: m.end()].strip():
                cuts.append(m.end())
                break
        if self._emitted == 0:
            cuts += self._early_cut(_CLAUSE_END, self.first_fragment_min_words)
            if self.first_phrase_min_words > 0:
                cuts += self._early_cut(_PHRASE_START, self.first_phrase_min_words)
        if cuts:
            return min(cuts)
        if len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space if space > 0 else self.max_chars
        return None

    def _early_cut(self, pattern: re.Pattern[str], min_words: int) -> list[int]:
        """The first match of ``pattern`` with ``min_words`` words before it, as a one-item list (or none)."""
        for m in pattern.finditer(self._buf):
            if m.end() > self.max_chars:
                break
            if len(self._buf[: m.start()].split()) >= min_words:
                return [m.end()]
        return []

    @staticmethod
    def _is_abbreviation(buf: str, dot: int) -> bool:
        """True when the dot at ``dot`` ends an abbreviation or an initial, not a sentence."""
        if buf[dot] != ".":
            return False
        start = dot
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:dot].lower().strip("\"'(")
        if word in _ABBREVIATIONS:
            return True
        # Single capital initials: "J. R. R. Tolkien".
        return len(word) == 1 and word.isalpha() and buf[start:dot].isupper()
