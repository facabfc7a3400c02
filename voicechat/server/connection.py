"""One WebSocket client: handshake, session attach, reader and writer.

The session's threads put events into its outbox; ``OutboxSignal`` (the
outbox's ``on_put`` hook) wakes this connection's writer task on the event
loop, which drains the outbox and sends each event as one frame. A client that
reads slowly stalls only its own writer; its outbox is bounded and evicts.

The reader turns frames into session calls. Every refusal is an ``error``
message to this client only; persistent abuse closes this connection (1008).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voicechat.audio import AudioFrame
from voicechat.bounded_queue import QueueClosed
from voicechat.engines.base import VoiceSettings
from voicechat.events import AudioChunk
from voicechat.pipeline import PipelineOptions
from voicechat.protocol import (
    ClearHistory,
    ClientMessage,
    Hello,
    Mute,
    Ping,
    Playback,
    ProtocolError,
    SettingsUpdate,
    TextInput,
    encode_event,
    encode_message,
    parse_audio,
    parse_text,
)
from voicechat.server.access import token_matches
from voicechat.server.rate_limit import MalformedCounter, RateLimiter, Verdict
from voicechat.session_manager import AdmissionError, ResumeError, Session, SessionManager

if TYPE_CHECKING:
    from voicechat.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = (
    1000, 1001, 1008, 1009, 1011, 1013)


@dataclass(frozen=True)
class ConnectionLimits:
    hello_timeout_s: float = 10.0
    max_messages_per_second: int = 200
    max_text_bytes: int = 16384
    max_frame_bytes: int = 65536
    max_text_chars: int = 2000
    malformed_in_a_row: int = 20


class OutboxSignal:
    """Thread-safe wake-up of the writer that currently serves a session (if any).

    Calls from the session's threads are coalesced: at most one wake-up is in
    flight on the loop at a time, however many events arrive meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._replaced: Callable[[], None] | None = None
        self._scheduled = False

    def attach(
        self, loop: asyncio.AbstractEventLoop, event: asyncio.Event, on_replaced: Callable[[], None]
    ) -> None:
        """Serve the session's events to a new writer; the previous one (if any) hears ``on_replaced``."""
        with self._lock:
            previous, previous_replaced = self._target, self._replaced
            self._target, self._replaced = (loop, event), on_replaced
            self._scheduled = False
        if previous is not None and previous_replaced is not None and previous[1] is not event:
            previous_loop = previous[0]
            previous_loop.call_soon_threadsafe(previous_replaced)
        event.set()  # drain whatever queued while no one was attached

    def detach(self, event: asyncio.Event) -> None:
        with self._lock:
            if self._target is not None and self._target[1] is event:
                self._target, self._replaced = None, None

    def __call__(self) -> None:
        with self._lock:
            if self._target is None or self._scheduled:
                return
            self._scheduled = True
            loop, _ = self._target
        try:
            loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _fire(self) -> None:
        with self._lock:
            self._scheduled = False
            target = self._target
        if target is not None:
            target[1].set()


class Refused(Exception):
    """End the connection: send ``error`` with ``code`` and close with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code, self.close_code = code, close_code


def protocol_error(code: str, message: str) -> str:
    return encode_message("error", code=code, message=message, stage="protocol", generation=0)


class ClientConnection:
    """Serves one WebSocket from hello to close."""

    def __init__(
        self,
        ws: ServerConnection,
        manager: SessionManager,
        options: PipelineOptions,
        token: str,
        metrics: ServerMetrics,
        limits: ConnectionLimits,
        stopping: threading.Event,
    ) -> None:
        self.ws, self.manager, self.options, self.token = ws, manager, options, token
        self.metrics, self.limits, self.stopping = metrics, limits, stopping
        self.session: Session | None = None
        self.input_rate = 16000
        self.limiter = RateLimiter(limits.max_messages_per_second)
        self.malformed = MalformedCounter(limits.malformed_in_a_row)
        self._last_rate_error = 0.0
        self._wake = asyncio.Event()
        self._attachment = 0
        self._closing: asyncio.Task[None] | None = None

    def _replaced(self) -> None:
        """Another connection resumed this session: this one is over."""
        self._closing = asyncio.create_task(self._close(CLOSE_NORMAL, "session resumed by another connection"))

    async def serve(self) -> None:
        signal: OutboxSignal | None = None
        writer: asyncio.Task[None] | None = None
        try:
            hello = await self._await_hello()
            self.session, resumed, resume_error = await self._attach(hello)
            signal = self.session.transport  # type: ignore[assignment]
            assert isinstance(signal, OutboxSignal)
            await self.ws.send(self._session_message(resumed, resume_error))
            signal.attach(asyncio.get_running_loop(), self._wake, self._replaced)
            writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.session.id}")
            await self._read()
        except Refused as refusal:
            self.metrics.protocol_errors.labels(refusal.code).inc()
            await self._close(refusal.close_code, str(refusal), refusal.code)
        except ConnectionClosed:
            pass
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            if signal is not None:
                signal.detach(self._wake)
            if self.session is not None and not self.stopping.is_set():
                # Keep the session for resume_grace_s; a zero grace closes it (joins threads): off the loop.
                await asyncio.to_thread(self.manager.detach, self.session.id, self._attachment)

    # -- handshake -------------------------------------------------------------
    async def _await_hello(self) -> Hello:
        deadline = time.monotonic() + self.limits.hello_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                data = await asyncio.wait_for(self.ws.recv(), timeout=max(0.0, left))
            except TimeoutError:
                raise Refused("hello_timeout", "no hello within "
                              f"{self.limits.hello_timeout_s:.0f} s", CLOSE_POLICY) from None
            if isinstance(data, bytes):
                await self._refuse_message("not_ready", "send hello before audio")
                continue
            try:
                message = parse_text(data, self.limits.max_text_bytes)
            except ProtocolError as err:
                await self._refuse_message(err.code, str(err))
                continue
            if not isinstance(message, Hello):
                await self._refuse_message("not_ready", f"send hello before {message.type}")
                continue
            if not token_matches(self.token, message.token):
                raise Refused("unauthorized", "missing or wrong token", CLOSE_POLICY)
            return message

    async def _attach(self, hello: Hello) -> tuple[Session, bool, str | None]:
        resume_error = None
        self.input_rate = hello.input_sample_rate
        if hello.resume:
            try:
                session = self.manager.resume(hello.resume, take_over=True)
                self._attachment = session.attachment
                return session, True, None
            except ResumeError as err:
                resume_error = str(err)
        options = replace(self.options, output_sample_rate=hello.output_sample_rate,
                          playback_reports=hello.playback_reports)
        signal = OutboxSignal()
        try:
            session = await asyncio.to_thread(self.manager.create, "ws", signal, options)
        except AdmissionError as err:
            raise Refused("server_full", str(err), CLOSE_TRY_LATER) from None
        session.transport = signal
        return session, False, resume_error

    def _session_message(self, resumed: bool, resume_error: str | None) -> str:
        assert self.session is not None
        pipeline = self.session.pipeline
        return encode_message(
            "session", session_id=self.session.id, resume_token=self.session.resume_token, resumed=resumed,
            resume_error=resume_error, input_sample_rate=self.input_rate,
            output_sample_rate=pipeline.output_sample_rate, state=pipeline.state.value,
            muted=pipeline.capture.muted, voice=pipeline.voice.voice, speed=pipeline.voice.speed,
            history=[{"role": m.role, "text": m.content} for m in pipeline.history.turns],
        )

    # -- reader ------------------------------------------------------------------
    async def _read(self) -> None:
        async for data in self.ws:
            verdict = self.limiter.check()
            if verdict is Verdict.CLOSE:
                raise Refused("rate_limited", "too many messages, for too long", CLOSE_POLICY)
            if verdict is Verdict.DROP:
                await self._rate_error()
                continue
            try:
                if isinstance(data, bytes):
                    self._on_audio(data)
                else:
                    await self._on_message(parse_text(data, self.limits.max_text_bytes))
                self.malformed.good()
            except ProtocolError as err:
                await self._refuse_message(err.code, str(err))
                if self.malformed.bad():
                    raise Refused(err.code, f"{self.malformed.in_a_row} malformed messages in a row",
                                  CLOSE_POLICY) from None

    def _on_audio(self, data: bytes) -> None:
        frame = parse_audio(data, self.limits.max_frame_bytes)
        assert self.session is not None
        self.metrics.audio_in.inc()
        self.session.pipeline.feed_audio(AudioFrame(frame.pcm, self.input_rate, frame.seq))

    async def _on_message(self, message: ClientMessage) -> None:
        assert self.session is not None
        pipeline = self.session.pipeline
        if isinstance(message, TextInput):
            text = message.text.strip()
            if not text or len(text) > self.limits.max_text_chars:
                raise ProtocolError("bad_message", f"text: 1 to {self.limits.max_text_chars} characters")
            pipeline.send_text(text)
        elif isinstance(message, Playback):
            pipeline.report_playback(message.generation, message.played_samples, message.finished)
        elif isinstance(message, Ping):
            await self.ws.send(encode_message("pong", t=message.t, server_time=time.time()))
        elif isinstance(message, Mute):
            pipeline.set_muted(message.muted)
        elif isinstance(message, ClearHistory):
            pipeline.clear_history()
        elif isinstance(message, SettingsUpdate):
            voice = pipeline.voice
            pipeline.set_voice(VoiceSettings(message.voice or voice.voice, message.speed or voice.speed))
        elif isinstance(message, Hello):
            raise ProtocolError("bad_message", "hello: already connected to a session")

    async def _refuse_message(self, code: str, message: str) -> None:
        self.metrics.protocol_errors.labels(code).inc()
        await self.ws.send(protocol_error(code, message))

    async def _rate_error(self) -> None:
        """Tell a flooding client at most once a second (answering every drop would double the flood)."""
        now = time.monotonic()
        self.metrics.protocol_errors.labels("rate_limited").inc()
        if now - self._last_rate_error >= 1.0:
            self._last_rate_error = now
            await self.ws.send(protocol_error(
                "rate_limited", f"more than {self.limits.max_messages_per_second} messages a second; dropped"))

    # -- writer ----------------------------------------------------------------
    async def _write(self) -> None:
        assert self.session is not None
        outbox = self.session.pipeline.outbox
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    event = outbox.get_nowait()
                except TimeoutError:
                    break
                except QueueClosed:
                    await self._close(CLOSE_NORMAL, "session closed")
                    return
                self.metrics.observe(event)
                if isinstance(event, AudioChunk):
                    self.metrics.audio_out.inc()
                await self.ws.send(encode_event(event))

    async def _close(self, code: int, reason: str, error_code: str | None = None) -> None:
        self.metrics.closes.labels(str(code)).inc()
        try:
            if error_code is not None:
                await self.ws.send(protocol_error(error_code, reason))
            await self.ws.close(code, reason[:120])
        except ConnectionClosed:
            pass
