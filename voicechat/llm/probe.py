"""The end-of-message probe: the model's probability that the user's message ends where its text ends.

Pure (no model): where in a tokenized prompt to read it, and how to turn logits into it. The
scheduler reads the logits of the user text's last token during the request's own prefill (one
flagged batch entry, no extra decode) and reports ``P(end token)``, the token the chat template
puts right after the text (ChatML: ``<|im_end|>``). ``stt.transcript_end.end_of_message`` is the
same softmax; it is repeated here because ``llm`` does not import ``stt``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

ProbeCallback = Callable[[float | None], None]


def token_probability(logits: np.ndarray, token: int) -> float:
    """Softmax probability of ``token`` under next-token ``logits`` (any shape, flattened; in [0, 1])."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    e = np.exp(x - x.max())
    return float(e[token] / e.sum())


def end_probe_at(
    tokens: Sequence[int], is_eog: Callable[[int], bool], piece: Callable[[int], bytes], text: str
) -> int | None:
    """Index of the token whose logits give P(end of message), or None where it cannot be found.

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


def report(callback: ProbeCallback | None, value: float | None) -> None:
    """Call ``callback(value)``; a failing callback is logged, never raised to the caller's thread."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        log.exception("end-of-message callback failed")
