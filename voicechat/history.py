"""Conversation history of one session, kept within a token budget.

The system prompt is always kept; the oldest turns go first. Consecutive user
messages are merged (a reply that was interrupted before anything of it was
heard leaves no assistant message, and the user's follow-up belongs to the same
question). Pure logic: no threads, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def estimate_tokens(text: str) -> int:
    """Rough token count (about four characters a token) for models without a tokenizer."""
    return len(text) // 4 + 1


# Per-message overhead of chat templates (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4


class ConversationHistory:
    """System prompt + alternating turns, trimmed oldest-first to ``max_tokens``."""

    def __init__(
        self,
        system_prompt: str,
        max_tokens: int,
        count_tokens: Callable[[str], int] = estimate_tokens,
    ) -> None:
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self._count = count_tokens
        self._turns: list[ChatMessage] = []
        self.trimmed_messages = 0

    def add_user(self, text: str) -> None:
        self._add("user", text)

    def add_assistant(self, text: str) -> None:
        """Record what the user actually heard of a reply (nothing: no message)."""
        self._add("assistant", text)

    def discard_last_user(self) -> None:
        """Forget an unanswered question (its reply failed before saying anything)."""
        if self._turns and self._turns[-1].role == "user":
            self._turns.pop()

    def clear(self) -> None:
        self._turns.clear()

    def messages(self) -> list[ChatMessage]:
        head = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        return head + list(self._turns)

    @property
    def turns(self) -> list[ChatMessage]:
        return list(self._turns)

    def token_count(self) -> int:
        return sum(self._cost(m) for m in self.messages())

    # -- internals -------------------------------------------------------------
    def _add(self, role: Role, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if self._turns and self._turns[-1].role == role:
            text = f"{self._turns[-1].content} {text}"
            self._turns[-1] = ChatMessage(role, text)
        else:
            self._turns.append(ChatMessage(role, text))
        self._trim()

    def _cost(self, message: ChatMessage) -> int:
        return self._count(message.content) + MESSAGE_OVERHEAD_TOKENS

    def _trim(self) -> None:
        """Drop the oldest turns until within budget; the newest message always stays."""
        total = self.token_count()
        while total > self.max_tokens and len(self._turns) > 1:
            dropped = self._turns.pop(0)
            total -= self._cost(dropped)
            self.trimmed_messages += 1
            # Never start the kept history with an assistant message.
            if self._turns and self._turns[0].role == "assistant" and len(self._turns) > 1:
                total -= self._cost(self._turns.pop(0))
                self.trimmed_messages += 1
