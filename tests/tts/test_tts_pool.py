"""The shared TTS pool over real espeak-ng engines: isolation, priority, abort, lifecycle."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.tts.espeak_engine import EspeakEngine
from voicechat.tts.pool import TTSPool
from voicechat.tts.priority import PriorityJobQueue

LONG = " ".join(["A long sentence that keeps the worker busy for a good while, on purpose."] * 6)
SESSIONS = {
    "alice": ["Alice asks about the weather.", "Then she asks about trains.", "Finally she says goodbye."],
    "bob": ["Bob wants a recipe for soup.", "He has carrots and onions.", "He thanks the assistant."],
    "carol": ["Carol counts to five.", "One two three four five.", "Carol is done counting."],
}


class GatedEngine:
    """An espeak engine that records the order of jobs and holds the job named ``hold`` until released."""

    def __init__(self, order: list[str], started: threading.Event, gate: threading.Event) -> None:
        self.inner = EspeakEngine()
        self.sample_rate = self.inner.sample_rate
        self.order, self.started, self.gate = order, started, gate

    def stream(self, text: str, voice: VoiceSettings | None = None, cancel=None) -> Iterator[bytes]:
        self.order.append(text)
        if text == "hold":
            self.started.set()
            assert self.gate.wait(10)
        return self.inner.stream(text, voice, cancel)

    def stop(self) -> None:
        self.inner.stop()

    def shutdown(self) -> None:
        self.inner.shutdown()


@pytest.fixture
def gated() -> Iterator[tuple[TTSPool, list[str], threading.Event, threading.Event]]:
    order: list[str] = []
    started, gate = threading.Event(), threading.Event()
    pool = TTSPool(lambda: GatedEngine(order, started, gate), workers=1)
    yield pool, order, started, gate
    gate.set()
    assert pool.close()


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tts-pool-")]


# -- the pure priority policy ------------------------------------------------------
def test_first_sentences_go_before_later_ones_fifo_within_each_class() -> None:
    q: PriorityJobQueue[str] = PriorityJobQueue()
    for item, first in [("a2", False), ("a3", False), ("b1", True), ("c2", False), ("d1", True)]:
        q.push(item, first)
    assert [q.pop() for _ in range(len(q))] == ["b1", "d1", "a2", "a3", "c2"]
    assert q.pop() is None


def test_removing_jobs_keeps_the_order_of_the_rest() -> None:
    q: PriorityJobQueue[str] = PriorityJobQueue()
    for item, first in [("a2", False), ("b2", False), ("a1", True), ("b1", True), ("b3", False)]:
        q.push(item, first)
    assert q.remove_if(lambda s: s.startswith("a")) == ["a1", "a2"]
    assert q.drain() == ["b1", "b2", "b3"] and len(q) == 0


# -- the pool ------------------------------------------------------------------------
def solo(texts: list[str], voice: VoiceSettings | None = None) -> bytes:
    engine = EspeakEngine()
    return b"".join(b"".join(engine.stream(t, voice or VoiceSettings())) for t in texts)


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_sessions_never_mix_audio(workers: int) -> None:
    reference = {sid: solo(texts) for sid, texts in SESSIONS.items()}
    assert reference == {sid: solo(texts) for sid, texts in SESSIONS.items()}  # espeak-ng is deterministic
    assert len(set(reference.values())) == len(SESSIONS)
    pool = TTSPool(EspeakEngine, workers=workers)
    got: dict[str, bytes] = {}
    go = threading.Barrier(len(SESSIONS))

    def session(sid: str) -> None:  # like a session's TTS stage: one sentence after another
        go.wait(10)
        got[sid] = b"".join(
            b"".join(pool.synthesize(sid, text, VoiceSettings(), first_in_reply=i == 0))
            for i, text in enumerate(SESSIONS[sid])
        )

    threads = [threading.Thread(target=session, args=(sid,)) for sid in SESSIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == reference
    stats = pool.stats()
    assert stats.done == 9 and stats.failed == stats.cancelled == 0 and stats.first_chunk_p50_s is not None
    assert pool.close()


def test_first_sentence_of_a_reply_runs_before_later_sentences_of_another(gated) -> None:
    pool, order, started, gate = gated
    hold = pool.synthesize("x", "hold", VoiceSettings(), first_in_reply=True)
    assert started.wait(10)  # the only worker is busy now
    a2 = pool.synthesize("a", "Reply A, sentence two.", VoiceSettings())
    a3 = pool.synthesize("a", "Reply A, sentence three.", VoiceSettings())
    b1 = pool.synthesize("b", "Reply B, sentence one.", VoiceSettings(), first_in_reply=True)
    assert pool.stats().queued == 3 and pool.stats().busy == 1
    gate.set()
    for stream in (hold, a2, a3, b1):
        list(stream)
    assert order == ["hold", "Reply B, sentence one.", "Reply A, sentence two.", "Reply A, sentence three."]


def test_abort_stops_the_running_job_within_one_chunk() -> None:
    pool = TTSPool(EspeakEngine, workers=1)
    first, aborted = threading.Event(), threading.Event()
    after: list[bytes] = []

    def consume() -> None:
        for i, chunk in enumerate(pool.synthesize("s1", LONG, VoiceSettings(), first_in_reply=True)):
            if i == 0:
                first.set()
                aborted.wait(10)
            else:
                after.append(chunk)

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(10)
    pool.abort("s1")
    aborted.set()
    t.join(10)
    assert not t.is_alive() and len(after) <= 1
    # The only worker is free again: another session's job runs and completes.
    assert b"".join(pool.synthesize("s2", "Next one.", VoiceSettings())) == solo(["Next one."])
    assert pool.stats().cancelled == 1
    assert pool.close()


def test_abort_drops_the_sessions_queued_jobs_only(gated) -> None:
    pool, order, started, gate = gated
    hold = pool.synthesize("a", "hold", VoiceSettings(), first_in_reply=True)
    assert started.wait(10)
    a2 = pool.synthesize("a", "A two.", VoiceSettings())
    b1 = pool.synthesize("b", "B one.", VoiceSettings(), first_in_reply=True)
    pool.abort("a")
    assert list(a2) == []  # ends at once: it was taken out of the queue
    assert pool.stats().queued == 1
    gate.set()
    assert list(hold) == []  # it was running (held) when aborted: no audio after the abort
    assert b"".join(b1) == solo(["B one."])
    assert order == ["hold", "B one."]


def test_closing_or_dropping_an_iterator_cancels_its_job(gated) -> None:
    pool, order, started, gate = gated
    hold = pool.synthesize("x", "hold", VoiceSettings(), first_in_reply=True)  # kept: dropping it would cancel it
    assert started.wait(10)
    closed = pool.synthesize("y", "Closed before it ran.", VoiceSettings())
    pool.synthesize("z", "Dropped before it ran.", VoiceSettings())  # never iterated: garbage at once
    kept = pool.synthesize("w", "Kept.", VoiceSettings())
    closed.close()  # type: ignore[attr-defined]
    assert pool.stats().queued == 2  # the closed job left the queue; the dropped one is skipped when due
    gate.set()
    assert b"".join(kept) == solo(["Kept."])
    assert order == ["hold", "Kept."]
    assert b"".join(hold) == solo(["hold"])
    assert pool.stats().cancelled == 2


def test_voice_and_speed_are_per_session() -> None:
    pool = TTSPool(EspeakEngine, workers=2)
    voices = {"us": VoiceSettings("en-us", 1.0), "gb": VoiceSettings("en-gb+f3", 1.6)}
    got = {sid: b"".join(pool.synthesize(sid, "Same words, different voices.", v)) for sid, v in voices.items()}
    assert got == {sid: solo(["Same words, different voices."], v) for sid, v in voices.items()}
    assert len(got["gb"]) < 0.8 * len(got["us"])  # faster speech is shorter
    assert pool.close()


def test_engine_errors_reach_the_caller_and_the_pool_goes_on() -> None:
    pool = TTSPool(EspeakEngine, workers=1)
    with pytest.raises(EngineError, match="no voice"):
        list(pool.synthesize("s", "Hello.", VoiceSettings("xx-nonexistent")))
    with pytest.raises(EngineError, match="espeak-ng --voices"):
        list(pool.synthesize("s", "Hello.", VoiceSettings("../bad")))
    assert b"".join(pool.synthesize("s", "Hello.", VoiceSettings())) == solo(["Hello."])
    assert pool.stats().failed == 2 and pool.stats().done == 1
    assert pool.close()


def test_close_joins_every_worker_and_refuses_new_jobs(gated) -> None:
    pool, order, started, gate = gated
    before = len(pool_threads())
    assert before >= 1
    running = pool.synthesize("a", "hold", VoiceSettings(), first_in_reply=True)
    assert started.wait(10)
    queued = pool.synthesize("b", "Never runs.", VoiceSettings())
    gate.set()
    assert pool.close()
    assert pool_threads() == []
    assert list(queued) == [] and order[-1] != "Never runs."
    list(running)  # ends: cancelled or finished
    with pytest.raises(EngineError, match="closed"):
        pool.synthesize("a", "Too late.", VoiceSettings())


def test_a_failing_factory_fails_the_pool_and_shuts_down_what_it_made() -> None:
    made: list[EspeakEngine] = []

    def factory() -> EspeakEngine:
        if made:
            raise EngineError("second engine cannot load")
        made.append(EspeakEngine())
        return made[0]

    with pytest.raises(EngineError, match="second engine"):
        TTSPool(factory, workers=2)
    assert pool_threads() == []


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sessions_speak_through_the_pool(make_manager) -> None:
    """Two sessions' replies go through one pool into their pipelines at the session rate."""
    from support.engines import scripted_engines
    from support.helpers import EventCollector, back_to_listening

    from voicechat.core.events import AssistantTextDelta, AudioChunk

    pool = TTSPool(EspeakEngine, workers=2)
    try:
        manager = make_manager(scripted_engines(tts=pool), output_sample_rate=24000)
        sessions = [manager.create("test") for _ in range(2)]
        collectors = [EventCollector(s.pipeline) for s in sessions]
        for i, s in enumerate(sessions):
            s.pipeline.send_text(f"hello from session number {i}")
        for collector in collectors:
            events = collector.wait_for(back_to_listening, timeout=60)
            audio = [e for e in events if isinstance(e, AudioChunk)]
            words = len("".join(e.text for e in events if isinstance(e, AssistantTextDelta)).split())
            assert audio and all(a.sample_rate == 24000 for a in audio)
            secs = sum(a.samples for a in audio) / 24000
            assert 0.15 < secs / words < 0.8  # real speech for the reply's words
        assert pool.stats().failed == 0 and pool.stats().done >= 2
    finally:
        assert pool.close()


def test_a_first_piece_is_marked_as_awaited_audio_until_its_first_chunk() -> None:
    from voicechat.engines.first_audio import FirstAudio

    order: list[str] = []
    started, gate = threading.Event(), threading.Event()
    first_audio = FirstAudio(max_age_s=60.0)
    idle = threading.Event()
    first_audio.on_idle(idle.set)
    pool = TTSPool(lambda: GatedEngine(order, started, gate), workers=1, first_audio=first_audio)
    try:
        stream = pool.synthesize("a", "hold", VoiceSettings(), first_in_reply=True)
        assert started.wait(10) and first_audio.busy()  # synthesizing a reply's first piece: a listener waits
        gate.set()
        next(stream)  # its first chunk is out
        assert idle.wait(10) and not first_audio.busy()
        list(stream)
        idle.clear()
        later = list(pool.synthesize("a", "A later sentence.", VoiceSettings()))
        assert later and not idle.is_set()  # a later sentence is nobody's first audio: never marked
    finally:
        gate.set()
        assert pool.close()
