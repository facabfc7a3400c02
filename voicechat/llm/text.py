"""Turning a stream of generated token bytes into reply text: UTF-8 reassembly and stop strings.

Pure (no model): a token is a byte string, and a multi-byte character may be split across tokens
(byte-fallback vocabularies emit one token per byte), so text is decoded incrementally and an
incomplete character waits for its next bytes. Stop strings may likewise arrive split across
tokens, so text that could still become a stop string is held back until it is decided.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Pieces:
    """Bytes in, complete characters out; invalid bytes become U+FFFD rather than errors."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        """The end of the reply: an unfinished character becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Cuts the reply before the first stop string, holding back a possible start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text now safe to emit; sets ``stopped`` once a stop string appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """Generation ended without a stop string: the held-back text was reply after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest end of ``buf`` that begins some stop string."""
        longest = min(len(buf), max(len(s) for s in self._stops) - 1)
        for n in range(longest, 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0
