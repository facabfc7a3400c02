"""OpenAIChatEngine against a real ``python -m llama_cpp.server`` (tiny GGUF) and a scripted peer.

The real server proves the wire format, streaming, concurrency, abort, backoff
and the circuit breaker end to end; the scripted peer makes the failure shapes a
real server will not produce on demand (a stall mid-stream, a 503, a cut-off
stream) exact.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from voicechat.core.history import ChatMessage
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from voicechat.engines.protocols import EngineError, GenerationParams, LanguageModel
from voicechat.llm.openai_engine import (
    OpenAIChatEngine,
    RetryPolicy,
    SseDecoder,
    chat_url,
    delta_text,
    request_body,
)
from voicechat.models.tiny import tiny_gguf_path

API_KEY = "test-key"
GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_tokens=24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(text: str) -> list[ChatMessage]:
    return [ChatMessage("system", "You are terse."), ChatMessage("user", text)]


class LlamaServer:
    """``python -m llama_cpp.server`` on loopback; ``stop()`` kills and reaps it."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf_path()),
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "1",
            "--interrupt_requests", "False", "--api_key", API_KEY,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Poll /v1/models until it answers; the short waits end early if the process dies."""
        assert self.proc is not None
        deadline = time.monotonic() + deadline_s
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while time.monotonic() < deadline:
            try:
                if httpx2.get(self.base + "/v1/models", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            try:
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            break
        pytest.fail(f"llama_cpp.server on {self.port} not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    srv = LlamaServer(free_port(), tmp_path_factory.mktemp("llama") / "server.log")
    srv.start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def late_server(tmp_path: Path) -> Iterator[LlamaServer]:
    """A server on a free port that is started only when the test says so."""
    srv = LlamaServer(free_port(), tmp_path / "late.log")
    yield srv
    srv.stop()


@pytest.fixture
def make_engine() -> Iterator[Callable[..., OpenAIChatEngine]]:
    engines: list[OpenAIChatEngine] = []

    def make(base: str, **kw) -> OpenAIChatEngine:
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("rng", random.Random(7))
        engine = OpenAIChatEngine(base, model="tiny", **kw)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def run_stream(engine: OpenAIChatEngine, sid: str, text: str, params: GenerationParams = GREEDY) -> list[str]:
    return list(engine.stream(sid, prompt(text), params))


# -- pure parts -----------------------------------------------------------------------
def test_chat_url_forms() -> None:
    assert chat_url("http://h:8080") == "http://h:8080/v1/chat/completions"
    assert chat_url("http://h:8080/v1/") == "http://h:8080/v1/chat/completions"
    assert chat_url("https://h/api/v1/chat/completions") == "https://h/api/v1/chat/completions"
    with pytest.raises(ValueError, match="llm.endpoint must be an http"):
        chat_url("h:8080")


def test_sse_decoder_events_comments_and_multiline_data() -> None:
    d = SseDecoder()
    lines = [": ping", "event: x", "data: {\"a\":", "data: 1}", "", "data:[DONE]", ""]
    assert [e for e in map(d.feed, lines) if e is not None] == ['{"a":\n1}', "[DONE]"]
    assert d.feed("data: tail") is None and d.flush() == "tail" and d.flush() is None


def test_delta_text_shapes() -> None:
    assert delta_text('{"choices":[{"delta":{"content":"hi"}}]}') == "hi"
    assert delta_text('{"choices":[{"delta":{"role":"assistant"}}]}') == ""
    assert delta_text('{"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}') == ""
    assert delta_text('{"choices":[]}') == ""
    with pytest.raises(EngineError, match="reported an error: overloaded"):
        delta_text('{"error":{"message":"overloaded"}}')
    with pytest.raises(EngineError, match="malformed"):
        delta_text("{nope")


def test_retry_policy_is_exponential_capped_and_jittered() -> None:
    p = RetryPolicy(retries=5, backoff_s=0.5, max_backoff_s=3.0, jitter=0.2)
    assert [p.delay(n, 0.5) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.delay(2, 0.0) == pytest.approx(0.8) and p.delay(2, 0.999999) == pytest.approx(1.2)


def test_request_body_fields() -> None:
    params = GenerationParams(temperature=0.2, top_p=0.9, max_tokens=5, stop=("\n",))
    body = request_body("m", prompt("x"), params)
    assert body["model"] == "m" and body["stream"] is True and body["stop"] == ["\n"]
    assert body["messages"][1] == {"role": "user", "content": "x"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 5)
    assert "seed" not in body


# -- against the real llama_cpp server ---------------------------------------------------
def test_streams_pieces_from_llama_cpp_server(server: LlamaServer, make_engine) -> None:
    engine = make_engine(server.base)
    assert isinstance(engine, LanguageModel)
    pieces = run_stream(engine, "s1", "Tell me about the sea.")
    assert len(pieces) >= 2 and all(isinstance(p, str) and p for p in pieces)
    assert len(pieces) <= GREEDY.max_tokens
    assert run_stream(engine, "s1", "Tell me about the sea.") == pieces  # greedy: same reply
    s = engine.stats()
    assert (s.requests, s.attempts, s.retries, s.active) == (2, 2, 0, 0)
    assert s.breaker.state is BreakerState.CLOSED and s.breaker.successes_total == 2


def test_wrong_api_key_is_a_clear_error_without_retry(server: LlamaServer, make_engine) -> None:
    engine = make_engine(server.base, api_key="wrong", retry=RetryPolicy(retries=3, backoff_s=0.01))
    with pytest.raises(EngineError, match=r"401.*llm\.api_key"):
        run_stream(engine, "s1", "hello")
    s = engine.stats()
    assert (s.attempts, s.retries, s.failed) == (1, 0, 1)
    assert s.breaker.failures_in_window == 0  # the server answered: not an outage


def test_two_sessions_stream_concurrently(server: LlamaServer, make_engine) -> None:
    engine = make_engine(server.base)
    texts = {"a": "Count the stars tonight.", "b": "Describe a green forest."}
    solo = {sid: run_stream(engine, sid, t) for sid, t in texts.items()}
    assert solo["a"] != solo["b"]
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def consume(sid: str) -> None:
        try:
            go.wait(timeout=10)
            results[sid] = run_stream(engine, sid, texts[sid])
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(sid,)) for sid in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert results == solo  # each session got its own continuation


def test_abort_mid_stream_ends_the_iterator_promptly(server: LlamaServer, make_engine) -> None:
    engine = make_engine(server.base)
    long = GenerationParams(temperature=0.0, top_p=1.0, max_tokens=1500)
    stream = engine.stream("s1", prompt("Write a very long story."), long)
    pieces = [next(stream)]
    aborter = threading.Thread(target=engine.abort, args=("s1",))  # as the pipeline does on barge-in
    t0 = time.monotonic()
    aborter.start()
    aborter.join(timeout=5)
    pieces.extend(stream)  # must end, not run on to 1500 tokens
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0 and len(pieces) < long.max_tokens // 2
    s = engine.stats()
    assert (s.aborted, s.failed, s.active) == (1, 0, 0)
    assert run_stream(engine, "s1", "hello")  # the session's next turn works


def test_backoff_retries_until_the_server_comes_up(late_server: LlamaServer, make_engine) -> None:
    def on_attempt(sid: str, attempt: int) -> None:
        if attempt == 2:  # the first attempt was refused: bring the server up now
            late_server.start()

    engine = make_engine(
        late_server.base, on_attempt=on_attempt, retry=RetryPolicy(retries=200, backoff_s=0.05, max_backoff_s=0.25)
    )
    pieces = run_stream(engine, "s1", "Are you there?")
    assert pieces
    s = engine.stats()
    assert s.attempts >= 2 and s.retries == s.attempts - 1 and s.failed == 0
    assert s.breaker.state is BreakerState.CLOSED and s.breaker.failures_total == 0  # retries are not failures


def test_abort_during_backoff_returns_at_once(make_engine) -> None:
    in_backoff = threading.Event()
    engine = make_engine(
        f"http://127.0.0.1:{free_port()}",
        on_backoff=lambda sid, retry, delay: in_backoff.set(),
        retry=RetryPolicy(retries=3, backoff_s=60.0, max_backoff_s=60.0),
    )
    done = threading.Event()
    out: list[list[str]] = []
    worker = threading.Thread(target=lambda: (out.append(run_stream(engine, "s1", "hi")), done.set()))
    worker.start()
    assert in_backoff.wait(timeout=10)
    t0 = time.monotonic()
    engine.abort("s1")
    assert done.wait(timeout=5)
    worker.join(timeout=5)
    assert time.monotonic() - t0 < 1.0 and out == [[]]
    s = engine.stats()
    assert (s.attempts, s.retries, s.aborted, s.failed) == (1, 1, 1, 0)
    assert s.breaker.failures_total == 0


def test_breaker_opens_fails_fast_and_half_opens(late_server: LlamaServer, make_engine) -> None:
    now = [0.0]
    breaker = CircuitBreaker("language model", failure_threshold=2, window_s=60, cooldown_s=10, clock=lambda: now[0])
    engine = make_engine(late_server.base, breaker=breaker, retry=RetryPolicy(retries=1, backoff_s=0.01))
    for _ in range(2):
        with pytest.raises(EngineError, match="failed after 2 attempts: cannot connect") as info:
            run_stream(engine, "s1", "hello")
        assert not isinstance(info.value, CircuitOpenError)
    assert breaker.state is BreakerState.OPEN and engine.stats().attempts == 4

    with pytest.raises(CircuitOpenError, match="not available right now.*cannot connect.*in 10 s"):
        run_stream(engine, "s2", "hello")
    assert engine.stats().attempts == 4  # failed fast: no request made

    now[0] += 10
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(EngineError):
        run_stream(engine, "s1", "hello")  # the probe: still down, so open again
    assert breaker.state is BreakerState.OPEN and engine.stats().attempts == 6

    late_server.start()
    late_server.wait_ready()
    with pytest.raises(CircuitOpenError):
        run_stream(engine, "s1", "hello")  # up, but the cooldown has not passed
    now[0] += 10
    assert run_stream(engine, "s1", "hello")  # the probe succeeds
    s = engine.stats().breaker
    assert s.state is BreakerState.CLOSED and (s.opened_total, s.rejected_total) == (2, 2)


# -- a scripted peer for exact failure shapes ----------------------------------------------
def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def sse_piece(text: str) -> bytes:
    return chunk(f'data: {{"choices":[{{"index":0,"delta":{{"content":"{text}"}}}}]}}\n\n'.encode())


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
STREAM_END = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"

Step = Callable[[socket.socket, threading.Event], None]


def full_reply(conn: socket.socket, _stop: threading.Event) -> None:
    conn.sendall(STREAM_HEAD + sse_piece("Hello") + sse_piece(" there") + STREAM_END)


def unavailable(conn: socket.socket, _stop: threading.Event) -> None:
    body = b'{"error":{"message":"loading model"}}'
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def json_body(conn: socket.socket, _stop: threading.Event) -> None:
    body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"Whole reply."}}]}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def unterminated(conn: socket.socket, _stop: threading.Event) -> None:
    """No [DONE] and no blank line after the last event; the body simply ends."""
    event = b'data: {"choices":[{"delta":{"content":"Last"}}]}'
    conn.sendall(STREAM_HEAD + sse_piece("First ") + chunk(event) + b"0\r\n\r\n")


def cut_off(conn: socket.socket, _stop: threading.Event) -> None:
    conn.sendall(STREAM_HEAD + sse_piece("Hello") + sse_piece(" there"))  # then the connection drops


def stall_after_one_piece(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(STREAM_HEAD + sse_piece("Hello"))
    stop.wait(timeout=60)  # never sends more while the test runs


class ScriptedPeer:
    """A loopback HTTP peer serving one connection at a time, each with the next scripted step."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[bytes] = []
        self.stop_event = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, name="scripted-peer", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.steps:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # listener closed by stop()
            with conn:
                self.requests.append(self._read_request(conn))
                self.steps.pop(0)(conn, self.stop_event)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.lower().partition(b":")[::2] for line in head.split(b"\r\n")[1:])
        while len(body) < int(fields.get(b"content-length", b"0")):
            body += conn.recv(65536)
        return head

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not on Linux
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def make_peer() -> Iterator[Callable[[list[Step]], ScriptedPeer]]:
    peers: list[ScriptedPeer] = []

    def make(steps: list[Step]) -> ScriptedPeer:
        peers.append(ScriptedPeer(steps))
        return peers[-1]

    yield make
    for peer in peers:
        peer.stop()


def test_503_before_first_token_is_retried_and_the_key_is_sent(make_peer, make_engine) -> None:
    peer = make_peer([unavailable, full_reply])
    engine = make_engine(peer.base, retry=RetryPolicy(retries=2, backoff_s=0.01))
    assert run_stream(engine, "s1", "hi") == ["Hello", " there"]
    s = engine.stats()
    assert (s.attempts, s.retries, s.failed) == (2, 1, 0)
    assert len(peer.requests) == 2
    assert all(f"authorization: bearer {API_KEY}".encode() in r.lower() for r in peer.requests)


def test_503_until_retries_run_out_names_the_cause(make_peer, make_engine) -> None:
    peer = make_peer([unavailable] * 2)
    engine = make_engine(peer.base, retry=RetryPolicy(retries=1, backoff_s=0.01))
    with pytest.raises(EngineError, match="failed after 2 attempts: HTTP 503: loading model"):
        run_stream(engine, "s1", "hi")
    assert engine.stats().breaker.failures_in_window == 1


def test_lenient_with_servers_that_do_not_stream_or_omit_done(make_peer, make_engine) -> None:
    peer = make_peer([json_body, unterminated])
    engine = make_engine(peer.base)
    assert run_stream(engine, "s1", "hi") == ["Whole reply."]
    assert run_stream(engine, "s1", "hi") == ["First ", "Last"]
    assert engine.stats().failed == 0


def test_failure_after_first_token_is_not_retried(make_peer, make_engine) -> None:
    peer = make_peer([cut_off, full_reply])
    engine = make_engine(peer.base, retry=RetryPolicy(retries=3, backoff_s=0.01))
    pieces: list[str] = []
    with pytest.raises(EngineError, match="reply broke off"):
        for piece in engine.stream("s1", prompt("hi"), GREEDY):
            pieces.append(piece)
    assert pieces == ["Hello", " there"]  # no duplicated text from a retry
    s = engine.stats()
    assert (s.attempts, s.retries, s.failed) == (1, 0, 1)
    assert s.breaker.failures_in_window == 1


def test_abort_wakes_a_reader_blocked_on_a_stalled_stream(make_peer, make_engine) -> None:
    peer = make_peer([stall_after_one_piece])
    engine = make_engine(peer.base, read_timeout_s=60.0)
    stream = engine.stream("s1", prompt("hi"), GREEDY)
    assert next(stream) == "Hello"
    ended = threading.Event()
    rest: list[str] = []
    reader = threading.Thread(target=lambda: (rest.extend(stream), ended.set()))
    reader.start()  # blocks in recv: the peer sends nothing more
    assert not ended.wait(timeout=0.3)
    t0 = time.monotonic()
    engine.abort("s1")
    assert ended.wait(timeout=2.0), "abort did not end a stream blocked in recv"
    reader.join(timeout=5)
    assert time.monotonic() - t0 < 1.0 and rest == []
    assert engine.stats().aborted == 1


def test_release_and_close(make_peer, make_engine) -> None:
    peer = make_peer([stall_after_one_piece])
    engine = make_engine(peer.base, read_timeout_s=60.0)
    stream = engine.stream("s1", prompt("hi"), GREEDY)
    assert next(stream) == "Hello"
    assert engine.stats().active == 1
    t0 = time.monotonic()
    engine.release("s1")  # the session is gone: its call is aborted and forgotten
    assert list(stream) == [] and engine.stats().active == 0
    assert time.monotonic() - t0 < 2.0
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.stream("s2", prompt("hi"), GREEDY)
