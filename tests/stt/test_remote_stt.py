"""The remote STT engines' pure parts and their batch/abort contract, without sockets.

WAV and PCM encoding, the OpenAI request fields and response parsing, the Wyoming event sequence and
reading its answer, endpoint parsing and config errors, a batch as bounded concurrent requests, abort
through the scheduler's cancel, and the health hook.
"""

from __future__ import annotations

import io
import socket
import threading
import wave

import numpy as np
import pytest
from wyoming.asr import Transcript
from wyoming.error import Error
from wyoming.event import Event

from voicechat.config.loading import load_config
from voicechat.config.sources import ConfigError
from voicechat.engines.circuit_breaker import CircuitOpenError
from voicechat.engines.endpoints import Endpoint, api_url, parse_endpoint, remote_status_of
from voicechat.engines.protocols import AbortableTranscriber, EngineError, SpeechInput
from voicechat.engines.remote import Abortable
from voicechat.stt.openai_stt import form_fields, transcript_text
from voicechat.stt.remote import RemoteTranscriber, pcm16_bytes, wav_bytes
from voicechat.stt.scheduler import SttScheduler
from voicechat.stt.wyoming_stt import read_transcript, request_events

WAIT = 5.0


def test_wav_bytes_hold_the_audio_as_16_bit_mono_16_khz() -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], np.float32)  # 2.0 clips
    with wave.open(io.BytesIO(wav_bytes(audio))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 6)
        samples = np.frombuffer(w.readframes(6), "<i2")
    assert samples.tolist() == [0, 16383, -16383, 32767, -32767, 32767]
    assert pcm16_bytes(audio) == samples.tobytes()


def test_openai_form_fields_only_name_what_is_set() -> None:
    assert form_fields("", None) == {"response_format": "json", "temperature": "0"}
    assert form_fields("whisper-1", "en") == {"response_format": "json", "temperature": "0", "model": "whisper-1",
                                              "language": "en"}


def test_openai_transcript_text_and_its_errors() -> None:
    assert transcript_text(200, b'{"text": " Hello there. "}') == "Hello there."
    assert transcript_text(200, b"plain words\n") == "plain words"
    with pytest.raises(EngineError, match=r"HTTP 401: bad key \(check stt.api_key\)"):
        transcript_text(401, b'{"error": {"message": "bad key"}}', "http://h/v1/audio/transcriptions")
    with pytest.raises(EngineError, match="HTTP 400: unknown model"):
        transcript_text(400, b'{"detail": {"error": {"message": "unknown model"}}}')
    with pytest.raises(EngineError, match="sent no transcript"):
        transcript_text(200, b'{"segments": []}')


def test_wyoming_request_is_transcribe_then_the_audio_in_chunks() -> None:
    pcm = bytes(range(200)) * 100  # 20000 bytes = 10000 samples
    events = request_events(pcm, model="tiny", language="en", chunk_samples=4000)
    assert [e.type for e in events] == ["transcribe", "audio-start", "audio-chunk", "audio-chunk", "audio-chunk",
                                        "audio-stop"]
    assert events[0].data == {"name": "tiny", "language": "en"}
    assert events[1].data["rate"] == 16000 and events[1].data["width"] == 2 and events[1].data["channels"] == 1
    assert b"".join(e.payload or b"" for e in events[2:5]) == pcm
    assert request_events(b"")[0].data == {}  # the server's own model and language


def test_wyoming_answer_is_the_transcript_event() -> None:
    answers = iter([Event("transcript-start"), Event("transcript-chunk", {"text": "How"}),
                    Transcript(text=" How are you? ").event()])
    assert read_transcript(lambda: next(answers)) == "How are you?"
    with pytest.raises(EngineError, match="reported an error: no model"):
        read_transcript(lambda: Error(text="no model").event())
    with pytest.raises(EngineError, match="closed the connection"):
        read_transcript(lambda: None)


def test_endpoints_parse_or_name_the_key_and_what_is_allowed() -> None:
    assert parse_endpoint("tcp://127.0.0.1:10300", key="k", schemes=("tcp",)) == Endpoint("tcp", "127.0.0.1", 10300)
    assert parse_endpoint("http://h/v1/", key="k", schemes=("http", "https")) == Endpoint("http", "h", 80, "/v1")
    assert str(parse_endpoint("tcp://[::1]:5", key="k", schemes=("tcp",))) == "tcp://[::1]:5"
    for bad, why in (("tcp://h", "port is missing"), ("http://h:1", "tcp URL"), ("tcp://h:99999", "tcp URL"),
                     ("tcp://h:1/x", "no path"), ("", "tcp URL")):
        with pytest.raises(ValueError, match=why):
            parse_endpoint(bad, key="stt.endpoint", schemes=("tcp",))
    assert api_url("http://h:8000", "audio/transcriptions", key="k") == "http://h:8000/v1/audio/transcriptions"
    assert api_url("http://h:8000/v1/", "audio/transcriptions", key="k") == "http://h:8000/v1/audio/transcriptions"


@pytest.mark.parametrize(("engine", "endpoint"), [("wyoming", ""), ("wyoming", "http://h:1"), ("openai", "tcp://h:1")])
def test_a_remote_engine_with_a_wrong_endpoint_is_a_config_error(engine: str, endpoint: str) -> None:
    with pytest.raises(ConfigError, match=rf"stt.endpoint .*stt.engine = '{engine}'\) must be"):
        load_config(overrides={"stt.engine": engine, "stt.endpoint": endpoint}, env={})


def test_remote_engines_load_from_config_and_the_default_stays_in_process() -> None:
    assert load_config(overrides={}, env={}).settings.stt.engine == "faster_whisper"
    stt = load_config(overrides={"stt.engine": "wyoming", "stt.endpoint": " tcp://h:10300 "}, env={},
                      ).settings.stt
    assert stt.endpoint == "tcp://h:10300"


# -- the batch and abort contract, over a fake server --------------------------------------------
class FakeRemote(RemoteTranscriber):
    """A server on socket pairs: each request waits for its answer in ``recv`` until ``release`` (or its abort
    shuts the socket down, as a real engine's would be); texts say which input they were."""

    def __init__(self, concurrency: int = 2) -> None:
        super().__init__("fake://server", concurrency=concurrency)
        self.started = threading.Semaphore(0)
        self.running = 0
        self.most = 0
        self._released = False
        self._servers: list[socket.socket] = []
        self._state = threading.Lock()

    def release(self) -> None:
        with self._state:
            self._released = True
            for server in self._servers:
                try:
                    server.sendall(b"x")
                except OSError:
                    pass  # an aborted request's socket, shut down and not yet forgotten by its thread

    def transcribe_one(self, item: SpeechInput, call: Abortable) -> str:
        mine, server = socket.socketpair()
        with mine, server:
            if not call.attach(mine):
                return ""
            with self._state:
                self._servers.append(server)
                if self._released:
                    server.sendall(b"x")
                self.running += 1
                self.most = max(self.most, self.running)
            self.started.release()
            answered = mine.recv(1)  # b"" once aborted
            with self._state:
                self.running -= 1
                self._servers.remove(server)
        if answered and item.session_id == "bad":
            raise OSError("connection reset")
        return f" {item.session_id} "

    def remote_status(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "reachable": True, "error": None}


def speech(session: str, final: bool = True) -> SpeechInput:
    return SpeechInput(session, np.ones(1600, np.float32) * 0.1, final)


def test_a_batch_becomes_concurrent_requests_bounded_by_the_concurrency() -> None:
    engine = FakeRemote(concurrency=2)
    assert isinstance(engine, AbortableTranscriber)
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.extend(engine.transcribe_batch([speech(s) for s in "abc"])))
    worker.start()
    assert engine.started.acquire(timeout=WAIT) and engine.started.acquire(timeout=WAIT)
    assert not engine.started.acquire(timeout=0.2)  # the third waits for a free slot
    engine.release()
    worker.join(WAIT)
    assert result == ["a", "b", "c"] and engine.most == 2
    assert engine.transcribe_batch([SpeechInput("empty", np.zeros(0, np.float32), True)]) == [""]
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.transcribe_batch([speech("late")])


def test_a_failed_request_fails_the_batch_as_an_engine_error_naming_the_server() -> None:
    engine = FakeRemote()
    engine.release()
    with pytest.raises(EngineError, match="fake://server failed: connection reset"):
        engine.transcribe_batch([speech("ok"), speech("bad")])
    engine.close()


def test_the_schedulers_cancel_aborts_only_that_sessions_running_request() -> None:
    engine = FakeRemote()
    scheduler = SttScheduler(engine, workers=2, call_timeout_s=30.0)
    outcomes: dict[str, object] = {}

    def call(session: str) -> None:
        try:
            outcomes[session] = scheduler.transcribe(np.ones(1600, np.float32) * 0.1, session_id=session, final=True)
        except EngineError as exc:
            outcomes[session] = exc

    threads = [threading.Thread(target=call, args=(s,)) for s in ("stay", "go")]
    try:
        for thread in threads:
            thread.start()
        assert engine.started.acquire(timeout=WAIT) and engine.started.acquire(timeout=WAIT)  # both running
        scheduler.cancel("go")
        threads[1].join(WAIT)
        assert "cancelled" in str(outcomes["go"]), repr(outcomes["go"])
        assert "stay" not in outcomes  # the other session's request goes on
        engine.release()
        threads[0].join(WAIT)
        assert outcomes["stay"] == "stay" and engine.aborted == 1
        assert scheduler.breaker.stats().failures_in_window == 0  # an abort is no failure of the server
    finally:
        engine.release()
        scheduler.close()


def test_health_finds_the_remote_engine_behind_its_scheduler() -> None:
    engine = FakeRemote()
    scheduler = SttScheduler(engine)
    try:
        assert remote_status_of(scheduler) == {"endpoint": "fake://server", "reachable": True, "error": None}
        assert remote_status_of(object()) is None
    finally:
        scheduler.close()


def test_abort_before_attach_refuses_the_socket_and_shuts_down_one_attached() -> None:
    call = Abortable()
    left, right = socket.socketpair()
    with left, right:
        assert call.attach(left)
        call.abort()
        assert left.recv(1) == b""  # shut down: a blocked reader would wake with end of stream
        assert not call.attach(right)


@pytest.mark.parametrize(("engine", "scheme"), [("wyoming", "tcp"), ("openai", "http")])
def test_a_server_not_up_at_start_is_a_warning_then_the_stages_error(
        engine: str, scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    from voicechat.assembly import _build_stt

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = load_config(env={}, overrides={"stt.engine": engine, "stt.endpoint": f"{scheme}://127.0.0.1:{port}",
                                              "stt.breaker_failures": "1"}).settings
    scheduler = _build_stt(settings)
    try:
        assert "does not answer yet" in caplog.text
        status = remote_status_of(scheduler)
        assert status is not None and status["reachable"] is False and str(port) in str(status["endpoint"])
        with pytest.raises(EngineError, match="cannot connect"):
            scheduler.transcribe(np.ones(1600, np.float32) * 0.1, session_id="s", final=True)
        with pytest.raises(CircuitOpenError, match="not available right now"):  # stt_unavailable, at once
            scheduler.transcribe(np.ones(1600, np.float32) * 0.1, session_id="s", final=True)
    finally:
        scheduler.close()
