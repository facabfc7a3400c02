"""TTS stage: sentences -> PCM16 at the session's output rate -> the outbox.

Audio is resampled with one stateful filter per reply (no clicks between
chunks or sentences). Every chunk is handed to the pipeline, which drops it if
its generation went stale, so nothing of an interrupted reply is emitted after
the flush event. When the transport does not report playback, this stage also
estimates when the reply has finished playing, by waiting on its inbox with a
deadline (not by polling).

The synthesizer is called through the session's ``CallGuard``. When a sentence
fails (an error, a hang past the timeout, an open circuit) the rest of that
reply is not spoken: its sentences are kept as text only, so the turn ends
with the error event and the whole reply on screen instead of one timeout per
sentence.

A reply's later sentences are paced (``tts/pacing.py``): each waits while more
than ``tts_max_ahead_s`` of the reply's audio is still unplayed. The wait ends
early when the reply is cancelled (``wake``) or the stage stops.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from voicechat.audio import StreamResampler
from voicechat.core.jobs import EndOfReply, SentenceJob
from voicechat.engines.call_guard import CallGuard
from voicechat.engines.protocols import SpeechSynthesizer, VoiceSettings
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.stages.base import QueueWorker, StageHost

TtsItem = SentenceJob | EndOfReply


class TtsHost(StageHost, Protocol):
    voice: VoiceSettings
    output_sample_rate: int

    def begin_sentence(self, generation: int, index: int, text: str) -> None: ...

    def emit_audio(self, generation: int, index: int, pcm: bytes) -> bool: ...

    def sentence_done(self, generation: int, index: int) -> None: ...

    def reply_synthesized(self, generation: int, text: str, failed: bool) -> float | None: ...

    def playback_finished(self, generation: int) -> None: ...

    def synthesis_wait_s(self, generation: int) -> float: ...


class TtsWorker(QueueWorker[TtsItem]):
    stage = "tts"
    host: TtsHost

    def __init__(
        self, host: TtsHost, inbox: BoundedLRUQueue[TtsItem], tts: SpeechSynthesizer, guard: CallGuard
    ) -> None:
        super().__init__(host, inbox)
        self.tts = tts
        self.guard = guard
        self._failed_gen = -1  # the reply whose synthesis failed: its other sentences are text only
        self._resampler: StreamResampler | None = None
        self._resampler_gen = -1
        self._last_index = 0
        self._playing: tuple[int, float] | None = None  # (generation, estimated end)
        self._wake = threading.Event()

    def wake(self) -> None:
        """End a pacing wait now (its reply was cancelled); any thread."""
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        self._wake.set()
        self.guard.cancel_all()
        self.tts.abort(self.host.session_id)

    def next_item(self) -> TtsItem | None:
        if self._playing is None:
            return self.inbox.get()
        gen, deadline = self._playing
        try:
            return self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._playing = None
            self.host.playback_finished(gen)
            return None

    def handle(self, item: TtsItem) -> None:
        if not self.host.is_current(item.generation):
            return
        self._playing = None
        if isinstance(item, EndOfReply):
            self._finish_reply(item)
        else:
            self._speak(item)

    def _speak(self, job: SentenceJob) -> None:
        gen = job.generation
        resampler = self._resampler_for(gen)
        self.host.begin_sentence(gen, job.index, job.text)
        if gen == self._failed_gen:
            self.host.sentence_done(gen, job.index)
            return
        if job.index > 0 and not self._paced(gen):
            return  # cancelled or stopping while it waited
        session, voice = self.host.session_id, self.host.voice
        first = job.index == 0
        try:
            chunks = self.guard.open(gen, lambda: self.tts.synthesize(session, job.text, voice, first_in_reply=first))
            try:
                for chunk in chunks:
                    if self.stop_event.is_set() or not self.host.emit_audio(gen, job.index, resampler.process(chunk)):
                        return  # stale or stopping: the pipeline already asked the engine to abort
                    self._last_index = job.index  # the resampler's tail belongs to the last sentence with audio
            finally:
                chunks.close()
        except Exception:
            self._failed_gen = gen
            raise  # reported by the loop, with the generation
        self.host.sentence_done(gen, job.index)

    def _paced(self, gen: int) -> bool:
        """Wait until the reply may have its next sentence; False if it went stale or the stage stops."""
        while (wait := self.host.synthesis_wait_s(gen)) > 0:
            self._wake.clear()
            if self.stop_event.is_set() or not self.host.is_current(gen):
                return False
            self._wake.wait(wait)
        return not self.stop_event.is_set() and self.host.is_current(gen)

    def _finish_reply(self, end: EndOfReply) -> None:
        gen = end.generation
        if self._resampler is not None and self._resampler_gen == gen:
            tail = self._resampler.process(b"", last=True)
            if tail:
                self.host.emit_audio(gen, self._last_index, tail)
        self._resampler = None
        deadline = self.host.reply_synthesized(gen, end.text, end.failed)
        if deadline is not None:
            self._playing = (gen, deadline)

    def _resampler_for(self, gen: int) -> StreamResampler:
        if self._resampler is None or self._resampler_gen != gen:
            self._resampler = StreamResampler(self.tts.sample_rate, self.host.output_sample_rate)
            self._resampler_gen = gen
        return self._resampler
