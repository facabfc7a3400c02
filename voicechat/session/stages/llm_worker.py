"""LLM stage: one reply at a time, streamed token by token into sentences.

Each text piece goes out at once as an assistant text delta; completed
sentences go to the TTS stage (the first one early, at a clause boundary).
A barge-in makes the job stale: the loop notices at the next token and the
pipeline has already asked the model to abort, so neither waits on the other.
The model is called through the session's ``CallGuard``: a failed, hung or
refused call (open circuit) ends the reply with an error, not the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from voicechat.core.history import ChatMessage
from voicechat.core.jobs import EndOfReply, ReplyJob, SentenceJob
from voicechat.core.sentences import SentenceSplitter
from voicechat.engines.call_guard import CallGuard, GuardedStream
from voicechat.engines.protocols import GenerationParams, LanguageModel
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.stages.base import QueueWorker, StageHost


class LlmHost(StageHost, Protocol):
    generation_params: GenerationParams

    def prompt_for(self, job: ReplyJob) -> Sequence[ChatMessage]: ...

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

    def stop(self) -> None:
        super().stop()
        self.guard.cancel_all()
        self.llm.abort(self.host.session_id)

    def handle(self, job: ReplyJob) -> None:
        gen = job.generation
        if not self.host.is_current(gen):
            return
        splitter = SentenceSplitter()
        parts: list[str] = []
        index = 0
        failed = False
        session, messages, params = self.host.session_id, self.host.prompt_for(job), self.host.generation_params
        stream: GuardedStream[str] | None = None
        try:
            stream = self.guard.open(gen, lambda: self.llm.stream(session, messages, params))
            for piece in stream:
                if not self.host.is_current(gen) or self.stop_event.is_set():
                    return  # barge-in or shutdown: the TTS side is flushed already
                parts.append(piece)
                self.host.emit_text(gen, piece)
                for sentence in splitter.feed(piece):
                    index = self._queue_sentence(gen, index, sentence)
        except Exception as exc:
            failed = True
            self.host.report_error(self.stage, exc, gen)
        finally:
            if stream is not None:
                stream.close()
        if not self.host.is_current(gen):
            return
        for sentence in splitter.flush():
            index = self._queue_sentence(gen, index, sentence)
        self.sentences.put(EndOfReply(gen, "".join(parts).strip(), failed=failed))

    def _queue_sentence(self, gen: int, index: int, text: str) -> int:
        if index == 0:
            self.host.stamp(gen, "first_sentence")
        self.sentences.put(SentenceJob(gen, index, text))
        return index + 1
