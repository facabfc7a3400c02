"""Scripted language model: a deterministic reply built from the user's words.

The reply quotes the last user message ("You said: ..."), so a test can check
by content that a session was answered about its own audio, then pads with
numbered filler sentences up to ``reply_words`` words. Delays (time to first
token, per token) and faults are configurable; abort and discard end a stream at once.
Its end-of-message probability is a rule on the user's text (``scripted_end_of_message``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from voicechat.core.history import ChatMessage
from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.protocols import GenerationParams, LanguageModel
from voicechat.engines.scripted.base import FaultPlan, PacedEngine, remember

log = logging.getLogger(__name__)

WARMS_KEPT = 4096


def scripted_reply(user_text: str, reply_words: int) -> str:
    """The full reply the scripted model gives to ``user_text``."""
    words = f"You said: {user_text.rstrip('.!?')}.".split()
    n = 1
    while len(words) < reply_words:
        words += f"Filler sentence number {n} of this reply.".split()
        n += 1
    return " ".join(words)


def scripted_end_of_message(user_text: str) -> float | None:
    """The scripted model's P(end of message): 0.9 when the text ends with ".", "?" or "!", else 0.1.

    The same rule as a transcript's end mark, so a pipeline test steers it by the transcript: a
    finished sentence ("What time is it?") reads as done, a cut one ("I would like to") does not;
    None (cannot tell) for an empty text.
    """
    text = user_text.strip()
    if not text:
        return None
    return 0.9 if text[-1] in ".?!" else 0.1


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
        end_of_message: Callable[[str], float | None] = scripted_end_of_message,
    ) -> None:
        super().__init__(first_token_s, token_s, faults, breaker)
        self.reply_words = reply_words
        self.end_of_message = end_of_message  # the user's text -> what ``on_end_of_message`` gets
        self._lock = threading.Lock()
        self.released: list[str] = []
        self.discard_calls: list[str] = []  # every discard asked for, by session id, in order (not in abort_calls)
        # every warm-up asked for (session id, messages), the latest WARMS_KEPT
        self.warmed: deque[tuple[str, list[ChatMessage]]] = deque(maxlen=WARMS_KEPT)
        self.prompts: dict[str, list[Sequence[ChatMessage]]] = {}  # per session (``base.remember``)
        self.leads: dict[str, Callable[[], float]] = {}  # each open session's latest reply's ``lead``

    def stream(
        self, session_id: str, messages: Sequence[ChatMessage], params: GenerationParams,
        on_end_of_message: Callable[[float | None], None] | None = None,
        lead: Callable[[], float] | None = None,
    ) -> Iterator[str]:
        """Stream the reply; ``on_end_of_message`` is called at once, on the caller's thread, with
        ``self.end_of_message`` of the last message's text (None when the last message is not the user's).
        ``lead`` is kept in ``leads`` (the latest per session) for tests to read; it never slows the reply."""
        with self._lock:
            remember(self.prompts, session_id, list(messages))
            if lead is not None:
                self.leads[session_id] = lead
        self._report_end_of_message(messages, on_end_of_message)

        def tokens() -> Iterator[str]:
            user = next((m.content for m in reversed(messages) if m.role == "user"), "")
            words = scripted_reply(user, self.reply_words).split()[: params.max_tokens]
            return (w if i == 0 else " " + w for i, w in enumerate(words))

        return self._paced(session_id, tokens)

    def _report_end_of_message(
        self, messages: Sequence[ChatMessage], callback: Callable[[float | None], None] | None
    ) -> None:
        if callback is None:
            return
        last = messages[-1] if messages else None
        try:  # like the real engines: a failing callback is logged, the reply still streams
            callback(self.end_of_message(last.content) if last is not None and last.role == "user" else None)
        except Exception:
            log.exception("end-of-message callback failed")

    def warm(self, session_id: str, messages: Sequence[ChatMessage]) -> bool:
        """Recorded in ``warmed``; the scripted model keeps nothing, so nothing is prepared."""
        with self._lock:
            self.warmed.append((session_id, list(messages)))
        return False

    @property
    def warm_calls(self) -> list[str]:
        """The session id of every warm-up asked for, in order."""
        with self._lock:
            return [session_id for session_id, _ in self.warmed]

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
            self.leads.pop(session_id, None)  # it holds the session's objects: a closed session keeps none here
