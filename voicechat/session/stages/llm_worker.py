"""LLM stage: one reply at a time, streamed token by token into sentences.

Each text piece goes out at once as an assistant text delta (the page shows
the text as the model wrote it); completed sentences go to the TTS stage (the
first one early, at a clause boundary) as speakable text: no markdown, bullets,
emoji or URLs. A ``ReplyGuard`` ends the reply, and the generation, once it
repeats itself or has said ``max_spoken_sentences``.
A barge-in makes the job stale: the loop notices at the next token and the
pipeline has already asked the model to abort, so neither waits on the other.
The model is called through the session's ``CallGuard``: a failed, hung or
refused call (open circuit) ends the reply with an error, not the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from voicechat.core.history import ChatMessage
from voicechat.core.jobs import EndOfReply, ReplyJob, SentenceJob
from voicechat.core.reply_guard import ReplyGuard
from voicechat.core.sentences import SentenceSplitter
from voicechat.core.speakable import speakable
from voicechat.engines.call_guard import CallGuard, GuardedStream
from voicechat.engines.protocols import GenerationParams, LanguageModel
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.stages.base import QueueWorker, StageHost


class LlmHost(StageHost, Protocol):
    generation_params: GenerationParams
    max_spoken_sentences: int  # 0 = no cap
    first_phrase_words: int  # the first piece may end before a phrase opener after this many words; 0 = never
    first_phrase_wait_s: float  # ... or at its last whole word this long after the first token; 0 = never

    def prompt_for(self, job: ReplyJob) -> Sequence[ChatMessage]: ...

    def end_of_message_listener(self, job: ReplyJob) -> Callable[[float | None], None] | None: ...

    def reply_lead(self, job: ReplyJob) -> Callable[[], float]: ...

    def sentence_written(self, generation: int, text: str) -> None: ...

    def emit_text(self, generation: int, text: str) -> None: ...

    def stamp(self, generation: int, stage: str) -> None: ...


class LlmWorker(QueueWorker[ReplyJob]):
    stage = "llm"
    host: LlmHost

    def __init__(
        self,
        host: LlmHost,
        inbox: BoundedLRUQueue[ReplyJob],
        llm: LanguageModel,
        sentences: BoundedLRUQueue[SentenceJob | EndOfReply],
        guard: CallGuard,
    ) -> None:
        super().__init__(host, inbox)
        self.llm = llm
        self.sentences = sentences
        self.guard = guard

    def _first_phrase_words(self) -> int:
        """The host's ``first_phrase_words``, one more while other replies are in the model's hands.

        A short first piece leaves the rest of its sentence little audio to hide behind; with other sessions'
        replies decoding and speaking on the same cores the rest comes later, and the listener hears a hole
        (docs/benchmarks.md, session 36). The model's own count of replies (warm-ups not counted) says so.
        """
        words = self.host.first_phrase_words
        stats = getattr(self.llm, "stats", None)  # the in-process and remote engines report their replies
        snapshot = stats() if callable(stats) else None
        others = getattr(snapshot, "replies", getattr(snapshot, "active", 0)) if snapshot is not None else 0
        return words + 1 if words and others > 0 else words

    def stop(self) -> None:
        super().stop()
        self.guard.cancel_all()
        self.llm.abort(self.host.session_id)

    def handle(self, job: ReplyJob) -> None:
        gen = job.generation
        if not self.host.is_current(gen):
            return
        min_words = self._first_phrase_words()
        splitter = SentenceSplitter(first_phrase_min_words=min_words)
        wait_s, first_at = self.host.first_phrase_wait_s, 0.0
        guard = ReplyGuard(max_sentences=self.host.max_spoken_sentences)
        parts: list[str] = []
        kept: list[str] = []  # each sentence as spoken, for the reply text when the guard ends it early
        index = 0
        failed = False
        session, messages, params = self.host.session_id, self.host.prompt_for(job), self.host.generation_params
        probe = self.host.end_of_message_listener(job)  # a prepared reply: its prefill judges the user's turn
        lead = self.host.reply_lead(job)  # how far ahead of the listener: the model may let it wait for others
        stream: GuardedStream[str] | None = None
        self.host.stamp(gen, "llm_request")  # the job left the queue: the model has it from here
        try:
            stream = self.guard.open(
                gen, lambda: self.llm.stream(session, messages, params, on_end_of_message=probe, lead=lead))
            for piece in stream:
                if not self.host.is_current(gen) or self.stop_event.is_set():
                    return  # barge-in or shutdown: the TTS side is flushed already
                parts.append(piece)
                self.host.emit_text(gen, piece)
                first_at = first_at or time.monotonic()
                for sentence in splitter.feed(piece):
                    index = self._speak(gen, index, sentence, guard, kept)
                if index == 0 and wait_s and time.monotonic() - first_at >= wait_s:  # no boundary yet: a number
                    for sentence in splitter.cut_first(min_words or splitter.first_fragment_min_words):
                        index = self._speak(gen, index, sentence, guard, kept)
                if guard.stopped:
                    break
        except Exception as exc:
            failed = True
            self.host.report_error(self.stage, exc, gen)
        finally:
            if stream is not None:
                stream.close()
            if probe is not None:
                probe(None)  # no-op once the model answered; else nobody waits for an answer that never comes
        if not self.host.is_current(gen):
            return
        if not guard.stopped:
            for sentence in splitter.flush():
                index = self._speak(gen, index, sentence, guard, kept)
        text = " ".join(kept) if guard.stopped else "".join(parts).strip()
        self.sentences.put(EndOfReply(gen, text, failed=failed))

    def _speak(self, gen: int, index: int, sentence: str, guard: ReplyGuard, kept: list[str]) -> int:
        """Queue what the guard lets through of ``sentence``, as speakable text; returns the next index."""
        spoken = speakable(sentence)
        if guard.stopped or not spoken:
            return index
        admitted = guard.admit(spoken)
        if admitted is None:
            return index
        kept.append(admitted)
        if index == 0:
            self.host.stamp(gen, "first_sentence")
        self.host.sentence_written(gen, admitted)
        self.sentences.put(SentenceJob(gen, index, admitted))
        return index + 1
