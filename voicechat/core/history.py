"""Conversation history of one session, kept within a token budget.

The system prompt, and the example exchange after it (``examples``: user and
assistant turns that show a small model the language and length of a reply;
not the user's, so never in ``turns`` or the journal), are always kept; the
oldest turns go first. Consecutive user
messages are merged (a reply that was interrupted before anything of it was
heard leaves no assistant message, and the user's follow-up belongs to the same
question). No I/O here: a listener (the conversation journal) hears each
change, in the order the changes were applied, so replaying them into a fresh
history rebuilds this one. The owner passes a lock (``threading.RLock()``)
when several threads use one history (a session's workers, and the memory
monitor that trims it); the lock must be reentrant. Without one, a history
serves a single thread (replays, tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]
ChangeKind = Literal["user", "assistant", "clear", "discard_last_user"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class HistoryChange:
    """One change to a history: a message added (``kind`` is its role), a clear, or an unanswered question dropped."""

    kind: ChangeKind
    text: str = ""


HistoryListener = Callable[[HistoryChange], None]


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
        listener: HistoryListener | None = None,
        lock: AbstractContextManager[object] | None = None,
        examples: Sequence[str] = (),
    ) -> None:
        if len(examples) % 2:
            raise ValueError("examples are user and assistant turns in pairs")
        self.system_prompt = system_prompt
        roles: tuple[Role, Role] = ("user", "assistant")
        self.examples = tuple(ChatMessage(roles[i % 2], text) for i, text in enumerate(examples))
        self.max_tokens = max_tokens
        self.listener = listener
        self._count = count_tokens
        self._turns: list[ChatMessage] = []
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        self.trimmed_messages = 0

    def add_user(self, text: str) -> None:
        self._add("user", text)

    def add_assistant(self, text: str) -> None:
        """Record what the user actually heard of a reply (nothing: no message)."""
        self._add("assistant", text)

    def discard_last_user(self) -> None:
        """Forget an unanswered question (its reply failed before saying anything)."""
        with self._lock:
            if self._turns and self._turns[-1].role == "user":
                self._turns.pop()
                self._notify(HistoryChange("discard_last_user"))

    def clear(self) -> None:
        with self._lock:
            if self._turns:
                self._turns.clear()
                self._notify(HistoryChange("clear"))

    def apply(self, change: HistoryChange) -> None:
        """Carry out one recorded change (replaying a journal); the listener hears it too."""
        if change.kind in ("user", "assistant"):
            self._add(change.kind, change.text)
        elif change.kind == "clear":
            self.clear()
        elif change.kind == "discard_last_user":
            self.discard_last_user()

    def replay(self, changes: Iterable[HistoryChange]) -> None:
        """Rebuild from recorded changes without telling the listener (they are recorded already)."""
        with self._lock:
            listener, self.listener = self.listener, None
            try:
                for change in changes:
                    self.apply(change)
            finally:
                self.listener = listener

    def set_budget(self, max_tokens: int) -> int:
        """Change the token budget (memory pressure lowers it); returns how many messages were dropped."""
        with self._lock:
            before = self.trimmed_messages
            self.max_tokens = max_tokens
            self._trim()
            return self.trimmed_messages - before

    def messages(self) -> list[ChatMessage]:
        head = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        head += self.examples
        with self._lock:
            return head + list(self._turns)

    def messages_with_user(self, text: str) -> list[ChatMessage]:
        """``messages()`` as they will be once ``add_user(text)`` is called, leaving the history as it is.

        The prompt of a reply prepared before the user's words join the history must say what the
        history will say then, or the next turn's prompt departs from the one the KV was computed
        for (a user message after an unanswered one is merged into it, not added after it).
        """
        messages = self.messages()
        if text.strip():
            _say(messages, "user", text.strip())
        return messages

    @property
    def turns(self) -> list[ChatMessage]:
        with self._lock:
            return list(self._turns)

    def token_count(self) -> int:
        return sum(self._cost(m) for m in self.messages())

    # -- internals -------------------------------------------------------------
    def _add(self, role: Role, text: str) -> None:
        text = text.strip()
        if not text:
            return
        with self._lock:
            _say(self._turns, role, text)
            self._trim()
            self._notify(HistoryChange(role, text))  # type: ignore[arg-type]

    def _notify(self, change: HistoryChange) -> None:
        """Tell the listener (under the lock, so it hears changes in order); its failure is not ours."""
        if self.listener is None:
            return
        try:
            self.listener(change)
        except Exception:
            log.exception("history listener failed on %s", change.kind)

    def _cost(self, message: ChatMessage) -> int:
        return self._count(message.content) + MESSAGE_OVERHEAD_TOKENS

    def _trim(self) -> None:
        """Drop the oldest turns until within budget; the newest message always stays (lock held)."""
        total = self.token_count()
        while total > self.max_tokens and len(self._turns) > 1:
            dropped = self._turns.pop(0)
            total -= self._cost(dropped)
            self.trimmed_messages += 1
            # Never start the kept history with an assistant message.
            if self._turns and self._turns[0].role == "assistant" and len(self._turns) > 1:
                total -= self._cost(self._turns.pop(0))
                self.trimmed_messages += 1


def _say(messages: list[ChatMessage], role: Role, text: str) -> None:
    """Add ``text`` (stripped, not empty) said by ``role``: merged into the last message if it is that role's
    too (a user who goes on after an unanswered question, a reply heard in parts), else a new message."""
    if messages and messages[-1].role == role:
        messages[-1] = ChatMessage(role, f"{messages[-1].content} {text}")
    else:
        messages.append(ChatMessage(role, text))
