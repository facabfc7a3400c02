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
from voicechat.core.turn_state import (
    CancelReply,
    ConfirmReply,
    DiscardReply,
    PrepareReply,
    StartReply,
    Transition,
    TurnStateMachine,
)
from voicechat.engines.call_guard import CallGuard, error_code
from voicechat.engines.protocols import Engines, GenerationParams, RecognizerCallbacks, VoiceSettings
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.live_reply import LiveReply
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
        self._reply: LiveReply | None = None
        self._rids = itertools.count(1)
        self._last_rid = 0  # every reply id up to this one has been handed out
        self._utterance_stamps: dict[str, float] = {}
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

    def _on_transcript_early(self, text: str) -> None:
        """A transcript made inside a pause: the turn may end with these words, so prepare their reply."""
        self._transition(self._turns.transcript_early, text)

    def _on_speech_resumed(self) -> None:
        self.last_activity = time.monotonic()
        self._transition(self._turns.speech_resumed)

    def _on_final(self, text: str) -> None:
        with self._lock:
            self._utterance_stamps.setdefault("transcript_final", time.monotonic())
            if text:
                self._put(FinalTranscript(text, self._turns.generation))
        self._transition(self._turns.transcript_final, text)

    # -- stage host interface (worker threads) --------------------------------------
    # ``rid`` below is the reply id the stage jobs carry (``LiveReply.rid``), not the wire generation.
    def is_current(self, rid: int) -> bool:
        reply = self._reply
        return reply is not None and reply.rid == rid and not self._stopped

    def report_error(self, stage: str, error: BaseException, generation: int | None = None) -> None:
        """An ``ErrorEvent`` of reply ``generation`` (a rid; dropped if it went stale), else of the current turn."""
        self.errors[stage] += 1
        log.warning("session %s: %s error: %s", self.session_id, stage, error)
        with self._lock:
            if generation is not None and not self.is_current(generation):
                return  # nobody waits for a reply that was interrupted or dropped
            turn = self._turns.generation if self._reply is None else self._reply.generation
            self._put_reply(ErrorEvent(error_code(stage, error), str(error) or type(error).__name__, stage, turn))

    def prompt_for(self, job: ReplyJob) -> Sequence[ChatMessage]:
        """The history, and the user's words where the reply is prepared (they join the history on confirm)."""
        with self._lock:
            messages = self.history.messages()
            reply = self._reply
            if reply is not None and reply.rid == job.generation and reply.prepared:
                messages.append(ChatMessage("user", reply.user_text))
            return messages

    def emit_text(self, rid: int, text: str) -> None:
        with self._lock:
            if self.is_current(rid):
                assert self._reply is not None
                self._reply.stamp("first_token", time.monotonic())
                self._put_reply(AssistantTextDelta(text, self._reply.generation))

    def stamp(self, rid: int, stage: str) -> None:
        with self._lock:
            if self.is_current(rid):
                assert self._reply is not None
                self._reply.stamp(stage, time.monotonic())

    def begin_sentence(self, rid: int, index: int, text: str) -> None:
        with self._lock:
            if self.is_current(rid):
                assert self._reply is not None
                self._reply.tracker.add_sentence(index, text)

    def emit_audio(self, rid: int, index: int, pcm: bytes) -> bool:
        """Put a chunk in the outbox (or the prepared reply's hold) unless its reply went stale; False if stale."""
        with self._lock:
            reply = self._reply
            if not self.is_current(rid) or reply is None:
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
            if self.is_current(rid):
                assert self._reply is not None
                self._reply.tracker.sentence_done(index)

    def reply_synthesized(self, rid: int, text: str, failed: bool) -> float | None:
        """All audio of the reply is out; returns when playback should have ended (None: no wait).

        A prepared reply keeps the end until it is confirmed: the pipeline then queues it again.
        """
        with self._lock:
            reply = self._reply
            if not self.is_current(rid) or reply is None:
                return None
            if reply.prepared:
                reply.synthesized = EndOfReply(rid, text, failed)
                return None
            tracker = reply.tracker
            text = tracker.full_text()
            if failed and not text:
                self.history.discard_last_user()
            self._put(ReplyDone(reply.generation, text, tracker.total_samples))
            self._put(TurnMetrics(reply.generation, dict(reply.stamps), prepared="prepared" in reply.stamps))
            if tracker.total_samples and reply.first_audio_at is not None:
                end = reply.first_audio_at + tracker.total_samples / self.output_sample_rate
                return end + PLAYBACK_REPORT_GRACE_S if self.options.playback_reports else end
        self.playback_finished(rid)
        return None

    def playback_finished(self, rid: int) -> None:
        with self._lock:
            reply = self._reply
            if reply is None or not self.is_current(rid) or reply.prepared:
                return
            self.history.add_assistant(reply.tracker.full_text())
            self._reply = None
            aborted = self._apply(self._turns.reply_finished(reply.generation))
        self._abort_engines(aborted)

    # -- internals (call with the lock held unless said otherwise) ---------------------
    def _transition(self, step: Callable[..., Transition], *args: object) -> None:
        """Run one state-machine input, apply its actions, abort engines after unlocking."""
        with self._lock:
            if self._stopped:
                return
            aborted = self._apply(step(*args))
        self._abort_engines(aborted)

    def _apply(self, t: Transition) -> str | None:
        """Carry out a transition's actions; how engines must be stopped after unlocking (None: not)."""
        if t.changed:
            self._put(StateChanged(t.state, t.generation, t.previous))
        abort: str | None = None
        for action in t.actions:
            if isinstance(action, CancelReply):
                self._cancel_reply(action)
                abort = "abort"
            elif isinstance(action, DiscardReply):
                self._discard_reply()
                abort = abort or "discard"
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
                                stamps, held=[] if held else None)
        self.reply_q.put(ReplyJob(rid, user_text))

    def _confirm_reply(self, action: ConfirmReply) -> None:
        """The turn ended with the prepared words: they join the history and the held output goes out."""
        reply = self._reply
        assert reply is not None and reply.prepared and reply.generation == action.generation
        self.history.add_user(action.user_text)
        reply.stamps.update(self._utterance_stamps)
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
        self._reply = None
        self._drop_stale_jobs()
        self.outbox.drop_older_than(action.generation, kinds=(AudioChunk,))
        self._put(FlushPlayback(action.generation))

    def _drop_stale_jobs(self) -> None:
        for q in (self.reply_q, self.sentence_q):
            q.drop_older_than(self._last_rid + 1)
        self.tts_worker.wake()  # it may be pacing the stale reply

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

    def _abort_engines(self, how: str | None) -> None:
        """After a cancel ("abort") or a dropped prepared reply ("discard"): stop the engines' calls for it."""
        if how is None:
            return
        stale_below = self._last_rid + 1
        for guard, engine in ((self.llm_guard, self.engines.llm), (self.tts_guard, self.engines.tts)):
            guard.cancel_stale(stale_below)  # the worker stops waiting at once, whatever the engine does
            try:
                if how == "discard" and engine is self.engines.llm:
                    self.engines.llm.discard(self.session_id)  # and forget its prompt in the session's cache
                else:
                    engine.abort(self.session_id)
            except Exception as exc:
                self.report_error("session", exc)

    def _put(self, event: Event) -> None:
        self.outbox.put(event)

    def _put_reply(self, event: Event) -> None:
        """An event of the live reply: held while the reply is only prepared."""
        reply = self._reply
        if reply is not None and reply.held is not None:
            reply.held.append(event)
        else:
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

