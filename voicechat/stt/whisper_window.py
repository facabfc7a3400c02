"""How much audio Whisper's encoder sees, and cutting the loops a short window invites (pure).

Whisper is trained on 30 s windows, and faster-whisper pads every utterance to
one: on a CPU the encoder then spends 0.4-0.5 s on a 3 s question, mostly on
padding. Encoding the utterance padded only to whole ``BUCKET_S`` seconds costs
a fraction of that (a 3 s question: 8 s, 60-70 ms), with as many exact
transcripts as the 30 s window on the sample questions and the end-of-turn
evidence set (docs/benchmarks.md). Two costs:

* Batches stay exact: an utterance's window depends on its own length only, so
  utterances are grouped by window and each group is decoded alone (batched and
  one-by-one decoding still give the same text).
* Over a short window the decoder sometimes starts the sentence again, or
  repeats its end: ``trim_repetition`` cuts the tokens where that begins.

Whatever the window, the frames after the utterance are what Whisper saw in
training: the log-mel of digital silence (its floor, 8 log10 units under the
loudest bin, i.e. 2 after normalisation), not zeros as faster-whisper pads a
window. Zeros read as faint sound; over a short window they cost exact
transcripts ("capital of friends" for "France"), docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Window = Literal["utterance", "full"]

FRAMES_PER_S = 100  # Whisper's log-mel frames: 10 ms hop
FULL_FRAMES = 3000  # the 30 s window
BUCKET_S = 8  # short windows are whole multiples of this (5 s lost exact words; 6-10 s were alike)
RESTART_MIN = 3  # tokens that must match the start for a restart to count
LOOP_REPEATS = 3  # a span repeated this many times at the end is a loop
LOOP_MAX_SPAN = 8
SILENCE_BELOW_MAX = 2.0  # Whisper's log-mel floor under its maximum, in normalised units ((max - 8 + 4) / 4)


def window_frames(frames: int, window: Window) -> int:
    """Frames the encoder gets for an utterance of ``frames`` mel frames: whole buckets, at most 30 s."""
    if window == "full":
        return FULL_FRAMES
    bucket = BUCKET_S * FRAMES_PER_S
    return min(FULL_FRAMES, max(bucket, -(-frames // bucket) * bucket))


def fit_window(features: np.ndarray, frames: int) -> np.ndarray:
    """Normalised log-mel ``features`` [n_mels, n] cut to ``frames``, or padded to it with the log-mel of
    digital silence (``features.max() - SILENCE_BELOW_MAX``), as Whisper pads its 30 s windows."""
    if features.shape[-1] >= frames:
        return features[..., :frames]
    floor = float(features.max()) - SILENCE_BELOW_MAX if features.size else 0.0
    return np.pad(features, ((0, 0), (0, frames - features.shape[-1])), constant_values=floor)


def trim_repetition(tokens: Sequence[int]) -> list[int]:
    """``tokens`` up to where the decoder starts the text again or loops on its end."""
    out = list(tokens)
    n = len(out)
    for k in range(RESTART_MIN, n):
        span = min(RESTART_MIN + 1, n - k)
        if span >= RESTART_MIN and out[k : k + span] == out[:span]:
            out = out[:k]
            break
    for size in range(1, LOOP_MAX_SPAN + 1):
        repeats = 1
        while len(out) >= size * (repeats + 1) and out[len(out) - size * (repeats + 1) : len(out) - size * repeats] \
                == out[len(out) - size :]:
            repeats += 1
        if repeats >= LOOP_REPEATS:
            return out[: len(out) - size * (repeats - 1)]
    return out
