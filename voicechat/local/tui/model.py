"""What the terminal UI shows, as plain data: a reducer over session events.

Kept free of rich, threads and I/O so every display rule (partials updated in
place, barge-in marking, latency medians) is a unit test. The owner applies
events and calls ``tui_view.render`` under one lock; nothing here locks.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Literal

from voicechat.core.events import (
    AssistantTextDelta,
    EndOfTurn,
    ErrorEvent,
    Event,
    FinalTranscript,
    FlushPlayback,
    PartialTranscript,
    ReplyDone,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.server.protocol import turn_latencies_ms

Role = Literal["user", "assistant", "error", "info"]

LATENCY_STAGES = ("endpointing", "stt", "llm_first_token", "first_sentence", "tts_first_audio", "voice_to_voice")
"""The stages of ``protocol.turn_latencies_ms``, in the order a turn goes through them."""

MAX_TURNS_FOR_MEDIAN = 10_000
"""Enough for any session; bounded so a server left running for weeks does not grow."""


@dataclass
class Line:
    """One entry of the conversation.

    ``final`` is False while a user utterance is still being recognised or an
    assistant reply is still streaming; ``stable`` is the prefix of a partial
    user transcript that will not change any more.
    """

    role: Role
    text: str
    generation: int
    final: bool = True
    stable: str = ""
    latency: dict[str, float] | None = None
    end_of_turn: EndOfTurn | None = None  # how the user's turn it answers ended
    interrupted: bool = False


@dataclass
class HeaderInfo:
    """Facts about the process for the header; the owner refreshes them (cpu, sessions) now and then."""

    models: dict[str, str]
    join_urls: list[str]
    qr: str
    sessions: int
    cpu_percent: float
    gpu: str | None
    input_device: str
    output_device: str


class TuiModel:
    """The local session as the screen shows it.

    ``muted``, ``push_to_talk``, ``talking`` (push-to-talk held open),
    ``voice``, ``speed`` and ``notice`` (a short transient message) are set
    by the owner; ``state`` and ``lines`` follow the events.
    """

    def __init__(self, max_lines: int = 200) -> None:
        self.max_lines = max_lines
        self.state = TurnState.LISTENING
        self.muted = False
        self.push_to_talk = False
        self.talking = False
        self.level_dbfs = -120.0
        self.voice = ""
        self.speed = 1.0
        self.notice = ""
        self.lines: list[Line] = []
        self._turns: deque[dict[str, float]] = deque(maxlen=MAX_TURNS_FOR_MEDIAN)
        self._stale_below = 0

    # -- events --------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Fold one session event into the view (AudioChunk is ignored: the owner plays and counts audio)."""
        if isinstance(event, StateChanged):
            self._state_changed(event)
        elif isinstance(event, PartialTranscript):
            self._partial(event)
        elif isinstance(event, FinalTranscript):
            self._final(event)
        elif isinstance(event, AssistantTextDelta):
            self._delta(event)
        elif isinstance(event, FlushPlayback):
            self._flush(event)
        elif isinstance(event, ReplyDone):
            self._reply_done(event)
        elif isinstance(event, TurnMetrics):
            self._metrics(event)
        elif isinstance(event, ErrorEvent):
            self._append(Line("error", f"{event.stage}: {event.message}", event.generation))

    def _state_changed(self, event: StateChanged) -> None:
        self.state = event.state
        pending = self._pending_user()
        if (
            pending is not None
            and event.previous is TurnState.THINKING
            and event.state is TurnState.LISTENING
        ):
            # The utterance ended with an empty final transcript (noise): nothing was said.
            self.lines.remove(pending)

    def _partial(self, event: PartialTranscript) -> None:
        stable = event.stable if event.text.startswith(event.stable) else ""
        pending = self._pending_user()
        if pending is None:
            self._append(Line("user", event.text, event.generation, final=False, stable=stable))
        else:
            pending.text, pending.stable, pending.generation = event.text, stable, event.generation

    def _final(self, event: FinalTranscript) -> None:
        pending = self._pending_user()
        if pending is None:  # typed input, or a recognizer without partials
            self._append(Line("user", event.text, event.generation))
        else:
            pending.text, pending.stable, pending.final = event.text, "", True
            pending.generation = event.generation

    def _delta(self, event: AssistantTextDelta) -> None:
        if event.generation < self._stale_below:
            return  # a cancelled reply's leftovers
        line = self._assistant(event.generation)
        if line is None:
            self._append(Line("assistant", event.text, event.generation, final=False))
        else:
            line.text += event.text

    def _flush(self, event: FlushPlayback) -> None:
        self._stale_below = max(self._stale_below, event.generation)
        # A barge-in cancels exactly the reply before the new generation
        # (turn_state.CancelReply: generation = cancelled + 1); an older, fully
        # played reply must not be marked.
        line = self._assistant(event.generation - 1)
        if line is not None:
            line.interrupted = True
            line.final = True

    def _reply_done(self, event: ReplyDone) -> None:
        line = self._assistant(event.generation)
        if line is not None:
            line.final = True
        elif event.text and event.generation >= self._stale_below:
            self._append(Line("assistant", event.text, event.generation))

    def _metrics(self, event: TurnMetrics) -> None:
        latency = turn_latencies_ms(event)
        if not latency:
            return
        line = self._assistant(event.generation)
        if line is not None:
            line.latency, line.end_of_turn = latency, event.end_of_turn
        self._turns.append(latency)

    # -- owner inputs --------------------------------------------------------------
    def set_level(self, dbfs: float) -> None:
        """The microphone level of the last block, in dBFS (0 is full scale)."""
        self.level_dbfs = min(0.0, float(dbfs))

    def add_info(self, text: str) -> None:
        """A quiet line in the conversation (voice changed, history cleared, ...)."""
        self._append(Line("info", text, 0))

    def clear(self) -> None:
        """Forget the shown conversation (the latency medians stay: they describe the session)."""
        self.lines.clear()

    # -- latency -------------------------------------------------------------------
    def turns(self) -> int:
        """How many turns reported latencies."""
        return len(self._turns)

    def last_latency(self) -> dict[str, float]:
        """The last turn's per-stage latencies in ms ({} before the first turn)."""
        return dict(self._turns[-1]) if self._turns else {}

    def median_latency(self) -> dict[str, float]:
        """Per stage, the median over the turns of the session that had that stage."""
        out: dict[str, float] = {}
        for stage in LATENCY_STAGES:
            values = [turn[stage] for turn in self._turns if stage in turn]
            if values:
                out[stage] = round(statistics.median(values), 1)
        return out

    # -- helpers -------------------------------------------------------------------
    def _append(self, line: Line) -> None:
        self.lines.append(line)
        if len(self.lines) > self.max_lines:
            del self.lines[: len(self.lines) - self.max_lines]

    def _pending_user(self) -> Line | None:
        for line in reversed(self.lines):
            if line.role == "user" and not line.final:
                return line
        return None

    def _assistant(self, generation: int) -> Line | None:
        for line in reversed(self.lines):
            if line.role == "assistant" and line.generation == generation:
                return line
        return None
