"""What of a reply's text is read aloud: markdown, bullets, emoji and URLs are not.

The page shows the model's text as it came; the voice gets a plain version of
each sentence. Pure: ``speakable(text)`` is a function of its input only, and
returns "" for a piece with nothing left to say (a bare bullet, a code fence,
a lone emoji), which the caller skips.
"""

from __future__ import annotations

import re
import unicodedata

_CODE_FENCE = re.compile(r"```[^\n]*")
_LINE_MARKERS = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,3}[.)](?:\s+|$))", re.M)
_LINK = re.compile(r"\[([^\]]*)\]\((?:[^)\s]+)\)")  # [text](url) -> text
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~|`+)(?=\S)(.+?)(?<=\S)\1")
_TIMES = re.compile(r"(?<=\d)\s*[*×]\s*(?=\d)")
_STRAY_MARKUP = re.compile(r"[*`|~]+|(?<!\w)#+|(?<!\w)_+|_+(?!\w)")
_SPACES = re.compile(r"[ \t]*\n[ \t\n]*|[ \t]{2,}")


def _is_emoji(ch: str) -> bool:
    """Pictographs, symbols and their joiners/selectors, which a voice reads as names or noise."""
    cp = ord(ch)
    return (
        0x1F000 <= cp <= 0x1FAFF  # emoji, pictographs, transport, flags, supplemental symbols
        or 0x2600 <= cp <= 0x27BF  # miscellaneous symbols, dingbats
        or 0x2B00 <= cp <= 0x2BFF  # arrows and stars used as emoji
        or cp in (0x200D, 0xFE0F, 0xFE0E, 0x20E3)  # joiner, variation selectors, keycap
        or unicodedata.category(ch) == "So" and cp > 0x2000
    )


def speakable(text: str) -> str:
    """``text`` as it should be spoken: no markdown, link targets or emoji; a URL is "the link"; spaces collapsed."""
    text = _CODE_FENCE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("the link", text)
    text = _LINE_MARKERS.sub("", text)
    for _ in range(3):  # nested emphasis: ***bold italic***, **`code`**
        text, n = _EMPHASIS.subn(r"\2", text)
        if not n:
            break
    text = _TIMES.sub(" times ", text)
    text = "".join(" " if _is_emoji(ch) else ch for ch in text)
    text = _STRAY_MARKUP.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    # Nothing but punctuation left (e.g. a bullet's "-" or an emoji's trailing "!") says nothing.
    return text if any(ch.isalnum() for ch in text) else ""
