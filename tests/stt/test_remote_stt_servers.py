"""The remote STT engines against real servers on loopback: faster-whisper-server (stt.engine = openai)
and wyoming-faster-whisper (stt.engine = wyoming), both serving the starter Whisper tiny.en.

Each backend: a Piper-spoken question transcribed word for word; sessions through the real pipeline
(real listening front end, the shared scheduler over the remote engine, scripted LLM and TTS) get the
exact final transcript, and when the server is killed while a turn's request runs, that turn ends with
the stage's error while the other session is untouched, and turns work again once the server is back;
a cancelled session's running request stops at once. Tests wait on events, never on sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from support.engines import recognizer_factory
from support.helpers import EventCollector, Feeder, count
from support.real import same_words, spoken
from support.remote_servers import openai_stt_server, wyoming_stt_server  # noqa: F401 - fixtures

from voicechat.audio import pcm16_to_float
from voicechat.core.events import ErrorEvent, FinalTranscript
from voicechat.deploy.engine_servers import EngineServer
from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.endpoints import remote_status_of
from voicechat.engines.protocols import EngineError, Engines, SpeechInput
from voicechat.engines.remote import Abortable
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.stt.openai_stt import OpenAITranscriber
from voicechat.stt.remote import RemoteTranscriber
from voicechat.stt.scheduler import SttScheduler
from voicechat.stt.wyoming_stt import WyomingTranscriber

pytestmark = pytest.mark.slow

QUESTION = "How many legs does a spider have?"
SECOND = "What is the capital of France?"


class Watched:
    """Mixin: ``started`` is set as each request begins (tests kill the server or cancel right then),
    ``ended`` as it returns or raises; ``last`` is its abort handle."""

    started: threading.Event
    ended: threading.Event
    last: Abortable | None = None

    def transcribe_one(self, item: SpeechInput, call: Abortable) -> str:
        self.last = call
        self.ended.clear()
        self.started.set()
        try:
            return super().transcribe_one(item, call)  # type: ignore[misc]
        finally:
            self.ended.set()


class WatchedOpenAI(Watched, OpenAITranscriber):
    pass


class WatchedWyoming(Watched, WyomingTranscriber):
    pass


@pytest.fixture(params=["openai", "wyoming"])
def server(request: pytest.FixtureRequest) -> EngineServer:
    return request.getfixturevalue(f"{request.param}_stt_server")


def engine_for(server: EngineServer) -> RemoteTranscriber:
    kind = WatchedOpenAI if server.kind == "openai" else WatchedWyoming
    engine = kind(server.endpoint, connect_timeout_s=2.0, read_timeout_s=30.0)
    engine.started, engine.ended = threading.Event(), threading.Event()
    return engine


@pytest.fixture
def engine(server: EngineServer) -> Iterator[RemoteTranscriber]:
    made = engine_for(server)
    yield made
    made.close()


def audio_of(text: str) -> np.ndarray:
    return pcm16_to_float(spoken(text))


@pytest.mark.timeout(120)
def test_a_spoken_question_is_transcribed_word_for_word(server: EngineServer, engine: RemoteTranscriber) -> None:
    texts = engine.transcribe_batch([SpeechInput("s1", audio_of(QUESTION), True, "en"),
                                     SpeechInput("s2", audio_of(SECOND), True, "en")])
    assert same_words(texts[0], QUESTION) and same_words(texts[1], SECOND), texts
    status = remote_status_of(engine)
    assert status is not None and status["reachable"] is True and status["endpoint"] == engine.endpoint


@pytest.mark.timeout(60)
def test_a_cancelled_sessions_running_request_stops_at_once(server: EngineServer, engine: RemoteTranscriber) -> None:
    scheduler = SttScheduler(engine, call_timeout_s=30.0)
    long_speech = np.concatenate([audio_of(QUESTION)] * 8)  # ~25 s: the server works on it for seconds
    outcome: dict[str, object] = {}
    done = threading.Event()

    def call() -> None:
        try:
            outcome["text"] = scheduler.transcribe(long_speech, session_id="gone", final=True, language="en")
        except EngineError as exc:
            outcome["error"] = exc
        done.set()

    try:
        threading.Thread(target=call, name="test-caller", daemon=True).start()
        assert engine.started.wait(20)
        cancelled_at = time.monotonic()
        scheduler.cancel("gone")
        assert done.wait(5) and engine.ended.wait(5)  # the caller let go, and the request itself ended
        assert time.monotonic() - cancelled_at < 1.0  # long before the server would have answered
        assert "cancelled" in str(outcome.get("error")), outcome
        assert engine.last is not None and engine.last.aborted.is_set()
        assert scheduler.queued == 0
        # its broken connection is not reused: the engine serves the next request
        assert same_words(engine.transcribe_batch([SpeechInput("next", audio_of(SECOND), True, "en")])[0], SECOND)
    finally:
        scheduler.close()


def remote_engines(engine: RemoteTranscriber) -> Engines:
    breaker = CircuitBreaker("speech recogniser", failure_threshold=5, window_s=60.0, cooldown_s=0.5)
    stt = SttScheduler(engine, call_timeout_s=20.0, breaker=breaker)
    factory = recognizer_factory(stt, "batched", partials=False)
    return Engines(stt, factory, ScriptedLLM(), ScriptedTTS(sample_rate=16000))


def say(session, text: str) -> None:
    Feeder(session.pipeline).play(spoken(text, before_s=0.3, after_s=1.0))


def finals(collector: EventCollector) -> list[str]:
    return [e.text for e in collector.events if isinstance(e, FinalTranscript)]


def stt_errors(collector: EventCollector) -> list[ErrorEvent]:
    return [e for e in collector.events if isinstance(e, ErrorEvent) and e.stage == "stt"]


@pytest.mark.timeout(240)
def test_sessions_hear_exactly_and_survive_the_server_dying_mid_call(
    server: EngineServer, make_manager: Callable[..., object]
) -> None:
    engine = engine_for(server)  # closed with the manager's engines
    manager = make_manager(remote_engines(engine))
    a, b = manager.create("a"), manager.create("b")
    heard_a, heard_b = EventCollector(a.pipeline), EventCollector(b.pipeline)

    say(a, QUESTION)  # the session's exact final transcript, through the remote server
    heard_a.wait_for(count(FinalTranscript), timeout=30)
    assert same_words(finals(heard_a)[0], QUESTION), finals(heard_a)

    engine.started.clear()
    killer = threading.Thread(target=lambda: engine.started.wait(30) and server.kill(), name="test-killer")
    killer.start()
    say(a, SECOND)  # its request runs when the killer strikes
    killer.join(30)
    heard_a.wait_for(lambda events: any(isinstance(e, ErrorEvent) and e.stage == "stt" for e in events), timeout=30)
    error = stt_errors(heard_a)[0]
    print(f"{server.kind}: the turn whose server died ended with {error.code}: {error.message}")
    assert error.code in ("stt_failed", "stt_timeout", "stt_unavailable"), error
    assert not any(same_words(text, SECOND) for text in finals(heard_a))  # that turn heard nothing

    server.start()
    say(a, SECOND)
    say(b, QUESTION)
    heard_b.wait_for(count(FinalTranscript), timeout=30)
    heard_a.wait_for(lambda events: any(isinstance(e, FinalTranscript) and same_words(e.text, SECOND)
                                        for e in events), timeout=30)
    assert same_words(finals(heard_b)[0], QUESTION), finals(heard_b)
    assert not stt_errors(heard_b)  # the other session never saw the outage
