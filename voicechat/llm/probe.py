"""The end-of-message probe: the model's view that the user's turn is over where its text ends.

Pure (no model): where in a tokenized prompt to read it, and how to turn logits into it. The
scheduler reads logits rows during the request's own prefill (flagged batch entries, no extra
decode) and reports one probability, the mean of two that the model gives there:

* **message**: P(end token) after the text's last token, the token the chat template puts right
  after the text (ChatML: ``<|im_end|>``): the user says nothing more after this;
* **sentence**: the probability that a sentence ends right after the last *word*, before any
  punctuation the transcript put after it (``.``, ``?``, ``!``, a line break or the end token next).

A text with no mark after its last word ("who wrote the play Romeo and Juliet") has both parts on
one row, and there the message part only asks the sentence part's question less its punctuation: a
chat model almost never ends a message without a mark, so P(end token) alone stays near 0 for
complete and cut-off words alike and halved the mean of complete questions (0.22-0.37 in `bench
load`, against 0.7-0.8 for the same question written with its "?"). There the probe is the sentence
part alone.

Each alone is weak where the speech recognizer finishes what it heard cut off ("I need to buy
some." reads as a whole message) or where a small model doubts a complete command ("Set a timer
for 10 minutes." gets P(end) 0.01): the sentence part asks whether the words themselves form a
complete sentence, whatever punctuation was written after them (docs/benchmarks.md, ``bench turns``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ProbeCallback = Callable[[float | None], None]

# What a transcript may put after its last word: punctuation, quotes, spaces.
_TRAILING = set(" \t\r\n.,;:?!\"')]\u2026")
# A token that ends a sentence when it comes next: one starting with . ? or ! (not an ellipsis).
_SENTENCE_END = re.compile(r"^\s*[.?!](?!\.)")


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Next-token probabilities from ``logits`` (any shape, flattened; float64)."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    e = np.exp(x - x.max())
    return e / e.sum()


def token_probability(logits: np.ndarray, token: int) -> float:
    """Softmax probability of ``token`` under next-token ``logits`` (any shape, flattened; in [0, 1])."""
    return float(_softmax(logits)[token])


def mass(logits: np.ndarray, tokens: np.ndarray) -> float:
    """Softmax probability that the next token is one of ``tokens`` (a boolean mask over the vocabulary)."""
    return float(_softmax(logits)[tokens].sum())


def sentence_end_tokens(pieces: Sequence[bytes], is_eog: Callable[[int], bool]) -> np.ndarray:
    """Boolean mask over the vocabulary (``pieces[i]``: token i's bytes, special tokens rendered): the
    tokens that, coming right after a word, end its sentence or message: end-of-generation tokens, those
    that start with ``.``, ``?`` or ``!`` (an ellipsis does not end it), and whitespace holding a line break."""
    mask = np.zeros(len(pieces), dtype=bool)
    for i, raw in enumerate(pieces):
        text = raw.decode("utf-8", errors="replace")
        mask[i] = is_eog(i) or bool(_SENTENCE_END.match(text)) or (text != "" and not text.strip() and "\n" in text)
    return mask


@dataclass(frozen=True, eq=False)
class EndProbe:
    """Where a prompt's prefill reads the probe, and what from (positions are prompt indices).

    ``word_at``: the text's last token holding a letter or digit (its row gives the sentence part);
    ``text_at``: the text's last token (its row gives the message part; the same token where nothing
    follows the last word); ``end_token``: the token the template puts after the text;
    ``sentence_ends``: ``sentence_end_tokens`` of the vocabulary (shared, never written).
    """

    word_at: int
    text_at: int
    end_token: int
    sentence_ends: np.ndarray

    def rows(self) -> tuple[int, ...]:
        """The prompt indices whose logits the probe needs, first to last."""
        return (self.word_at,) if self.word_at == self.text_at else (self.word_at, self.text_at)

    def read(self, index: int, logits: np.ndarray) -> dict[str, float]:
        """The parts the logits of prompt index ``index`` give ({} where it is not one of ``rows()``)."""
        parts = {}
        if index == self.word_at:
            parts["sentence"] = mass(logits, self.sentence_ends)
        if index == self.text_at:  # no mark after the last word: the sentence part's mass holds the end token
            same_row = self.word_at == self.text_at
            parts["message"] = parts["sentence"] if same_row else token_probability(logits, self.end_token)
        return parts


def end_of_turn(parts: dict[str, float]) -> float | None:
    """The probe's value from its parts: the mean of ``message`` and ``sentence``; None until both are in."""
    if "message" not in parts or "sentence" not in parts:
        return None
    return (parts["message"] + parts["sentence"]) / 2


def end_probe_at(
    tokens: Sequence[int], is_eog: Callable[[int], bool], piece: Callable[[int], bytes], text: str
) -> int | None:
    """Index of the text's last token (``EndProbe.text_at``), or None where it cannot be found.

    The prompt's last end-of-generation token closes the last message (the generation prompt after
    it has none); the probe is the token just before it, provided the bytes up to there end with
    ``text`` (the last message's content, stripped): else the template puts something between the
    text and its end token, or the last message is not where the probe would look.
    ``piece`` gives a token's bytes with special tokens rendered.
    """
    want = text.strip().encode("utf-8")
    if not want:
        return None
    end = next((i for i in range(len(tokens) - 1, 0, -1) if is_eog(tokens[i])), None)
    if end is None:
        return None
    tail, i = b"", end
    while i > 0 and len(tail) < len(want):
        i -= 1
        tail = piece(tokens[i]) + tail
    return end - 1 if tail.endswith(want) else None


def last_word_at(tokens: Sequence[int], text_at: int, piece: Callable[[int], bytes], text: str) -> int | None:
    """Index of the last token of ``text`` (ending at ``tokens[text_at]``) that is not only trailing marks
    (punctuation, quotes, spaces); None where the text is marks only. A token holding both a word's end and
    its punctuation counts as the word (then the sentence part reads after the punctuation)."""
    left = len(text.strip().encode("utf-8"))
    i = text_at
    while i >= 0 and left > 0:
        raw = piece(tokens[i])
        if not set(raw.decode("utf-8", errors="replace")) <= _TRAILING:
            return i
        left -= len(raw)
        i -= 1
    return None


def report(callback: ProbeCallback | None, value: float | None) -> None:
    """Call ``callback(value)``; a failing callback is logged, never raised to the caller's thread."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        log.exception("end-of-message callback failed")
