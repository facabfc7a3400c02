"""Work items passed between a session's stage workers.

Every item carries the ``generation`` of the reply it belongs to; a barge-in
makes older generations stale and they are dropped wherever they are met.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplyJob:
    """LLM stage input: answer ``user_text`` as reply ``generation``."""

    generation: int
    user_text: str


@dataclass(frozen=True, slots=True)
class SentenceJob:
    """TTS stage input: speak sentence ``index`` of reply ``generation``."""

    generation: int
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class EndOfReply:
    """TTS stage input: reply ``generation`` has no more sentences."""

    generation: int
    text: str
    failed: bool = False
