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

A reply may be prepared before the turn ends (``PrepareReply``: the user is silent and
the recognizer transcribed the words so far): it runs through the LLM and TTS like any
reply, but its output is held (``LiveReply.held``) until the turn ends with the same
words (``ConfirmReply``), and dropped with nothing in the history if the user goes on
(``DiscardReply``). Stage jobs carry the pipeline's reply id (``LiveReply.rid``), so a
dropped reply's jobs are stale even though the next reply has its turn's generation.

The LLM and TTS stages reach their shared engines through a ``CallGuard`` each:
a call that fails, hangs past its timeout or meets an open circuit breaker ends
its turn with an error event, and the session goes on with its next turn.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from voicechat.audio import AudioFrame
from voicechat.core.events import (
    AudioChunk,
    EndOfTurn,
    Event,
    FinalTranscript,
    FlushPlayback,
    PartialTranscript,
    StateChanged,
    TurnState,
)
from voicechat.core.history import ChatMessage, ConversationHistory
from voicechat.core.jobs import EndOfReply, ReplyJob, SentenceJob
from voicechat.core.reply_tracker import ReplyTracker
from voicechat.core.turn_state import (
    CancelReply,
    ConfirmReply,
    DiscardReply,
    PrepareReply,
    StartReply,
    Transition,
    TurnStateMachine,
)
from voicechat.engines.call_guard import CallGuard
from voicechat.engines.protocols import Engines, GenerationParams, RecognizerCallbacks, VoiceSettings
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.live_reply import LiveReply
from voicechat.session.stage_host import EngineStop, ReplyStageHost
from voicechat.session.stages.capture import CaptureStage
from voicechat.session.stages.llm_worker import LlmWorker
from voicechat.session.stages.stt_worker import SttWorker
from voicechat.session.stages.tts_worker import TtsWorker
from voicechat.stt.partial_stabilizer import PartialStabilizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    system_prompt: str = "You are a friendly voice assistant."
    example_turns: tuple[str, ...] = ()  # an example exchange after the system prompt (user, assistant, ...)
    history_max_tokens: int = 2048
    generation: GenerationParams = field(default_factory=GenerationParams)
    max_spoken_sentences: int = 0  # a reply ends after this many spoken sentences; 0 = no cap
    first_phrase_words: int = 0  # the first spoken piece may end before a phrase opener after this many words
    first_phrase_wait_s: float = 0.0  # ... or at its last whole word this long after the first token; 0 = never
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
    prefill_while_speaking: bool = False  # the LLM reads the user's stable words while they speak (if it is idle)
    abort_grace_s: float = 2.0  # an abandoned call's thread that runs longer than this is counted as stuck


@dataclass(frozen=True)
class StopReport:
    session_id: str
    stuck_threads: list[str]
    seconds: float


class SpeechPipelineManager(ReplyStageHost):
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
        self.first_phrase_words = opts.first_phrase_words
        self.first_phrase_wait_s = opts.first_phrase_wait_s
        self.voice = opts.voice
        self.output_sample_rate = opts.output_sample_rate
        self.history = ConversationHistory(opts.system_prompt, opts.history_max_tokens, lock=threading.RLock(),
                                           examples=opts.example_turns)
        self.errors: Counter[str] = Counter()
        self.last_activity = time.monotonic()

        self._lock = threading.Lock()
        self._turns = TurnStateMachine(barge_in=opts.barge_in)
        self._stabilizer = PartialStabilizer()
        self._prefilled = ""  # this utterance's words last given to the model to read ahead (prefill_while_speaking)
        self._reply: LiveReply | None = None
        self._rids = itertools.count(1)
        self._last_rid = 0  # every reply id up to this one has been handed out
        self._utterance_stamps: dict[str, float] = {}
        self._end_of_turn: EndOfTurn | None = None  # how the latest spoken turn ended
        self._stopped = False

        self.reply_q: BoundedLRUQueue[ReplyJob] = BoundedLRUQueue(4, "reply")
        self.sentence_q: BoundedLRUQueue[SentenceJob | EndOfReply] = BoundedLRUQueue(
            opts.sentence_queue_size, "sentence"
        )
        self.outbox: BoundedLRUQueue[Event] = BoundedLRUQueue(opts.event_queue_size, "events", on_put=on_event)

        recognizer = engines.recognizer_factory(
            session_id, RecognizerCallbacks(self._on_speech_start, self._on_speech_end, self._on_partial,
                                            self._on_transcript_early, self._on_speech_resumed)
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
        self._warm(self.history.messages())  # the system prompt's KV ready before the first turn

    def _warm(self, messages: list[ChatMessage]) -> None:
        """Let the model prefill ``messages`` if it has nothing else to do (``LanguageModel.warm``); unlocked."""
        try:
            self.engines.llm.warm(self.session_id, messages)
        except Exception:
            log.exception("session %s: warming the language model failed", self.session_id)

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
            self._end_of_turn = None
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
            reply = self._reply
            if reply is None or reply.generation != generation or reply.prepared:
                return
            reply.played_samples = max(reply.played_samples, played_samples)
        if finished:
            self.playback_finished(reply.rid)

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
            self._prefilled = ""
        self._transition(self._turns.speech_started)

    def _on_speech_end(self, voice_ended_at: float | None = None, end_of_turn: EndOfTurn | None = None) -> None:
        with self._lock:
            self._utterance_stamps = {"speech_end": time.monotonic()}
            self._end_of_turn = end_of_turn
            if voice_ended_at is not None:
                self._utterance_stamps["voice_end"] = voice_ended_at
        self._transition(self._turns.speech_ended)

    def _on_partial(self, text: str) -> None:
        read_ahead: list[ChatMessage] | None = None
        with self._lock:
            partial = self._stabilizer.update(text)
            self._put(PartialTranscript(partial.text, self._turns.generation, partial.stable))
            stable = partial.stable  # words no later partial takes back: the model may read them now
            if (self.options.prefill_while_speaking and stable and stable != self._prefilled
                    and self._reply is None and not self._stopped):  # no reply: the history is whole
                self._prefilled = stable
                read_ahead = self.history.messages_with_user(stable)
        if read_ahead is not None:
            self._warm(read_ahead)

    def _on_transcript_early(self, text: str, on_end_of_message: Callable[[float | None], None] | None) -> None:
        """A transcript made inside a pause: the turn may end with these words, so prepare their reply.

        The prepared reply's prefill tells whether the language model thinks the message ends there
        (``on_end_of_message``); with no reply prepared, nobody can tell (None).
        """
        aborted: EngineStop | None = None
        prepared = False
        with self._lock:
            if not self._stopped:
                t = self._turns.transcript_early(text)
                aborted = self._apply(t)
                prepared = any(isinstance(action, PrepareReply) for action in t.actions)
                if prepared and self._reply is not None:
                    self._reply.on_end_of_message = on_end_of_message
        self._abort_engines(aborted)
        if not prepared and on_end_of_message is not None:
            on_end_of_message(None)

    def _on_speech_resumed(self) -> None:
        self.last_activity = time.monotonic()
        self._transition(self._turns.speech_resumed)

    def _on_final(self, text: str) -> None:
        with self._lock:
            self._utterance_stamps.setdefault("transcript_final", time.monotonic())
            if text:
                self._put(FinalTranscript(text, self._turns.generation))
        self._transition(self._turns.transcript_final, text)

    # -- internals (call with the lock held unless said otherwise) ---------------------
    def _transition(self, step: Callable[..., Transition], *args: object) -> None:
        """Run one state-machine input, apply its actions, abort engines after unlocking."""
        with self._lock:
            if self._stopped:
                return
            aborted = self._apply(step(*args))
        self._abort_engines(aborted)

    def _apply(self, t: Transition) -> EngineStop | None:
        """Carry out a transition's actions; how engines must be stopped after unlocking (None: not)."""
        if t.changed:
            self._put(StateChanged(t.state, t.generation, t.previous))
        abort: EngineStop | None = None
        for action in t.actions:
            if isinstance(action, CancelReply):
                self._cancel_reply(action)
                abort = EngineStop("abort", self._last_rid + 1)
            elif isinstance(action, DiscardReply):
                self._discard_reply()
                abort = abort or EngineStop("discard", self._last_rid + 1)
            elif isinstance(action, StartReply):
                self.history.add_user(action.user_text)
                self._start_reply(action.generation, action.user_text, held=False)
            elif isinstance(action, PrepareReply):
                self._start_reply(action.generation, action.user_text, held=True)
            elif isinstance(action, ConfirmReply):
                self._confirm_reply(action)
        return abort

    def _start_reply(self, generation: int, user_text: str, held: bool) -> None:
        rid = self._last_rid = next(self._rids)
        stamps = {"prepared": time.monotonic()} if held else dict(self._utterance_stamps)
        self._reply = LiveReply(rid, generation, user_text, ReplyTracker(generation, self.output_sample_rate),
                                stamps, None if held else self._end_of_turn, held=[] if held else None)
        self.reply_q.put(ReplyJob(rid, user_text))

    def _confirm_reply(self, action: ConfirmReply) -> None:
        """The turn ended with the prepared words: they join the history and the held output goes out."""
        reply = self._reply
        assert reply is not None and reply.prepared and reply.generation == action.generation
        self.history.add_user(action.user_text)
        reply.stamps.update(self._utterance_stamps)
        reply.end_of_turn = self._end_of_turn
        for event in reply.release():
            if isinstance(event, AudioChunk):
                self._send_audio(reply, event)
            else:
                self._put(event)
        if reply.synthesized is not None:  # the TTS stage finished while it was held: let it finish for real
            self.sentence_q.put(reply.synthesized)
        self.tts_worker.wake()  # it may be pacing the held reply

    def _discard_reply(self) -> None:
        """Drop the prepared reply: nothing of it was sent and nothing of it is kept."""
        self._reply = None
        self._drop_stale_jobs()

    def _cancel_reply(self, action: CancelReply) -> None:
        reply = self._reply
        if reply is not None:
            self.history.add_assistant(reply.tracker.heard_text(self._played_estimate(reply)))
            if not reply.prepared and (metrics := reply.metrics(interrupted=True)) is not None:
                self._put(metrics)  # what the listener waited for this reply, though it was cut
        self._reply = None
        self._drop_stale_jobs()
        self.outbox.drop_older_than(action.generation, kinds=(AudioChunk,))
        self._put(FlushPlayback(action.generation))

    def _drop_stale_jobs(self) -> None:
        for q in (self.reply_q, self.sentence_q):
            q.drop_older_than(self._last_rid + 1)
        self.tts_worker.wake()  # it may be pacing the stale reply

    def _abort_engines(self, stop: EngineStop | None) -> None:
        """After a cancel ("abort") or a dropped prepared reply ("discard"): stop the engines' calls for it.

        The engines stop a session's latest call, so not once a newer reply's call was opened (the guard
        decides, see ``CallGuard.unless_newer``): that call replaces the stale one in the engine anyway.
        """
        if stop is None:
            return
        for guard, engine in ((self.llm_guard, self.engines.llm), (self.tts_guard, self.engines.tts)):
            guard.cancel_stale(stop.stale_below)  # the worker stops waiting at once, whatever the engine does
            if stop.how == "discard" and engine is self.engines.llm:
                action = partial(self.engines.llm.discard, self.session_id)  # and forget its prompt in the cache
            else:
                action = partial(engine.abort, self.session_id)
            try:
                guard.unless_newer(stop.stale_below, action)
            except Exception as exc:
                self.report_error("session", exc)

    # -- stats ---------------------------------------------------------------------
    def queue_stats(self) -> dict[str, dict[str, int]]:
        """Per queue: its size, evictions and barge-in drops; "capture" is the recognizer's audio backlog."""
        backlog = getattr(self.recognizer, "backlog", None)  # None: a recognizer that keeps no backlog
        stats = {"capture": {"size": 0, "evicted": 0, "dropped_stale": 0}}
        for q in (backlog, self.reply_q, self.sentence_q, self.outbox):
            if q is not None:
                stats[q.name] = {"size": len(q), "evicted": q.evicted, "dropped_stale": q.dropped_stale}
        return stats

