"""How far ahead of playback a reply is synthesized: the policy (pure) and the TTS stage's wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from voicechat.core.jobs import SentenceJob
from voicechat.engines.call_guard import CallGuard
from voicechat.engines.protocols import VoiceSettings
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.session.stages.tts_worker import TtsWorker
from voicechat.tts.pacing import synthesis_wait_s, written_lead_s

WAIT = 10.0


def test_the_next_sentence_waits_until_little_enough_audio_is_unplayed() -> None:
    assert synthesis_wait_s(emitted_s=3.0, playing_for_s=0.0, max_ahead_s=2.0) == 1.0
    assert synthesis_wait_s(emitted_s=3.0, playing_for_s=0.5, max_ahead_s=2.0) == 0.5
    assert synthesis_wait_s(emitted_s=3.0, playing_for_s=1.5, max_ahead_s=2.0) == 0.0
    assert synthesis_wait_s(emitted_s=3.0, playing_for_s=9.0, max_ahead_s=2.0) == 0.0  # played out: at once
    assert synthesis_wait_s(emitted_s=0.0, playing_for_s=None, max_ahead_s=2.0) == 0.0  # no audio yet
    assert synthesis_wait_s(emitted_s=30.0, playing_for_s=0.0, max_ahead_s=0.0) == 0.0  # 0: no limit


def test_the_lead_is_the_written_sentences_speech_less_what_was_heard() -> None:
    assert written_lead_s(written_words=10, played_s=0.0, words_per_second=2.5) == 4.0
    assert written_lead_s(written_words=10, played_s=1.5, words_per_second=2.5) == 2.5
    assert written_lead_s(written_words=10, played_s=9.0, words_per_second=2.5) == 0.0  # heard it all
    assert written_lead_s(written_words=0, played_s=0.0) == 0.0


class Host:
    """The TTS stage's view of a pipeline whose reply has far too much audio waiting (until cancelled)."""

    session_id = "s"
    voice = VoiceSettings()
    output_sample_rate = 16000

    def __init__(self) -> None:
        self.current = 1
        self.waiting = threading.Event()  # the stage asked how long to wait
        self.spoken: list[int] = []

    def is_current(self, generation: int) -> bool:
        return generation == self.current

    def synthesis_wait_s(self, generation: int) -> float:
        self.waiting.set()
        return 60.0 if generation == self.current else 0.0

    def begin_sentence(self, generation: int, index: int, text: str) -> None:
        self.spoken.append(index)

    def emit_audio(self, generation: int, index: int, pcm: bytes) -> bool:
        return True

    def sentence_done(self, generation: int, index: int) -> None: ...

    def report_error(self, stage: str, error: BaseException, generation: int = 0) -> None: ...


class Tts:
    sample_rate = 16000

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.new_reply = threading.Event()

    def synthesize(self, session_id: str, text: str, voice: VoiceSettings, *, first_in_reply: bool = False
                   ) -> Iterator[bytes]:
        self.calls.append(text)
        if text == "New reply.":
            self.new_reply.set()
        return iter([b"\0\0" * 160])

    def abort(self, session_id: str) -> None: ...


def test_a_paced_sentence_of_a_cancelled_reply_is_never_synthesized() -> None:
    host, tts = Host(), Tts()
    inbox: BoundedLRUQueue[SentenceJob] = BoundedLRUQueue(8, "sentence")
    worker = TtsWorker(host, inbox, tts, CallGuard("tts", "s", tts, label="tts", timeout_s=WAIT, abort=lambda: None))  # type: ignore[arg-type]
    worker.start()
    try:
        inbox.put(SentenceJob(1, 0, "First."))
        inbox.put(SentenceJob(1, 1, "Second."))
        assert host.waiting.wait(WAIT)  # the second sentence waits for playback
        assert tts.calls == ["First."]
        host.current = 2  # the user interrupts: the pipeline cancels the reply and wakes the stage
        worker.wake()
        inbox.put(SentenceJob(2, 0, "New reply."))
        assert tts.new_reply.wait(WAIT), "the stage stayed in the cancelled reply's wait"
        assert tts.calls == ["First.", "New reply."]
    finally:
        worker.stop()
        assert worker.join(WAIT)
