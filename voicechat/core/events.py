"""Typed events a session emits to its transport (WebSocket, TUI, tests).

Every event that belongs to one reply carries the ``generation`` it was made
for, so a consumer can drop anything older than the last ``FlushPlayback``.
The wire format of these events is documented in docs/protocol.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TurnState(str, enum.Enum):
    """Where a session's conversation stands (see turn_state.py)."""

    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    ASSISTANT_SPEAKING = "assistant_speaking"


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: TurnState
    generation: int
    previous: TurnState


@dataclass(frozen=True, slots=True)
class PartialTranscript:
    """Interim transcript of the utterance so far; ``stable`` is a prefix of ``text`` that will not change."""

    text: str
    generation: int
    stable: str = ""


@dataclass(frozen=True, slots=True)
class FinalTranscript:
    text: str
    generation: int


@dataclass(frozen=True, slots=True)
class AssistantTextDelta:
    text: str
    generation: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """PCM16 mono audio of one reply.

    ``start_sample`` is the offset of this chunk within the reply's audio, so a
    player can report how far it got; ``sentence_index`` says which sentence of
    the reply the audio speaks.
    """

    pcm: bytes
    sample_rate: int
    generation: int
    sentence_index: int
    start_sample: int

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


@dataclass(frozen=True, slots=True)
class FlushPlayback:
    """Barge-in: drop every queued/playing sample of generations < ``generation``."""

    generation: int


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The reply of ``generation`` is fully generated and synthesized."""

    generation: int
    text: str
    total_samples: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """How a spoken turn's end was decided: ``silence_ms`` of silence after its last voiced sample, and what
    the judges said then (``vad.end_of_turn = "smart"``): ``audio`` Smart Turn's P(finished), ``words`` the
    words' (the language model's end-of-message probe, or the rule on the transcript); None where a judge
    was not asked, not in yet or not used (the fixed silence: both None)."""

    silence_ms: float
    audio: float | None = None
    words: float | None = None


@dataclass(frozen=True, slots=True)
class TurnMetrics:
    """Monotonic timestamps (seconds) of one turn's stages, and their deltas.

    ``stamps`` keys: voice_end (when the last voiced sample of the utterance
    reached the server, dated on the audio's clock), speech_end (when the end
    of the turn was decided), transcript_final, first_token, first_sentence,
    first_audio. Missing keys mean the stage did not happen or was not dated
    (typed input has neither voice_end nor speech_end). ``prepared``: the reply
    was started before the end of the turn (from a transcript made inside the
    user's pause, stamp ``prepared``) and held until the turn ended, so its
    stages may precede ``speech_end``; ``llm_request`` when its request went to the
    language model, ``end_of_message`` when its prefill said whether the user's
    message ends there (the words' end-of-turn signal).
    ``end_of_turn``: how the end was decided (a spoken turn, where the recognizer says).
    ``interrupted``: the reply was cut (barge-in, typed input) after its first audio went out and
    before all of it was synthesized; these metrics then come just before the ``FlushPlayback``.
    """

    generation: int
    stamps: dict[str, float] = field(default_factory=dict)
    prepared: bool = False
    end_of_turn: EndOfTurn | None = None
    interrupted: bool = False

    def latency_ms(self, start: str, end: str) -> float | None:
        if start in self.stamps and end in self.stamps:
            return (self.stamps[end] - self.stamps[start]) * 1000.0
        return None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something failed; ``stage`` is stt/llm/tts/capture/session."""

    code: str
    message: str
    stage: str
    generation: int = 0


Event = (
    StateChanged | PartialTranscript | FinalTranscript | AssistantTextDelta | AudioChunk
    | FlushPlayback | ReplyDone | TurnMetrics | ErrorEvent
)
