"""Fuzzing the live server: WebSocket messages, WebSocket framing, and HTTP, against a running VoiceServer.

What is sent (hypothesis): random and near-valid JSON, random binary, audio frames with truncated
headers, wrong kinds/versions, odd lengths and sizes around the frame limit, text where binary
belongs and binary where text belongs, hellos with wrong tokens, unknown fields and wrong sample
rates (then audio at those rates), before and after a hello; over a bare socket, frames with
random opcodes, reserved bits, missing masks, declared lengths up to 2**63-1, and truncated
headers. Over HTTP: oversized request lines and headers, unknown paths, path traversal.

What must hold: no exception escapes a handler (no log record at ERROR or above from any logger,
no uncaught thread exception), every connection either stays usable or is closed with a code the
protocol documents (never 1011), the server still answers /health and frees every connection and
session, and a bystander that streamed audio throughout completes a normal turn afterwards.

Case counts: ``VOICECHAT_FUZZ_EXAMPLES=N`` (default 200, the same variable as
test_fuzz_protocol.py); the live tests run N // 8 connections each (25 in CI), e.g.::

    VOICECHAT_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q tests/server/test_fuzz_server.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.raw_ws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWebSocket, frame, read_http_head
from support.server import TOKEN, client, http_get, http_json, run, running_server, ws_url
from test_fuzz_protocol import hostile_audio, hostile_text

from voicechat.server.protocol import SAMPLE_RATES, encode_client_audio
from voicechat.server.routes import WEB_DIR, static_file
from voicechat.session.manager import SessionLimits

FUZZ_EXAMPLES = int(os.environ.get("VOICECHAT_FUZZ_EXAMPLES", "200"))
LIVE_EXAMPLES = max(10, FUZZ_EXAMPLES // 8)
LIVE = settings(max_examples=LIVE_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PURE = settings(max_examples=FUZZ_EXAMPLES, deadline=None)
# Close codes the protocol documents for a misbehaving client: normal, policy, too big, server full;
# 1002 (protocol error) and 1007 (invalid UTF-8) for broken framing. Never 1011 (internal error).
DOCUMENTED_CLOSES = {None, 1000, 1002, 1007, 1008, 1009, 1013}


# -- watching the server ------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def nothing_escapes() -> Iterator[list[str]]:
    """Fail if any logger reports an ERROR (websockets' "connection handler failed", ours, asyncio's)
    or a thread dies of an exception while the block runs."""
    handler, problems = _Collect(), []
    previous_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        problems.append(f"thread {name}: {args.exc_type.__name__}: {args.exc_value}")

    logging.getLogger().addHandler(handler)
    threading.excepthook = hook
    try:
        yield problems
    finally:
        logging.getLogger().removeHandler(handler)
        threading.excepthook = previous_hook
    problems += [f"{r.name}: {r.getMessage()} {r.exc_info[1] if r.exc_info else ''}" for r in handler.records]
    assert not problems, problems


class Bystander:
    """A client on its own thread and loop that streams silence (an open microphone) throughout,
    then, when told, has a normal turn."""

    def __init__(self, server) -> None:
        self.server = server
        self.ready, self.stop = threading.Event(), threading.Event()
        self.reply: str | None = None
        self.close_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="bystander")

    def __enter__(self) -> Bystander:
        self.thread.start()
        assert self.ready.wait(30) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)

    def finish(self) -> str | None:
        """End the silence, have a turn, return the reply (None if it failed)."""
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error
        assert self.close_code is None, f"the bystander was disconnected: {self.close_code}"
        return self.reply

    async def _main(self) -> None:
        try:
            async with client(self.server) as c:
                await c.wait_type("session")
                self.ready.set()
                silence = c.keep_streaming_silence()
                await asyncio.to_thread(self.stop.wait, 600)
                silence.cancel()
                await c.send_json(type="text", text="are you still there")
                (done,) = await c.wait_type("reply_done")
                self.reply, self.close_code = done["text"], c.received.close_code
        except BaseException as err:  # noqa: BLE001 - reported by finish()
            self.error = err
            self.ready.set()


async def until(condition, timeout: float = 15.0, what: object = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"server did not settle: {what() if callable(what) else what}"
        await asyncio.sleep(0.05)


def settled(server, manager) -> None:
    """Every connection and session has gone (the bystander's too, by now), and every address slot is free."""
    def state() -> tuple[int, int, int]:
        return len(server._connections), len(manager), server.guard.cap.count("127.0.0.1")

    run(until(lambda: state() == (0, 0, 0), what=state))


@pytest.fixture
def fuzz_server(make_manager, tmp_path):
    manager = make_manager(limits=SessionLimits(max_sessions=64, resume_grace_s=0))
    with running_server(manager, tmp_path, auth_delay_s=0.01, auth_delay_max_s=0.02) as server:
        yield server, manager


# -- WebSocket messages (a well-behaved client library sending hostile content) -----------------
hellos = st.fixed_dictionaries(
    {"type": st.just("hello")},
    optional={
        "token": st.sampled_from([TOKEN, TOKEN, TOKEN, TOKEN, "wrong", "", None, 5]),
        "input_sample_rate": st.sampled_from(SAMPLE_RATES) | st.integers(-1, 10**6),
        "output_sample_rate": st.sampled_from(SAMPLE_RATES) | st.integers(-1, 10**6),
        "resume": st.none() | st.text(max_size=40), "playback_reports": st.booleans(),
        "extra": st.integers(),
    },
).map(json.dumps)
good_hellos = st.builds(
    lambda i, o, reports: json.dumps({"type": "hello", "token": TOKEN, "input_sample_rate": i, "output_sample_rate": o,
                                      "playback_reports": reports}),
    st.sampled_from(SAMPLE_RATES), st.sampled_from(SAMPLE_RATES), st.booleans(),
)
audio = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 4000)).map(
    lambda sn: encode_client_audio(sn[0], 0, os.urandom(sn[1] * 2)))
messages = st.one_of(hostile_text, hostile_audio, audio, st.binary(max_size=300), hellos,
                     hostile_text.map(lambda s: s.encode("utf-8", "replace")))  # text sent as binary


@dataclass
class Script:
    before: list[str | bytes]
    hello: str | None
    after: list[str | bytes]

    @property
    def frames(self) -> int:
        return len(self.before) + len(self.after) + (self.hello is not None)


# Most scripts get past the hello (at every sample rate), to reach the session with hostile frames.
scripts = st.builds(Script, st.lists(messages, max_size=3), st.one_of(st.none(), hellos, *[good_hellos] * 4),
                    st.lists(messages, max_size=6))


async def exchange(server, script: Script, marker: float, errors: dict[str, int]) -> int | None:
    """Send the script, then a ping; wait for its answer (pong, or not_ready before a hello) or a close.

    Counts the error codes the server answered with into ``errors``; returns the close code (None: still open).
    """
    async with websockets.connect(ws_url(server), compression=None, max_size=2**22, open_timeout=10,
                                  close_timeout=2) as ws:
        try:
            for data in [*script.before, *([script.hello] if script.hello else []), *script.after]:
                await ws.send(data)
            await ws.send(json.dumps({"type": "ping", "t": marker}))
            async with asyncio.timeout(15):
                async for data in ws:
                    if isinstance(data, bytes):
                        continue
                    message = json.loads(data)  # everything the server says is valid JSON
                    kind = message.get("type")
                    if kind == "error":
                        errors[message["code"]] = errors.get(message["code"], 0) + 1
                    elif kind == "session":
                        errors["(session)"] = errors.get("(session)", 0) + 1
                    if kind == "pong" and message.get("t") == marker:
                        break
                    if kind == "error" and message.get("message") == "send hello before ping":
                        break
        except websockets.ConnectionClosed:
            pass
        return ws.close_code


def test_live_websocket_fuzz(fuzz_server):
    server, manager = fuzz_server
    stats: dict[str, object] = {"connections": 0, "frames": 0}
    closes: dict[int | None, int] = {}
    answers: dict[str, int] = {}

    @LIVE
    @given(scripts)
    @example(Script([], json.dumps({"type": "hello", "token": TOKEN, "resume": "\u0080"}), []))  # was 1011
    def one(script: Script) -> None:
        code = run(exchange(server, script, float(stats["connections"]), answers))
        stats["connections"] += 1
        stats["frames"] += script.frames
        closes[code] = closes.get(code, 0) + 1
        assert code in DOCUMENTED_CLOSES, (code, script)

    with nothing_escapes(), Bystander(server) as bystander:
        one()
        assert http_json(server, "/health") == {"status": "ok"}
        assert bystander.finish().startswith("You said: are you still there")
    settled(server, manager)
    print(f"\nlive fuzz: {stats}, closes {closes}, answers {dict(sorted(answers.items()))}")


# -- WebSocket framing (a bare socket) ----------------------------------------------------------
raw_frames = st.builds(
    frame, st.integers(0, 15), st.binary(max_size=200), fin=st.booleans(), mask=st.booleans() | st.just(True),
    length=st.none() | st.none() | st.integers(0, 300) | st.sampled_from([2**16, 2**32, 2**63 - 1]),
    rsv=st.integers(0, 7) | st.just(0),
)
raw_streams = st.tuples(
    st.booleans(),  # hello first
    st.lists(raw_frames | st.binary(max_size=30), max_size=4).map(b"".join),
    st.integers(0, 10**6),  # where to cut the stream (truncated headers and payloads)
)


def raw_exchange(port: int, hello_first: bool, stream: bytes, cut: int) -> int | None:
    raw = RawWebSocket(port)
    try:
        if hello_first:
            raw.send_json(type="hello", token=TOKEN)
        raw.send(stream[: cut % (len(stream) + 1)])
        raw.sock.shutdown(socket.SHUT_WR)  # then EOF: the server must finish with us
        return raw.close_code()
    except ConnectionError:
        return None
    finally:
        raw.close()


def test_raw_frame_fuzz(fuzz_server):
    server, manager = fuzz_server
    closes: dict[int | None, int] = {}

    @LIVE
    @given(raw_streams)
    def one(stream: tuple[bool, bytes, int]) -> None:
        code = raw_exchange(server.port, *stream)
        closes[code] = closes.get(code, 0) + 1
        assert code in DOCUMENTED_CLOSES, code

    with nothing_escapes(), Bystander(server) as bystander:
        one()
        assert http_json(server, "/health") == {"status": "ok"}
        assert bystander.finish().startswith("You said: are you still there")
    settled(server, manager)
    print(f"\nraw frame fuzz: closes {closes}")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(OP_BINARY, b"", length=2**63 - 1), 1009),  # huge declared length: refused before any payload
        (frame(OP_TEXT, b"", length=2**20), 1009),
        (frame(OP_TEXT, b'{"type":"ping"}', mask=False), 1002),  # clients must mask
        (frame(OP_TEXT, b"\xff\xfe not utf-8"), 1007),
        (frame(0x3, b"reserved opcode"), 1002),
        (frame(OP_TEXT, b'{"type":"ping"}', rsv=4), 1002),  # reserved bit without an extension
        (frame(OP_PING, b"x", fin=False), 1002),  # fragmented control frame
        (frame(OP_CONT, b"no start"), 1002),
        (frame(OP_PING, b"x" * 126), 1002),  # control frame over 125 bytes
        (frame(OP_CLOSE, b"\x03"), 1002),  # one-byte close payload
    ],
    ids=["huge-length", "over-limit-length", "unmasked", "bad-utf8", "reserved-opcode", "rsv-bit",
         "fragmented-ping", "orphan-continuation", "long-ping", "short-close"],
)
def test_broken_framing_gets_the_right_close(fuzz_server, data, code):
    server, _manager = fuzz_server
    with nothing_escapes():
        raw = RawWebSocket(server.port, timeout=5)
        raw.send_json(type="hello", token=TOKEN)
        assert raw.read_json()["type"] == "session"
        start = time.monotonic()
        raw.send(data)  # and nothing more: the verdict must not wait for a payload
        assert raw.close_code() == code
        assert time.monotonic() - start < 4
        raw.close()


def test_truncated_header_then_silence_does_not_hold_others_up(fuzz_server):
    """Half a frame header, then nothing: only that connection waits (for keepalive); others are served."""
    server, _manager = fuzz_server
    with nothing_escapes():
        raw = RawWebSocket(server.port)
        raw.send_json(type="hello", token=TOKEN)
        raw.send(frame(OP_BINARY, bytes(100))[:1])

        async def others() -> str:
            async with client(server) as c:
                await c.wait_type("session")
                await c.send_json(type="text", text="hello there")
                return (await c.wait_type("reply_done"))[0]["text"]

        assert run(others()).startswith("You said: hello there")
        raw.close()


# -- HTTP -----------------------------------------------------------------------------------------
def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # no more is coming (else an incomplete request waits for open_timeout)
        return read_http_head(sock)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line over 8 KiB
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n",  # header line over 8 KiB
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",  # a body on a GET
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /health HTTP/1.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # TLS to a plain port
        b"NONSENSE\r\n\r\n",
    ],
    ids=["long-request-line", "long-header", "200-headers", "huge-body", "post", "http-1.0", "tls-hello",
         "nonsense"],
)
def test_oversized_and_malformed_http_is_refused(fuzz_server, request_bytes):
    server, _manager = fuzz_server
    with nothing_escapes():
        answer = raw_http(server.port, request_bytes)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")), answer[:100]
        assert http_json(server, "/health") == {"status": "ok"}


SECRET = b"class VoiceServer"  # from voicechat/server/server.py, one folder above the page's
TRAVERSALS = [
    "/static/../server/server.py", "/static/%2e%2e/server/server.py", "/static/%2E%2E%2Fserver%2Fserver.py",
    "/static/..%2fserver%2fserver.py", "/static/..\\server\\server.py", "/static/..%5cserver%5cserver.py",
    "/static/%252e%252e/server/server.py", "/static/....//server/server.py", "/static/./../server/server.py",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/../../../../../../etc/passwd",
    "/static/%00../server/server.py", "/static/index.html%00.png", "/static/..;/server/server.py",
    "/%2e%2e/voicechat/server/server.py", "/static/%c0%ae%c0%ae/server/server.py", "/static/",
    "/static/..", "/../../etc/passwd", "/nope", "/.env", "/ws/../../server/server.py", "/index.html/..",
]


def test_unknown_paths_and_traversal_are_404(fuzz_server):
    server, _manager = fuzz_server
    with nothing_escapes():
        for path in TRAVERSALS:
            answer = raw_http(server.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            assert answer.startswith((b"HTTP/1.1 404", b"HTTP/1.1 400")) or answer == b"", (path, answer[:80])
            assert SECRET not in answer and b"root:" not in answer, path
        assert http_get(server, "/static/app.js")[0] == 200  # the page's own files are served


names = st.lists(
    st.sampled_from(["..", ".", "", "app.js", "index.html", "server", "server.py", "etc", "passwd", "\\", "..\\",
                     "%2e%2e", "\x00", "~", "/", "web", "voicechat"]) | st.text(max_size=8),
    max_size=6,
).map("/".join)


@PURE
@given(names)
def test_static_file_never_leaves_the_page_folder(name: str) -> None:
    path = static_file(WEB_DIR, name)
    if path is not None:
        assert path.is_file() and path.is_relative_to(WEB_DIR.resolve()), (name, path)


def test_static_file_refuses_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    web = tmp_path / "web"
    web.mkdir()
    (web / "ok.js").write_text("ok")
    (tmp_path / "secret.txt").write_text("secret")
    (web / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert static_file(web, "ok.js") == (web / "ok.js").resolve()
    assert static_file(web, "link.txt") is None


def test_struct_sizes_used_by_the_raw_client() -> None:
    """frame() writes the 64-bit length form for the huge declared lengths above."""
    data = frame(OP_BINARY, b"", length=2**63 - 1, mask=False)
    assert data[1] == 127 and struct.unpack("!Q", data[2:10])[0] == 2**63 - 1
