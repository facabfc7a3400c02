"""Scripted language model: a deterministic reply built from the user's words.

The reply quotes the last user message ("You said: ..."), so a test can check
by content that a session was answered about its own audio, then pads with
numbered filler sentences up to ``reply_words`` words. Delays (time to first
token, per token) and faults are configurable; abort and discard end a stream at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from voicechat.core.history import ChatMessage
from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.protocols import GenerationParams, LanguageModel
from voicechat.engines.scripted.base import FaultPlan, PacedEngine


def scripted_reply(user_text: str, reply_words: int) -> str:
    """The full reply the scripted model gives to ``user_text``."""
    words = f"You said: {user_text.rstrip('.!?')}.".split()
    n = 1
    while len(words) < reply_words:
        words += f"Filler sentence number {n} of this reply.".split()
        n += 1
    return " ".join(words)


class ScriptedLLM(PacedEngine, LanguageModel):
    """Streams ``scripted_reply`` word by word."""

    what = "llm"
    label = "language model"

    def __init__(
        self,
        first_token_s: float = 0.0,
        token_s: float = 0.0,
        reply_words: int = 24,
        faults: FaultPlan | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(first_token_s, token_s, faults, breaker)
        self.reply_words = reply_words
        self._lock = threading.Lock()
        self.released: list[str] = []
        self.discard_calls: list[str] = []  # every discard asked for, by session id, in order (not in abort_calls)
        self.prompts: dict[str, list[Sequence[ChatMessage]]] = {}

    def stream(self, session_id: str, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[str]:
        with self._lock:
            self.prompts.setdefault(session_id, []).append(list(messages))

        def tokens() -> Iterator[str]:
            user = next((m.content for m in reversed(messages) if m.role == "user"), "")
            words = scripted_reply(user, self.reply_words).split()[: params.max_tokens]
            return (w if i == 0 else " " + w for i, w in enumerate(words))

        return self._paced(session_id, tokens)

    def discard(self, session_id: str) -> None:
        """End the session's stream at once, like abort, and record it in ``discard_calls``.

        The scripted model keeps nothing between calls, so there is nothing more to forget.
        """
        with self._lock:
            self.discard_calls.append(session_id)
        self._aborts.abort(session_id, record=False)

    def release(self, session_id: str) -> None:
        self.abort(session_id)
        with self._lock:
            self.released.append(session_id)
