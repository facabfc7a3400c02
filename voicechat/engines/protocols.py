"""Engine interfaces (typing Protocols) shared by real and scripted engines.

Models are expensive and loaded once per process, so the *shared* engines
(transcription model, language model, synthesizer) take a ``session_id`` on
every call and must be safe to call from many sessions' threads at once.
Only the recognizer (VAD + endpointing) is per session: it is cheap and holds
that session's audio state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from voicechat.core.events import EndOfTurn
from voicechat.core.history import ChatMessage


class EngineError(RuntimeError):
    """An engine call failed; the message is safe to show to the user."""


# -- speech to text ------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class SpeechInput:
    """One transcription request: float32 mono 16 kHz ``audio`` in [-1, 1]."""

    session_id: str
    audio: np.ndarray
    final: bool
    language: str | None = None


@runtime_checkable
class BatchTranscriber(Protocol):
    """A speech-to-text model (faster-whisper in production), loaded once.

    It sees batches, not sessions' threads: the shared ``SttScheduler`` decides
    what runs, in which order and together with what.
    """

    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        """Return one transcript per input, in order."""
        ...


@runtime_checkable
class AbortableTranscriber(BatchTranscriber, Protocol):
    """A ``BatchTranscriber`` whose running requests can be stopped (a remote one: it closes the socket)."""

    def abort(self, inputs: Sequence[SpeechInput]) -> None:
        """Stop these inputs' requests now, from any thread; ``transcribe_batch`` gives each of them ""
        and still returns the others' texts. Inputs not running are ignored."""
        ...


@runtime_checkable
class TranscriptionModel(Protocol):
    """What a session's recognizer talks to: the shared STT scheduler."""

    def transcribe(
        self, audio: np.ndarray, *, session_id: str, final: bool, language: str | None = None
    ) -> str:
        """Transcribe float32 mono 16 kHz ``audio`` in [-1, 1] and wait for the text."""
        ...

    def request_partial(
        self, session_id: str, audio: np.ndarray, on_text: Callable[[str], None], language: str | None = None
    ) -> None:
        """Ask for an interim transcript without waiting; a newer request replaces an older one."""
        ...

    def cancel(self, session_id: str, *, partials_only: bool = False) -> None:
        """Forget the session's queued requests (its utterance ended, or it closed)."""
        ...

    def has_spare_time(self) -> bool:
        """Whether work that may go to waste (a transcript at a guessed pause) should run now."""
        ...


class SpeechEndCallback(Protocol):
    """The utterance ended: ``voice_ended_at`` is when its last voiced sample reached the server (monotonic s),
    ``end_of_turn`` how the end was decided; each None where the recognizer does not know."""

    def __call__(self, voice_ended_at: float | None, end_of_turn: EndOfTurn | None = None) -> None: ...


def _ignore_speech_end(voice_ended_at: float | None, end_of_turn: EndOfTurn | None = None) -> None:
    return None


@dataclass(slots=True)
class RecognizerCallbacks:
    """What a recognizer reports while audio streams in (called from its threads)."""

    on_speech_start: Callable[[], None] = lambda: None
    on_speech_end: SpeechEndCallback = _ignore_speech_end
    on_partial: Callable[[str], None] = lambda text: None
    # A transcript made inside a pause of the utterance (the turn may end there, or the user go on), and
    # where to report the language model's probability that the user's message ends there (None: not known;
    # the receiver calls it exactly once), if the recognizer wants it.
    on_transcript_early: Callable[[str, Callable[[float | None], None] | None], None] = (
        lambda text, on_end_of_message: on_end_of_message(None) if on_end_of_message else None)
    # speech again after such a pause, in the same utterance (what was transcribed early is out of date)
    on_speech_resumed: Callable[[], None] = lambda: None


@runtime_checkable
class Recognizer(Protocol):
    """Per-session voice activity detection, endpointing and transcription."""

    def feed(self, pcm16: bytes) -> None:
        """Queue 16 kHz mono PCM16 audio; never blocks for long."""
        ...

    def next_final(self) -> str | None:
        """Block until the next utterance's final transcript; None once closed."""
        ...

    def close(self) -> None:
        """Stop, unblock ``next_final`` and release every thread and handler."""
        ...


class RecognizerFactory(Protocol):
    def __call__(self, session_id: str, callbacks: RecognizerCallbacks) -> Recognizer: ...


# -- language model ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GenerationParams:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # drop tokens less likely than min_p times the likeliest; 0 = off
    seed: int | None = None  # None = a fresh random seed per reply; fixed = reproducible sampling
    repeat_penalty: float = 1.0  # 1.0 = off
    ignore_eos: bool = False  # benchmarks: run to max_tokens even if the model ends its reply


@runtime_checkable
class LanguageModel(Protocol):
    """One shared chat model serving every session."""

    def stream(
        self,
        session_id: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        on_end_of_message: Callable[[float | None], None] | None = None,
        lead: Callable[[], float] | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated.

        ``on_end_of_message``: if given, called exactly once, from any thread, with the model's
        probability that the last message (the user's) ends where its text ends: P(end-of-message
        token | everything up to the last token of that text), read from this request's prefill;
        None where the engine cannot tell (it calls at once), or the request ended before the
        prefill reached that position. Keep it quick: it may run on the model's own thread.
        ``lead``: if given, returns the seconds of this reply's speech written ahead of what its
        listener has heard so far; an engine that shares its compute may let a reply that far ahead
        wait while others need it (``llm.defer_ahead_s``). Called from any thread; quick, no blocking.
        """
        ...

    def warm(self, session_id: str, messages: Sequence[ChatMessage]) -> bool:
        """Optionally get ready for the session's first turn (a new session's system prompt, a restored
        history): the engine may prefill ``messages`` now, if that delays nobody. True if it did."""
        ...

    def abort(self, session_id: str) -> None:
        """Stop ``session_id``'s running generation at once (its iterator ends)."""
        ...

    def discard(self, session_id: str) -> None:
        """Abort the session's latest generation and forget it.

        The session's next prompt reuses (KV cache, continuation of the previous reply's tokens)
        only what the session had before that generation started, whether it was still running
        or had finished. One level: a second discard, or one with nothing generated, does nothing.
        """
        ...

    def release(self, session_id: str) -> None:
        """The session is gone: free whatever the model keeps for it."""
        ...


# -- text to speech ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VoiceSettings:
    voice: str = "en-us"
    speed: float = 1.0


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """Shared text-to-speech; yields PCM16 mono chunks at ``sample_rate``."""

    sample_rate: int

    def synthesize(
        self, session_id: str, text: str, voice: VoiceSettings, *, first_in_reply: bool = False
    ) -> Iterator[bytes]:
        """Yield PCM16 chunks speaking ``text``.

        ``first_in_reply`` marks a reply's first sentence: a shared pool runs it
        before later sentences of other replies, since it sets time to first audio.
        """
        ...

    def abort(self, session_id: str) -> None:
        """Stop ``session_id``'s running synthesis within one chunk."""
        ...


@dataclass(slots=True)
class Engines:
    """The set of engines a process shares between all its sessions."""

    transcriber: TranscriptionModel
    recognizer_factory: RecognizerFactory
    llm: LanguageModel
    tts: SpeechSynthesizer
    extra: dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        for engine in (self.recognizer_factory, self.transcriber, self.llm, self.tts):
            close = getattr(engine, "close", None)
            if callable(close):
                close()
