"""SpeechPipelineManager: one session's pipeline of stage workers.

    capture q -> [capture] -> recognizer (VAD, endpointing, shared STT model)
                                 | final transcript
                                 v
    reply q -> [llm] -> sentence q -> [tts] -> outbox (events + audio) -> transport

All turn-taking decisions go through the pure TurnStateMachine under one lock,
which also guards every put of generation-tagged output. That lock is what
makes barge-in airtight: the flush (bump generation, drop stale audio, emit
FlushPlayback) and every audio put are mutually exclusive, so no chunk of an
interrupted reply can follow the flush event. Engine aborts are issued after
the lock is released, so a slow engine never blocks turn-taking.

The LLM and TTS stages reach their shared engines through a ``CallGuard`` each:
a call that fails, hangs past its timeout or meets an open circuit breaker ends
its turn with an error event, and the session goes on with its next turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from voicechat.audio import AudioFrame
from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
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
from voicechat.core.history import ChatMessage, ConversationHistory
from voicechat.core.jobs import EndOfReply, ReplyJob, SentenceJob
from voicechat.core.reply_tracker import ReplyTracker
from voicechat.core.turn_state import CancelReply, StartReply, Transition, TurnStateMachine
from voicechat.engines.call_guard import CallGuard, error_code
from voicechat.engines.protocols import Engines, GenerationParams, RecognizerCallbacks, VoiceSettings
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.stages.capture import CaptureStage
from voicechat.session.stages.llm_worker import LlmWorker
from voicechat.session.stages.stt_worker import SttWorker
from voicechat.session.stages.tts_worker import TtsWorker
from voicechat.stt.partial_stabilizer import PartialStabilizer
from voicechat.tts.pacing import synthesis_wait_s

log = logging.getLogger(__name__)

# A client that promised playback reports but never says "finished" must not
# leave the session speaking forever: give up this long after the estimate.
PLAYBACK_REPORT_GRACE_S = 2.0


@dataclass(frozen=True)
class PipelineOptions:
    system_prompt: str = "You are a friendly voice assistant."
    history_max_tokens: int = 2048
    generation: GenerationParams = field(default_factory=GenerationParams)
    max_spoken_sentences: int = 0  # a reply ends after this many spoken sentences; 0 = no cap
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    output_sample_rate: int = 24000
    sentence_queue_size: int = 64
    event_queue_size: int = 512
    barge_in: bool = True
    playback_reports: bool = False
    join_timeout_s: float = 2.0
    llm_call_timeout_s: float = 30.0  # longest wait for the LLM's next piece before the turn ends with an error
    tts_call_timeout_s: float = 15.0  # the same for the next audio chunk of a sentence
    tts_max_ahead_s: float = 0.0  # a reply's next sentence waits while more audio than this is unplayed; 0 = never
    abort_grace_s: float = 2.0  # an abandoned call's thread that runs longer than this is counted as stuck


@dataclass(frozen=True)
class StopReport:
    session_id: str
    stuck_threads: list[str]
    seconds: float


class SpeechPipelineManager:
    """Owns a session's queues, worker threads, turn state and history."""

    def __init__(
        self,
        session_id: str,
        engines: Engines,
        options: PipelineOptions | None = None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.options = opts = options or PipelineOptions()
        self.engines = engines
        self.generation_params = opts.generation
        self.max_spoken_sentences = opts.max_spoken_sentences
        self.voice = opts.voice
        self.output_sample_rate = opts.output_sample_rate
        self.history = ConversationHistory(opts.system_prompt, opts.history_max_tokens, lock=threading.RLock())
        self.errors: Counter[str] = Counter()
        self.last_activity = time.monotonic()

        self._lock = threading.Lock()
        self._turns = TurnStateMachine(barge_in=opts.barge_in)
        self._stabilizer = PartialStabilizer()
        self._reply: ReplyTracker | None = None
        self._stamps: dict[int, dict[str, float]] = {}
        self._utterance_stamps: dict[str, float] = {}
        self._first_audio_at: float | None = None
        self._played_samples = 0
        self._stopped = False

        self.reply_q: BoundedLRUQueue[ReplyJob] = BoundedLRUQueue(4, "reply")
        self.sentence_q: BoundedLRUQueue[SentenceJob | EndOfReply] = BoundedLRUQueue(
            opts.sentence_queue_size, "sentence"
        )
        self.outbox: BoundedLRUQueue[Event] = BoundedLRUQueue(opts.event_queue_size, "events", on_put=on_event)

        recognizer = engines.recognizer_factory(
            session_id, RecognizerCallbacks(self._on_speech_start, self._on_speech_end, self._on_partial)
        )
        self.llm_guard = CallGuard(
            "llm", session_id, engines.llm, label="language model", timeout_s=opts.llm_call_timeout_s,
            abort=lambda: engines.llm.abort(session_id), grace_s=opts.abort_grace_s,
        )
        self.tts_guard = CallGuard(
            "tts", session_id, engines.tts, label="speech synthesizer", timeout_s=opts.tts_call_timeout_s,
            abort=lambda: engines.tts.abort(session_id), grace_s=opts.abort_grace_s,
        )
        self.recognizer = recognizer
        self.capture = CaptureStage(recognizer)  # runs in the feeding thread; the recognizer's backlog bounds it
        self.tts_worker = TtsWorker(self, self.sentence_q, engines.tts, self.tts_guard)
        self.workers = [
            SttWorker(self, recognizer, self._on_final),
            LlmWorker(self, self.reply_q, engines.llm, self.sentence_q, self.llm_guard),
            self.tts_worker,
        ]

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self, join_timeout: float | None = None) -> StopReport:
        """Stop every worker, abort engine calls, join with a shared deadline.

        Threads still alive after the deadline are reported by name (they are
        daemon threads, so they cannot keep the process alive), engine call
        threads included.
        """
        started = time.monotonic()
        timeout = self.options.join_timeout_s if join_timeout is None else join_timeout
        with self._lock:
            self._stopped = True
        for worker in self.workers:
            try:
                worker.stop()
            except Exception:
                log.exception("session %s: stopping %s failed", self.session_id, worker.stage)
        deadline = time.monotonic() + timeout
        stuck = [w.thread.name for w in self.workers if not w.join(max(0.0, deadline - time.monotonic()))]
        for guard in (self.llm_guard, self.tts_guard):
            stuck += guard.join(max(0.0, deadline - time.monotonic()))
        try:
            self.engines.llm.release(self.session_id)
        except Exception:
            log.exception("session %s: releasing LLM state failed", self.session_id)
        self.outbox.close()
        return StopReport(self.session_id, stuck, time.monotonic() - started)

    # -- transport inputs --------------------------------------------------------
    def feed_audio(self, frame: AudioFrame) -> None:
        self.last_activity = time.monotonic()
        try:
            self.capture.handle(frame)
        except Exception as exc:  # this session's audio is at fault (or its recognizer): not the transport
            self.report_error("capture", exc)

    def send_text(self, text: str) -> None:
        """Typed input: answered at once, interrupting any reply.

        Its echo (``FinalTranscript``) carries the generation of the reply that answers it, so it follows
        the interruption's ``FlushPlayback`` and the ``StateChanged`` to thinking (as a spoken turn's does).
        """
        self.last_activity = time.monotonic()
        with self._lock:
            self._utterance_stamps = {"transcript_final": time.monotonic()}
            aborted = self._apply(self._turns.text_input(text))
            self._put(FinalTranscript(text, self._turns.generation))  # before any delta: the lock is held
        self._abort_engines(aborted)

    def listener_left(self) -> None:
        """The transport lost its client: stop a reply nobody hears; the history keeps what was heard."""
        self._transition(self._turns.listener_left)

    def set_muted(self, muted: bool) -> None:
        self.capture.muted = muted

    def set_voice(self, voice: VoiceSettings) -> None:
        self.voice = voice

    def clear_history(self) -> None:
        with self._lock:
            self.history.clear()

    def report_playback(self, generation: int, played_samples: int, finished: bool = False) -> None:
        """The player's position within reply ``generation`` (samples at the output rate)."""
        with self._lock:
            if self._reply is None or self._reply.generation != generation:
                return
            self._played_samples = max(self._played_samples, played_samples)
        if finished:
            self.playback_finished(generation)

    @property
    def state(self) -> TurnState:
        return self._turns.state

    @property
    def generation(self) -> int:
        return self._turns.generation

    # -- recognizer callbacks (RealtimeSTT's threads) ---------------------------------
    def _on_speech_start(self) -> None:
        self.last_activity = time.monotonic()
        with self._lock:
            self._stabilizer.reset()
        self._transition(self._turns.speech_started)

    def _on_speech_end(self, voice_ended_at: float | None = None) -> None:
        with self._lock:
            self._utterance_stamps = {"speech_end": time.monotonic()}
            if voice_ended_at is not None:
                self._utterance_stamps["voice_end"] = voice_ended_at
        self._transition(self._turns.speech_ended)

    def _on_partial(self, text: str) -> None:
        with self._lock:
            partial = self._stabilizer.update(text)
            self._put(PartialTranscript(partial.text, self._turns.generation, partial.stable))

    def _on_final(self, text: str) -> None:
        with self._lock:
            self._utterance_stamps.setdefault("transcript_final", time.monotonic())
            if text:
                self._put(FinalTranscript(text, self._turns.generation))
        self._transition(self._turns.transcript_final, text)

    # -- stage host interface (worker threads) --------------------------------------
    def is_current(self, generation: int) -> bool:
        return generation == self._turns.generation and not self._stopped

    def report_error(self, stage: str, error: BaseException, generation: int | None = None) -> None:
        """An ``ErrorEvent`` of ``generation`` (a reply's), else of the current turn (capture, stt, session)."""
        self.errors[stage] += 1
        log.warning("session %s: %s error: %s", self.session_id, stage, error)
        with self._lock:
            turn = self._turns.generation if generation is None else generation
            self._put(ErrorEvent(error_code(stage, error), str(error) or type(error).__name__, stage, turn))

    def prompt_for(self, job: ReplyJob) -> Sequence[ChatMessage]:
        with self._lock:
            return self.history.messages()

    def emit_text(self, generation: int, text: str) -> None:
        with self._lock:
            if self.is_current(generation):
                self._stamp(generation, "first_token")
                self._put(AssistantTextDelta(text, generation))

    def stamp(self, generation: int, stage: str) -> None:
        with self._lock:
            self._stamp(generation, stage)

    def begin_sentence(self, generation: int, index: int, text: str) -> None:
        with self._lock:
            if self._reply is not None and self._reply.generation == generation:
                self._reply.add_sentence(index, text)

    def emit_audio(self, generation: int, index: int, pcm: bytes) -> bool:
        """Put a chunk in the outbox unless its reply went stale; False if stale."""
        with self._lock:
            reply = self._reply
            if not self.is_current(generation) or reply is None or reply.generation != generation:
                return False
            if not pcm:
                return True
            offset = reply.add_audio(index, len(pcm) // 2)
            if self._first_audio_at is None:
                self._first_audio_at = time.monotonic()
                self._stamp(generation, "first_audio")
            self._apply(self._turns.audio_started(generation))
            self._put(AudioChunk(pcm, self.output_sample_rate, generation, index, offset))
            return True

    def synthesis_wait_s(self, generation: int) -> float:
        """Seconds the TTS stage should wait before the reply's next sentence (``tts_max_ahead_s``)."""
        with self._lock:
            reply, first = self._reply, self._first_audio_at
            if reply is None or reply.generation != generation:
                return 0.0
            playing_for = None if first is None else time.monotonic() - first
            return synthesis_wait_s(reply.total_samples / self.output_sample_rate, playing_for,
                                    self.options.tts_max_ahead_s)

    def sentence_done(self, generation: int, index: int) -> None:
        with self._lock:
            if self._reply is not None and self._reply.generation == generation:
                self._reply.sentence_done(index)

    def reply_synthesized(self, generation: int, text: str, failed: bool) -> float | None:
        """All audio of the reply is out; returns when playback should have ended."""
        with self._lock:
            reply = self._reply
            if not self.is_current(generation) or reply is None or reply.generation != generation:
                return None
            text = reply.full_text()
            if failed and not text:
                self.history.discard_last_user()
            self._put(ReplyDone(generation, text, reply.total_samples))
            self._put(TurnMetrics(generation, dict(self._stamps.pop(generation, {}))))
            if reply.total_samples and self._first_audio_at is not None:
                end = self._first_audio_at + reply.total_samples / self.output_sample_rate
                return end + PLAYBACK_REPORT_GRACE_S if self.options.playback_reports else end
        self.playback_finished(generation)
        return None

    def playback_finished(self, generation: int) -> None:
        with self._lock:
            reply = self._reply
            if reply is None or reply.generation != generation or not self.is_current(generation):
                return
            self.history.add_assistant(reply.full_text())
            self._reply = None
            aborted = self._apply(self._turns.reply_finished(generation))
        self._abort_engines(aborted)

    # -- internals (call with the lock held unless said otherwise) ---------------------
    def _transition(self, step: Callable[..., Transition], *args: object) -> None:
        """Run one state-machine input, apply its actions, abort engines after unlocking."""
        with self._lock:
            if self._stopped:
                return
            aborted = self._apply(step(*args))
        self._abort_engines(aborted)

    def _apply(self, t: Transition) -> bool:
        """Carry out a transition's actions; True if engines must be aborted."""
        if t.changed:
            self._put(StateChanged(t.state, t.generation, t.previous))
        must_abort = False
        for action in t.actions:
            if isinstance(action, CancelReply):
                self._cancel_reply(action)
                must_abort = True
            elif isinstance(action, StartReply):
                self._start_reply(action)
        return must_abort

    def _start_reply(self, action: StartReply) -> None:
        self.history.add_user(action.user_text)
        self._reply = ReplyTracker(action.generation, self.output_sample_rate)
        self._stamps[action.generation] = dict(self._utterance_stamps)
        self._first_audio_at = None
        self._played_samples = 0
        self.reply_q.put(ReplyJob(action.generation, action.user_text))

    def _cancel_reply(self, action: CancelReply) -> None:
        reply = self._reply
        if reply is not None:
            self.history.add_assistant(reply.heard_text(self._played_estimate(reply)))
        self._reply = None
        self._stamps.pop(action.cancelled, None)
        for q in (self.reply_q, self.sentence_q):
            q.drop_older_than(action.generation)
        self.outbox.drop_older_than(action.generation, kinds=(AudioChunk,))
        self._put(FlushPlayback(action.generation))
        self.tts_worker.wake()  # it may be pacing the cancelled reply

    def _played_estimate(self, reply: ReplyTracker) -> int:
        if self.options.playback_reports or self._first_audio_at is None:
            return self._played_samples
        elapsed = time.monotonic() - self._first_audio_at
        return min(reply.total_samples, int(elapsed * self.output_sample_rate))

    def _abort_engines(self, needed: bool) -> None:
        if not needed:
            return
        generation = self._turns.generation
        for guard, engine in ((self.llm_guard, self.engines.llm), (self.tts_guard, self.engines.tts)):
            guard.cancel_stale(generation)  # the worker stops waiting at once, whatever the engine does
            try:
                engine.abort(self.session_id)
            except Exception as exc:
                self.report_error("session", exc)

    def _stamp(self, generation: int, stage: str) -> None:
        self._stamps.setdefault(generation, {}).setdefault(stage, time.monotonic())

    def _put(self, event: Event) -> None:
        self.outbox.put(event)

    # -- stats ---------------------------------------------------------------------
    def queue_stats(self) -> dict[str, dict[str, int]]:
        """Per queue: its size, evictions and barge-in drops; "capture" is the recognizer's audio backlog."""
        backlog = getattr(self.recognizer, "backlog", None)  # None: a recognizer that keeps no backlog
        stats = {"capture": {"size": 0, "evicted": 0, "dropped_stale": 0}}
        for q in (backlog, self.reply_q, self.sentence_q, self.outbox):
            if q is not None:
                stats[q.name] = {"size": len(q), "evicted": q.evicted, "dropped_stale": q.dropped_stale}
        return stats

