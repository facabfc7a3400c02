"""Engine faults end a turn, not a session: per-engine circuit breakers, call timeouts, stuck threads.

Sessions run over scripted engines. Voice turns use the scripted energy
endpointer (fed faster than real time) except where RealtimeSTT's own handling
of a failed transcription is the point.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from support.engines import scripted_engines
from support.helpers import SENTENCES, EventCollector, Feeder, back_to_listening, count, speech, utterance
from support.server import http_get, http_json, running_server

from voicechat.audio import AudioFrame
from voicechat.core.events import (
    AudioChunk,
    ErrorEvent,
    Event,
    FinalTranscript,
    ReplyDone,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker
from voicechat.engines.protocols import Engines, RecognizerCallbacks, VoiceSettings
from voicechat.engines.scripted.base import FaultPlan
from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.engines.scripted.stt import EnergyRecognizer, ScriptedTranscriber
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.engines.stuck_calls import STUCK_CALLS, StuckCalls
from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer
from voicechat.stt.scheduler import SttScheduler
from voicechat.tts.pool import TTSPool

WAIT = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def errors(events: list[Event]) -> list[ErrorEvent]:
    return [e for e in events if isinstance(e, ErrorEvent)]


def replies(events: list[Event]) -> list[ReplyDone]:
    return [e for e in events if isinstance(e, ReplyDone)]


def turn(collector: EventCollector, send, n: int) -> list[Event]:
    """Start turn ``n`` (1-based) and wait until it is over and the session listens again."""
    send()
    return collector.wait_for(lambda ev: count(ReplyDone, n)(ev) and back_to_listening(ev), timeout=WAIT)


def energy_engines(transcriber: ScriptedTranscriber, stt: SttScheduler | None = None, **engines) -> Engines:
    """Scripted engines behind the scripted energy endpointer (no VAD models: cheap, deterministic)."""
    scheduler = stt or SttScheduler(transcriber)

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> EnergyRecognizer:
        return EnergyRecognizer(session_id, scheduler, callbacks)

    return Engines(scheduler, recognizer, engines.get("llm") or ScriptedLLM(), engines.get("tts") or ScriptedTTS())


def say(pipeline, text: str) -> None:
    """An utterance in 100 ms frames, as fast as the capture stage takes them."""
    audio = utterance(text, after_s=0.8)
    for i in range(0, len(audio), 1600):
        pipeline.feed_audio(AudioFrame(audio[i : i + 1600].tobytes(), 16000))


# -- circuit breaker through sessions ---------------------------------------------------
@pytest.mark.timeout(60)
def test_llm_breaker_opens_fails_fast_for_every_session_and_closes_after_a_probe(make_manager):
    clock = FakeClock()
    faults = FaultPlan(down=True)
    breaker = CircuitBreaker("language model", failure_threshold=2, window_s=60, cooldown_s=20, clock=clock)
    llm = ScriptedLLM(first_token_s=0.05, faults=faults, breaker=breaker)
    manager = make_manager(scripted_engines(llm=llm, partials=False))
    a, b = manager.create("test"), manager.create("test")
    ea, eb = EventCollector(a.pipeline), EventCollector(b.pipeline)

    for n in (1, 2):
        events = turn(ea, lambda n=n: a.pipeline.send_text(f"question {n}"), n)
        assert errors(events)[-1].code == "llm_failed"
    assert breaker.state is BreakerState.OPEN and faults.calls == 2

    started = time.monotonic()
    events = turn(eb, lambda: b.pipeline.send_text("anyone there?"), 1)  # another session: fails fast too
    assert time.monotonic() - started < 2.0
    error = errors(events)[-1]
    assert (error.code, error.stage) == ("llm_unavailable", "llm")
    assert error.message == (
        "The language model is not available right now (last error: scripted llm is down (call 2)); "
        "it will be tried again in 20 s."
    )
    assert faults.calls == 2  # the engine was not called at all
    assert replies(events)[-1].text == "" and b.pipeline.history.messages()[1:] == []

    faults.down = False  # the backend is back; after the cooldown one probe goes through
    clock.now += 20
    assert breaker.state is BreakerState.HALF_OPEN
    events = turn(eb, lambda: b.pipeline.send_text("and now?"), 2)
    assert replies(events)[-1].text == scripted_reply("and now?", 24)
    assert breaker.state is BreakerState.CLOSED
    events = turn(ea, lambda: a.pipeline.send_text("back?"), 3)
    assert replies(events)[-1].text == scripted_reply("back?", 24)


@pytest.mark.timeout(60)
def test_interrupting_a_hung_call_does_not_wait_for_its_timeout(make_manager):
    faults = FaultPlan(hang_on_call=1)
    manager = make_manager(
        scripted_engines(llm=ScriptedLLM(faults=faults), partials=False), llm_call_timeout_s=30.0, abort_grace_s=0.2
    )
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.send_text("this hangs")
    assert faults.hung.wait(WAIT)
    started = time.monotonic()
    session.pipeline.send_text("never mind, hello")  # typed input interrupts the hung reply
    events = collector.wait_for(count(ReplyDone), timeout=WAIT)
    assert time.monotonic() - started < 5.0  # not the 30 s call timeout
    assert "never mind, hello" in replies(events)[-1].text  # (the history merges the unanswered question)
    assert errors(events) == []  # an interrupted call is no failure
    assert STUCK_CALLS.wait_settled(WAIT)
    assert STUCK_CALLS.stuck_names(session.id) == [f"llm-call-{session.id[:8]}-1"]  # but it is accounted for


# -- text to speech -----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_hung_synthesis_ends_the_turn_with_its_text_and_the_next_turn_speaks(make_manager):
    tts = ScriptedTTS(faults=FaultPlan(hang_on_call=1))
    manager = make_manager(
        scripted_engines(tts=tts, partials=False), tts_call_timeout_s=0.5, abort_grace_s=0.2
    )
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    started = time.monotonic()
    events = turn(collector, lambda: session.pipeline.send_text("say something"), 1)
    assert time.monotonic() - started < 0.5 + 3.0
    error = errors(events)[-1]
    assert (error.code, error.stage) == ("tts_timeout", "tts")
    assert error.message == "The speech synthesizer did not answer within 0.5 s; this turn was ended."
    assert not any(isinstance(e, AudioChunk) for e in events)
    assert replies(events)[-1].text == scripted_reply("say something", 24)  # shown as text in full
    assert tts.texts[session.id] == [tts.texts[session.id][0]]  # no timeout per remaining sentence
    assert tts.breaker.stats().failures_total == 1

    events = turn(collector, lambda: session.pipeline.send_text("and again"), 2)
    assert any(isinstance(e, AudioChunk) and e.generation == replies(events)[-1].generation for e in events)
    assert replies(events)[-1].text == scripted_reply("and again", 24)
    assert STUCK_CALLS.wait_settled(WAIT)
    assert STUCK_CALLS.stuck_names(session.id) == [f"tts-call-{session.id[:8]}-1"]


@pytest.mark.timeout(60)
def test_a_synthesis_failing_mid_reply_keeps_what_was_spoken_and_the_text(make_manager):
    tts = ScriptedTTS(faults=FaultPlan(fail_on_call=2))
    manager = make_manager(scripted_engines(tts=tts, partials=False))
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    events = turn(collector, lambda: session.pipeline.send_text("tell me more"), 1)
    assert [(e.code, e.generation) for e in errors(events)] == [("tts_failed", replies(events)[-1].generation)]
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert chunks and {c.sentence_index for c in chunks} == {0}
    assert len(tts.texts[session.id]) == 2
    assert replies(events)[-1].text == scripted_reply("tell me more", 24)
    assert session.pipeline.history.messages()[-1].content == scripted_reply("tell me more", 24)


def test_the_tts_pool_replaces_a_worker_whose_engine_will_not_stop() -> None:
    release = threading.Event()
    entered = threading.Event()

    class StubbornEngine:
        sample_rate = 16000

        def __init__(self) -> None:
            self.shut = False

        def stream(self, text: str, voice=None, cancel=None) -> Iterator[bytes]:
            if text == "hang":
                entered.set()
                release.wait(WAIT)  # ignores stop(), like a stuck native call
            yield bytes(320)

        def stop(self) -> None:
            pass

        def shutdown(self) -> None:
            self.shut = True

    made: list[StubbornEngine] = []

    def factory() -> StubbornEngine:
        made.append(StubbornEngine())
        return made[-1]

    stuck = StuckCalls()
    pool = TTSPool(factory, workers=1, stop_grace_s=0.2, stuck=stuck)
    try:
        hung = pool.synthesize("s1", "hang", VoiceSettings())
        assert entered.wait(WAIT)
        pool.abort("s1")
        assert list(hung) == []
        # With its only worker stuck, the pool still serves the next session: a replacement took over.
        assert list(pool.synthesize("s2", "hello", VoiceSettings())) == [bytes(320)]
        assert stuck.stuck_names("s1") == ["tts-pool-0"]
        assert pool.stats().replaced == 1 and pool.stats().workers == 1 and len(made) == 2
        release.set()
        old = next((t for t in threading.enumerate() if t.name == "tts-pool-0"), None)
        if old is not None:
            old.join(WAIT)
        assert stuck.stuck_names() == [] and made[0].shut  # it came back, retired and freed its engine
        assert pool.stats().workers == 1
    finally:
        release.set()
        assert pool.close()
    assert made[1].shut


# -- speech to text -------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_hung_transcription_ends_its_turn_and_other_sessions_are_served_meanwhile(make_manager):
    faults = FaultPlan(hang_on_call=1)
    transcriber = ScriptedTranscriber({t: speech(t) for t in SENTENCES}, faults=faults)
    stt = SttScheduler(transcriber, call_timeout_s=1.5, stall_after_s=0.3)
    manager = make_manager(energy_engines(transcriber, stt))
    hung, other = manager.create("test"), manager.create("test")
    faults.session = hung.id
    eh, eo = EventCollector(hung.pipeline), EventCollector(other.pipeline)

    started = time.monotonic()
    say(hung.pipeline, SENTENCES[0])
    assert faults.hung.wait(WAIT)
    say(other.pipeline, SENTENCES[1])  # queued behind the hung batch: a spare worker takes it
    events = eo.wait_for(count(TurnMetrics), timeout=WAIT)
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == [SENTENCES[1]]
    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    assert metrics.latency_ms("speech_end", "transcript_final") < 1000  # not 1.5 s of timeout

    events = eh.wait_for(lambda ev: bool(errors(ev)) and back_to_listening_or_idle(ev), timeout=WAIT)
    assert time.monotonic() - started < 1.5 + 3.0
    error = errors(events)[0]
    assert (error.code, error.stage) == ("stt_timeout", "stt")
    assert error.message == "The speech recogniser did not answer within 1.5 s; this turn was ended."
    assert stt.breaker.stats().failures_total == 1 and stt.stats.timeouts == 1

    say(hung.pipeline, SENTENCES[2])  # the same session's next utterance is answered
    events = eh.wait_for(count(ReplyDone), timeout=WAIT)
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == [SENTENCES[2]]
    assert STUCK_CALLS.stuck_names(hung.id[:8]) == ["stt-scheduler-0"]

    faults.release()  # the hung thread returns, finds the scheduler fully staffed and retires
    deadline = time.monotonic() + WAIT
    while stt.worker_threads > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stt.worker_threads == 1 and STUCK_CALLS.stuck_names(hung.id[:8]) == []


def back_to_listening_or_idle(events: list[Event]) -> bool:
    """No reply happened (the transcript failed) and the last state is listening again."""
    states = [e.state for e in events if isinstance(e, StateChanged)]
    return bool(states) and states[-1] is TurnState.LISTENING


@pytest.mark.timeout(90)
def test_realtimestt_sessions_show_recogniser_failures_and_recover(make_manager):
    """Through RealtimeSTT's own executor path: failure, fast failure while open, recovery."""
    clock = FakeClock()
    faults = FaultPlan(down=True)
    transcriber = ScriptedTranscriber({t: speech(t) for t in SENTENCES}, faults=faults)
    breaker = CircuitBreaker("speech recogniser", failure_threshold=1, window_s=60, cooldown_s=20, clock=clock)
    stt = SttScheduler(transcriber, call_timeout_s=5.0, breaker=breaker)

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> RealtimeSTTRecognizer:
        return RealtimeSTTRecognizer(session_id, stt, callbacks, partials=False, post_speech_silence_s=0.5)

    manager = make_manager(Engines(stt, recognizer, ScriptedLLM(), ScriptedTTS()))
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    feeder = Feeder(session.pipeline)

    feeder.play(utterance(SENTENCES[0]))
    events = collector.wait_for(lambda ev: len(errors(ev)) >= 1 and back_to_listening_or_idle(ev), timeout=WAIT)
    assert errors(events)[0].stage == "stt" and "scripted stt is down" in errors(events)[0].message
    assert breaker.state is BreakerState.OPEN

    feeder.play(utterance(SENTENCES[1]))
    events = collector.wait_for(lambda ev: len(errors(ev)) >= 2, timeout=WAIT)
    assert "speech recogniser is not available right now" in errors(events)[1].message
    # The error's kind survives RealtimeSTT (which passes on only a message).
    assert [e.code for e in errors(events)] == ["stt_failed", "stt_unavailable"]
    assert faults.calls == 1

    faults.down = False
    clock.now += 20
    feeder.play(utterance(SENTENCES[3]))
    events = collector.wait_for(count(ReplyDone), timeout=WAIT)
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == [SENTENCES[3]]
    assert breaker.state is BreakerState.CLOSED


# -- visible state -------------------------------------------------------------------
def test_breaker_states_are_in_health_and_metrics(make_manager, tmp_path):
    llm = ScriptedLLM(breaker=CircuitBreaker("language model", failure_threshold=1, cooldown_s=30))
    manager = make_manager(scripted_engines(llm=llm, partials=False))
    with running_server(manager, tmp_path) as server:
        engines = http_json(server, "/health/detailed")["engines"]
        assert {stage: e["circuit"] for stage, e in engines.items()} == {"stt": "closed", "llm": "closed",
                                                                         "tts": "closed"}
        llm.breaker.acquire().fail("scripted outage")
        llm_health = http_json(server, "/health/detailed")["engines"]["llm"]
        assert llm_health["circuit"] == "open"
        assert llm_health["circuit_detail"]["last_error"] == "scripted outage"
        assert 0 < llm_health["circuit_detail"]["retry_after_s"] <= 30
        status, text = http_get(server, "/metrics")
        assert status == 200
        lines = set(text.decode().splitlines())
        names = {line.split("{")[0].split(" ")[0] for line in lines if not line.startswith("#")}
        assert {"voicechat_engine_calls_stuck_now", "voicechat_engine_calls_stuck_total",
                "voicechat_engine_calls_recovered_total"} <= names
        for stage, value in (("stt", 0.0), ("llm", 2.0), ("tts", 0.0)):
            assert f'voicechat_engine_circuit_state{{stage="{stage}"}} {value}' in lines

