"""The session's one reply in progress, and the output it holds while only prepared.

A reply has two numbers. ``rid`` is the pipeline's own: every reply gets a new one,
prepared or not, and the stage workers' jobs carry it, so a discarded or interrupted
reply is stale wherever its jobs are met. ``generation`` is the turn's number on the
wire (the reply to the n-th turn is generation n, whatever was prepared and dropped
on the way).

While ``held`` is a list the reply is prepared, not confirmed: everything it would
send goes into that list instead of the outbox, in order. Confirming releases it;
discarding drops it, so the client never sees a prepared reply that was not used.
Pure bookkeeping: the pipeline calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voicechat.core.events import EndOfTurn, Event, TurnMetrics
from voicechat.core.jobs import EndOfReply
from voicechat.core.reply_tracker import ReplyTracker


@dataclass
class LiveReply:
    rid: int
    generation: int
    user_text: str
    tracker: ReplyTracker
    stamps: dict[str, float] = field(default_factory=dict)  # monotonic s of each stage (TurnMetrics)
    end_of_turn: EndOfTurn | None = None  # how the turn it answers ended (TurnMetrics)
    held: list[Event] | None = None  # a prepared reply's output, kept until it is confirmed
    first_audio_at: float | None = None  # when its first audio went to the client
    played_samples: int = 0  # the player's report (samples at the output rate)
    written_words: int = 0  # words of the sentences its LLM stage has handed to TTS
    synthesized: EndOfReply | None = None  # its synthesis ended while it was held: finish it on release
    # a prepared reply's prefill reports P(the user's message ends there) here (see LanguageModel.stream)
    on_end_of_message: Callable[[float | None], None] | None = None
    metrics_sent: bool = False  # its TurnMetrics went out (once: at the end of synthesis, or when cut)

    def take_end_of_message(self) -> Callable[[float | None], None] | None:
        """The listener for the LLM's end-of-message probability, once (it must hear exactly one answer)."""
        listener, self.on_end_of_message = self.on_end_of_message, None
        return None if listener is None else once(listener)

    @property
    def prepared(self) -> bool:
        return self.held is not None

    def stamp(self, stage: str, now: float) -> None:
        self.stamps.setdefault(stage, now)

    def metrics(self, interrupted: bool = False) -> TurnMetrics | None:
        """Its TurnMetrics, the first time only (None after); ``interrupted``: it was cut after its first
        audio went out (None when no audio did: nothing reached the listener to time)."""
        if self.metrics_sent or (interrupted and "first_audio" not in self.stamps):
            return None
        self.metrics_sent = True
        return TurnMetrics(self.generation, dict(self.stamps), prepared="prepared" in self.stamps,
                           end_of_turn=self.end_of_turn, interrupted=interrupted)

    def release(self) -> list[Event]:
        """Stop holding; returns what was held, in order."""
        held, self.held = self.held or [], None
        return held


def once(listener: Callable[[float | None], None]) -> Callable[[float | None], None]:
    """``listener`` that hears only the first call (the engine's answer, or the stage's None if it had none)."""
    called = False

    def call(value: float | None) -> None:
        nonlocal called
        if not called:
            called = True
            listener(value)

    return call
