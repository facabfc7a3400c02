"""What a session's stage workers may ask of it: the reply they work on, and where its output goes.

``ReplyStageHost`` is the half of ``SpeechPipelineManager`` the LLM and TTS workers call (from
their threads). ``rid`` is the reply id their jobs carry (``LiveReply.rid``), not the wire
generation: a call for a reply that is no longer live is ignored (or answers "stale"). Every
method takes the pipeline's lock; the ones starting with ``_`` expect it held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
    ErrorEvent,
    Event,
    ReplyDone,
)
from voicechat.core.history import ChatMessage, ConversationHistory
from voicechat.core.jobs import EndOfReply, ReplyJob
from voicechat.core.turn_state import Transition, TurnStateMachine
from voicechat.engines.call_guard import error_code
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.live_reply import LiveReply
from voicechat.tts.pacing import synthesis_wait_s, written_lead_s

log = logging.getLogger(__name__)

# A client that promised playback reports but never says "finished" must not
# leave the session speaking forever: give up this long after the estimate.
PLAYBACK_REPORT_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class EngineStop:
    """How a reply's engine calls end after unlocking: cancelled (a barge-in), or dropped before it was ever
    sent; and which: replies numbered below ``stale_below``, taken when the reply was dropped (a reply
    started in the same step, or by another thread before the engines are told, is not stale)."""

    how: Literal["abort", "discard"]
    stale_below: int


class _Options(Protocol):
    playback_reports: bool
    tts_max_ahead_s: float


class ReplyStageHost:
    """Mixed into ``SpeechPipelineManager``, which sets these attributes and the two methods below."""

    session_id: str
    history: ConversationHistory
    errors: Counter[str]
    output_sample_rate: int
    outbox: BoundedLRUQueue[Event]
    _lock: threading.Lock
    _turns: TurnStateMachine
    _reply: LiveReply | None
    _stopped: bool
    options: _Options

    def _apply(self, t: Transition) -> EngineStop | None:
        raise NotImplementedError

    def _abort_engines(self, stop: EngineStop | None) -> None:
        raise NotImplementedError

    def is_current(self, rid: int) -> bool:
        return self._live(rid) is not None

    def _live(self, rid: int) -> LiveReply | None:
        """Reply ``rid`` while it is the session's live one (and the session runs), else None."""
        reply = self._reply
        return reply if reply is not None and reply.rid == rid and not self._stopped else None

    def report_error(self, stage: str, error: BaseException, generation: int | None = None) -> None:
        """An ``ErrorEvent`` of reply ``generation`` (a rid; dropped if it went stale), else of the current turn."""
        self.errors[stage] += 1
        log.warning("session %s: %s error: %s", self.session_id, stage, error)
        with self._lock:
            event = ErrorEvent(error_code(stage, error), str(error) or type(error).__name__, stage,
                               self._turns.generation)  # a live reply's generation is the turn's
            if generation is None:
                self._put(event)  # the turn's (capture, stt, session): never held with a prepared reply
            elif self.is_current(generation):
                self._put_reply(event)  # held while the reply is only prepared
            # else: nobody waits for a reply that was interrupted or dropped

    def prompt_for(self, job: ReplyJob) -> Sequence[ChatMessage]:
        """The history, and the user's words where the reply is prepared (they join the history on confirm)."""
        with self._lock:
            reply = self._reply
            if reply is not None and reply.rid == job.generation and reply.prepared:
                return self.history.messages_with_user(reply.user_text)
            return self.history.messages()

    def end_of_message_listener(self, job: ReplyJob) -> Callable[[float | None], None] | None:
        """Where a prepared reply's LLM call reports P(the user's message ends there); None for other replies."""
        with self._lock:
            reply = self._reply
            if reply is None or reply.rid != job.generation:
                return None
            listener = reply.take_end_of_message()
        if listener is None:
            return None

        def stamped(p: float | None) -> None:
            self.stamp(job.generation, "end_of_message")
            listener(p)

        return stamped

    def reply_lead(self, job: ReplyJob) -> Callable[[], float]:
        """For the LLM: seconds of reply ``job``'s speech written ahead of what the listener heard (0 once
        stale). Played time is the client's report, else real time since the first audio (``_played_estimate``)."""
        rid = job.generation

        def lead() -> float:
            with self._lock:
                if (reply := self._live(rid)) is None:
                    return 0.0
                played_s = self._played_estimate(reply) / self.output_sample_rate
                return written_lead_s(reply.written_words, played_s)

        return lead

    def sentence_written(self, rid: int, text: str) -> None:
        """The LLM stage handed a sentence of reply ``rid`` to the TTS stage."""
        with self._lock:
            if (reply := self._live(rid)) is not None:
                reply.written_words += len(text.split())

    def emit_text(self, rid: int, text: str) -> None:
        with self._lock:
            if (reply := self._live(rid)) is not None:
                reply.stamp("first_token", time.monotonic())
                self._put_reply(AssistantTextDelta(text, reply.generation))

    def stamp(self, rid: int, stage: str) -> None:
        with self._lock:
            if (reply := self._live(rid)) is not None:
                reply.stamp(stage, time.monotonic())

    def begin_sentence(self, rid: int, index: int, text: str) -> None:
        with self._lock:
            if (reply := self._live(rid)) is not None:
                reply.tracker.add_sentence(index, text)

    def emit_audio(self, rid: int, index: int, pcm: bytes) -> bool:
        """Put a chunk in the outbox (or the prepared reply's hold) unless its reply went stale; False if stale."""
        with self._lock:
            if (reply := self._live(rid)) is None:
                return False
            if not pcm:
                return True
            offset = reply.tracker.add_audio(index, len(pcm) // 2)
            chunk = AudioChunk(pcm, self.output_sample_rate, reply.generation, index, offset)
            if reply.held is not None:
                reply.held.append(chunk)
            else:
                self._send_audio(reply, chunk)
            return True

    def synthesis_wait_s(self, rid: int) -> float:
        """Seconds the TTS stage should wait before the reply's next sentence (``tts_max_ahead_s``)."""
        with self._lock:
            reply = self._reply
            if reply is None or reply.rid != rid:
                return 0.0
            first = reply.first_audio_at
            # held: nothing plays yet, so at most tts_max_ahead_s is made before the confirmation wakes it
            playing_for = 0.0 if reply.prepared else None if first is None else time.monotonic() - first
            return synthesis_wait_s(reply.tracker.total_samples / self.output_sample_rate, playing_for,
                                    self.options.tts_max_ahead_s)

    def sentence_done(self, rid: int, index: int) -> None:
        with self._lock:
            if (reply := self._live(rid)) is not None:
                reply.tracker.sentence_done(index)

    def reply_synthesized(self, rid: int, text: str, failed: bool) -> float | None:
        """All audio of the reply is out; returns when playback should have ended (None: no wait).

        A prepared reply keeps the end until it is confirmed: the pipeline then queues it again.
        """
        with self._lock:
            if (reply := self._live(rid)) is None:
                return None
            if reply.prepared:
                reply.synthesized = EndOfReply(rid, text, failed)
                return None
            tracker = reply.tracker
            text = tracker.full_text()
            if failed and not text:
                self.history.discard_last_user()
            self._put(ReplyDone(reply.generation, text, tracker.total_samples))
            if (metrics := reply.metrics()) is not None:
                self._put(metrics)
            if tracker.total_samples and reply.first_audio_at is not None:
                end = reply.first_audio_at + tracker.total_samples / self.output_sample_rate
                return end + PLAYBACK_REPORT_GRACE_S if self.options.playback_reports else end
        self.playback_finished(rid)
        return None

    def playback_finished(self, rid: int) -> None:
        with self._lock:
            reply = self._live(rid)
            if reply is None or reply.prepared:
                return
            self.history.add_assistant(reply.tracker.full_text())
            self._reply = None
            aborted = self._apply(self._turns.reply_finished(reply.generation))
        self._abort_engines(aborted)

    def _send_audio(self, reply: LiveReply, chunk: AudioChunk) -> None:
        if reply.first_audio_at is None:
            reply.first_audio_at = time.monotonic()
            reply.stamp("first_audio", reply.first_audio_at)
        self._apply(self._turns.audio_started(reply.generation))
        self._put(chunk)

    def _played_estimate(self, reply: LiveReply) -> int:
        if self.options.playback_reports or reply.first_audio_at is None:
            return reply.played_samples
        elapsed = time.monotonic() - reply.first_audio_at
        return min(reply.tracker.total_samples, int(elapsed * self.output_sample_rate))

    def _put(self, event: Event) -> None:
        self.outbox.put(event)

    def _put_reply(self, event: Event) -> None:
        """An event of the live reply: held while the reply is only prepared."""
        reply = self._reply
        if reply is not None and reply.held is not None:
            reply.held.append(event)
        else:
            self.outbox.put(event)

