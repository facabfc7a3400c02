"""Scripted language model: a deterministic reply built from the user's words.

The reply quotes the last user message ("You said: ..."), so a test can check
by content that a session was answered about its own audio, then pads with
numbered filler sentences up to ``reply_words`` words. Delays (time to first
token, per token) and faults are configurable; abort ends a stream at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from voicechat.engines.base import GenerationParams, LanguageModel
from voicechat.engines.faults import AbortRegistry, FaultPlan, wait_or_abort
from voicechat.history import ChatMessage


def scripted_reply(user_text: str, reply_words: int) -> str:
    """The full reply the scripted model gives to ``user_text``."""
    words = f"You said: {user_text.rstrip('.!?')}.".split()
    n = 1
    while len(words) < reply_words:
        words += f"Filler sentence number {n} of this reply.".split()
        n += 1
    return " ".join(words)


class ScriptedLLM(LanguageModel):
    """Streams ``scripted_reply`` word by word."""

    def __init__(
        self,
        first_token_s: float = 0.0,
        token_s: float = 0.0,
        reply_words: int = 24,
        faults: FaultPlan | None = None,
    ) -> None:
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.reply_words = reply_words
        self.faults = faults or FaultPlan()
        self._lock = threading.Lock()
        self._aborts = AbortRegistry()
        self.released: list[str] = []
        self.prompts: dict[str, list[Sequence[ChatMessage]]] = {}

    def stream(self, session_id: str, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[str]:
        abort = self._aborts.begin(session_id)
        with self._lock:
            self.prompts.setdefault(session_id, []).append(list(messages))
        return self._generate(session_id, messages, params, abort)

    def _generate(
        self, session_id: str, messages: Sequence[ChatMessage], params: GenerationParams, abort: threading.Event
    ) -> Iterator[str]:
        try:
            self.faults.on_call("llm")
            user = next((m.content for m in reversed(messages) if m.role == "user"), "")
            words = scripted_reply(user, self.reply_words).split()[: params.max_tokens]
            if wait_or_abort(self.first_token_s, abort):
                return
            for i, word in enumerate(words):
                if i and wait_or_abort(self.token_s, abort):
                    return
                if abort.is_set():
                    return
                yield word if i == 0 else " " + word
        finally:
            self._aborts.end(session_id, abort)

    def abort(self, session_id: str) -> None:
        self._aborts.abort(session_id)

    @property
    def abort_calls(self) -> list[str]:
        return self._aborts.calls

    def release(self, session_id: str) -> None:
        self.abort(session_id)
        with self._lock:
            self.released.append(session_id)
