"""How far ahead of playback a reply is synthesized (pure policy).

Synthesis is much faster than speech (Piper: a sentence of 2-3 s in 0.1-0.3 s),
so a session's TTS stage could synthesize a whole reply while its first
sentence plays. On a shared CPU that work competes with other users' finals
and first sentences, and is thrown away when the user interrupts. So a
reply's next sentence waits until at most ``max_ahead_s`` of its audio is
still unplayed; playback is taken to run in real time from the reply's first
audio (an upper bound on what was played, so the wait is never too long).
"""

from __future__ import annotations

from voicechat.core.reply_tracker import DEFAULT_WORDS_PER_SECOND


def synthesis_wait_s(emitted_s: float, playing_for_s: float | None, max_ahead_s: float) -> float:
    """Seconds to wait before synthesizing a reply's next sentence (0: go on now).

    ``emitted_s``: seconds of the reply's audio sent so far; ``playing_for_s``: seconds since its first
    audio was sent (None: none yet); ``max_ahead_s`` <= 0: no limit."""
    if max_ahead_s <= 0 or playing_for_s is None:
        return 0.0
    unplayed = emitted_s - min(emitted_s, max(0.0, playing_for_s))
    return max(0.0, unplayed - max_ahead_s)


def written_lead_s(written_words: int, played_s: float, words_per_second: float = DEFAULT_WORDS_PER_SECOND) -> float:
    """Seconds of a reply's speech written ahead of its listener (>= 0): the words of the sentences the
    LLM has handed to the TTS stage, at ``words_per_second``, less the ``played_s`` seconds heard so far.

    What the LLM scheduler reads to let a reply this far ahead wait while other users need the model
    (``llm.defer_ahead_s``); a sentence still being written does not count (TTS cannot use it yet)."""
    return max(0.0, written_words / words_per_second - max(0.0, played_s))
