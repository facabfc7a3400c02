"""One WebSocket client: handshake, session attach, reader and writer.

The session's threads put events into its outbox; ``OutboxSignal`` (the
outbox's ``on_put`` hook) wakes this connection's writer task on the event
loop, which drains the outbox and sends each event as one frame. A client that
reads slowly stalls only its own writer; its outbox is bounded and evicts.

The reader turns frames into session calls. Every refusal is an ``error``
message to this client only; persistent abuse closes this connection (1008).
Rate and malformed-message limits apply from the first frame, before ``hello``
too; a wrong token is refused after a per-address delay (``AuthBackoff``).

Every send is bounded by ``send_timeout_s``: websockets' ``send`` waits while
the socket's write buffer is over its high-water mark, i.e. while the client is
not reading. A client that stays that way is closed (1008, reason "client not
reading"); since its buffers are full the close frame may never reach it, so
the TCP connection is aborted after ``close_timeout_s``. Its session detaches
and stays resumable like any other dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NoReturn

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voicechat.audio import AudioFrame
from voicechat.core.events import AudioChunk
from voicechat.engines.protocols import VoiceSettings
from voicechat.server.access import token_matches
from voicechat.server.address_limits import AddressGuard, AuthBackoff, ConnectionCap
from voicechat.server.outbox_signal import OutboxSignal
from voicechat.server.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_TEXT_CHARS,
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
from voicechat.server.rate_limit import MalformedCounter, RateLimiter, Verdict
from voicechat.session.bounded_queue import QueueClosed
from voicechat.session.manager import AdmissionError, ResumeError, Session, SessionManager
from voicechat.session.pipeline import PipelineOptions

if TYPE_CHECKING:
    from voicechat.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = (
    1000, 1001, 1008, 1009, 1011, 1013)


@dataclass(frozen=True)
class ConnectionLimits:
    hello_timeout_s: float = 10.0
    max_messages_per_second: int = 200
    max_text_bytes: int = MAX_MESSAGE_BYTES
    max_frame_bytes: int = 65536
    max_text_chars: int = MAX_TEXT_CHARS
    malformed_in_a_row: int = 20
    send_timeout_s: float = 10.0
    close_timeout_s: float = 2.0


class Refused(Exception):
    """End the connection: send ``error`` with ``code`` (unless ``tell`` is False) and close with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int, *, tell: bool = True) -> None:
        super().__init__(message)
        self.code, self.close_code, self.tell = code, close_code, tell


class ClientNotReading(Refused):
    """A send waited ``send_timeout_s``: close without another message (it could not be delivered either)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__("send_timeout", f"client not reading for {timeout_s:g} s", CLOSE_POLICY)


async def close_or_abort(ws: ServerConnection, code: int, reason: str, timeout_s: float) -> None:
    """Close with ``code``; abort the TCP connection if that does not finish within ``timeout_s``.

    websockets' ``close`` first waits for the write buffer to drain, which for a
    client that does not read is forever.
    """
    try:
        await asyncio.wait_for(ws.close(code, reason[:120]), timeout_s)
    except (TimeoutError, ConnectionClosed, OSError):
        transport = getattr(ws, "transport", None)
        if transport is not None:
            transport.abort()


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
        guard: AddressGuard | None = None,
    ) -> None:
        self.ws, self.manager, self.options, self.token = ws, manager, options, token
        self.metrics, self.limits, self.stopping = metrics, limits, stopping
        self.guard = guard or AddressGuard(ConnectionCap(1), AuthBackoff(base_s=0))
        self.address = self.guard.address_of(ws)
        self.session: Session | None = None
        self.input_rate = 16000
        self.limiter = RateLimiter(limits.max_messages_per_second)
        self.malformed = MalformedCounter(limits.malformed_in_a_row)
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
            await self._send(self._session_message(resumed, resume_error))
            signal.attach(asyncio.get_running_loop(), self._wake, self._replaced)
            writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.session.id}")
            await self._read()
        except ClientNotReading as refusal:
            await self._end_not_reading(refusal)
        except Refused as refusal:
            if refusal.tell:
                self.metrics.protocol_errors.labels(refusal.code).inc()
            await self._close(refusal.close_code, str(refusal), refusal.code if refusal.tell else None)
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
            if not await self._within_rate():
                continue
            try:
                if isinstance(data, bytes):
                    raise ProtocolError("not_ready", "send hello before audio")
                message = self._parse(data)
                if not isinstance(message, Hello):
                    raise ProtocolError("not_ready", f"send hello before {message.type}")
            except ProtocolError as err:
                await self._malformed(err)
                continue
            if not token_matches(self.token, message.token):  # missing, null, empty or wrong: one path
                await self._refuse_token()
            self.guard.backoff.succeeded(self.address)
            self.malformed.good()
            return message

    async def _refuse_token(self) -> NoReturn:
        """Wait longer after each recent wrong token from this address; only this connection waits."""
        delay = self.guard.backoff.failed(self.address)
        if delay > 0:
            log.info("wrong token from %s; refusing in %.1f s", self.address, delay)
            await self.guard.sleep(delay)
        raise Refused("unauthorized", "missing or wrong token", CLOSE_POLICY)

    async def _attach(self, hello: Hello) -> tuple[Session, bool, str | None]:
        resume_error = None
        self.input_rate = hello.input_sample_rate
        options = replace(self.options, output_sample_rate=hello.output_sample_rate,
                          playback_reports=hello.playback_reports)
        if hello.resume:
            try:
                # Off the loop: restoring a saved conversation builds a pipeline, and a session of that
                # token that is still closing is waited for. A restored session gets this hello's options.
                session = await asyncio.to_thread(self.manager.resume, hello.resume, True, options=options)
                self._attachment = session.attachment
                return session, True, None
            except ResumeError as err:
                resume_error = str(err)
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
            muted=self.session.muted, voice=pipeline.voice.voice, speed=pipeline.voice.speed,
            history=[{"role": m.role, "text": m.content} for m in pipeline.history.turns],
            max_text_chars=self.limits.max_text_chars,
        )

    # -- reader ------------------------------------------------------------------
    async def _read(self) -> None:
        async for data in self.ws:
            if not await self._within_rate():
                continue
            try:
                if isinstance(data, bytes):
                    self._on_audio(data)
                else:
                    await self._on_message(self._parse(data))
                self.malformed.good()
            except ProtocolError as err:
                await self._malformed(err)

    def _parse(self, data: str) -> ClientMessage:
        return parse_text(data, self.limits.max_text_bytes, self.limits.max_text_chars)

    async def _within_rate(self) -> bool:
        """Count one received message (binary or text, before hello or after); False: drop it."""
        verdict = self.limiter.check()
        if verdict is Verdict.OK:
            return True
        if verdict is Verdict.CLOSE:
            raise Refused("rate_limited", "too many messages, for too long", CLOSE_POLICY)
        self.metrics.protocol_errors.labels("rate_limited").inc()
        if verdict is Verdict.DROP:  # not DROP_QUIETLY: told less than a second ago
            await self._send(protocol_error(
                "rate_limited", f"more than {self.limits.max_messages_per_second} messages a second; dropped"))
        return False

    async def _malformed(self, err: ProtocolError) -> None:
        """One ``error`` per malformed message; the ``malformed_in_a_row``-th is then closed (1008), not told twice."""
        await self._refuse_message(err.code, str(err))
        if self.malformed.bad():
            raise Refused(err.code, f"{self.malformed.in_a_row} malformed messages in a row", CLOSE_POLICY, tell=False)

    def _on_audio(self, data: bytes) -> None:
        frame = parse_audio(data, self.limits.max_frame_bytes)
        assert self.session is not None
        self.metrics.audio_in.inc()
        self.session.pipeline.feed_audio(AudioFrame(frame.pcm, self.input_rate, frame.seq))

    async def _on_message(self, message: ClientMessage) -> None:
        assert self.session is not None
        pipeline = self.session.pipeline
        if isinstance(message, TextInput):
            pipeline.send_text(message.text.strip())  # parse_text checked its length
        elif isinstance(message, Playback):
            pipeline.report_playback(message.generation, message.played_samples, message.finished)
        elif isinstance(message, Ping):
            await self._send(encode_message("pong", t=message.t, server_time=time.time()))
        elif isinstance(message, Mute):
            self.manager.set_muted(self.session, message.muted)
        elif isinstance(message, ClearHistory):
            pipeline.clear_history()
        elif isinstance(message, SettingsUpdate):
            voice = pipeline.voice
            pipeline.set_voice(VoiceSettings(message.voice or voice.voice, message.speed or voice.speed))
        elif isinstance(message, Hello):
            raise ProtocolError("bad_message", "hello: already connected to a session")

    async def _refuse_message(self, code: str, message: str) -> None:
        self.metrics.protocol_errors.labels(code).inc()
        await self._send(protocol_error(code, message))

    # -- writer ----------------------------------------------------------------
    async def _send(self, frame: str | bytes) -> None:
        """Send one frame, or raise ``ClientNotReading`` if the client has not made room for it in time."""
        # asyncio.timeout, not wait_for: wait_for wraps the send in a new task and so yields to the
        # loop on every frame. A writer draining twenty text deltas before a reply's first audio then
        # waited twenty loop turns behind every other client's audio (bench load: +200 ms at 30 sessions).
        try:
            async with asyncio.timeout(self.limits.send_timeout_s):
                await self.ws.send(frame)
        except TimeoutError:
            raise ClientNotReading(self.limits.send_timeout_s) from None

    async def _write(self) -> None:
        try:
            await self._drain_outbox()
        except ClientNotReading as refusal:
            await self._end_not_reading(refusal)

    async def _drain_outbox(self) -> None:
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
                await self._send(encode_event(event))

    async def _end_not_reading(self, refusal: ClientNotReading) -> None:
        self.metrics.protocol_errors.labels(refusal.code).inc()
        log.info("closing the connection from %s: %s", self.address, refusal)
        await self._close(refusal.close_code, "client not reading")

    async def _close(self, code: int, reason: str, error_code: str | None = None) -> None:
        self.metrics.closes.labels(str(code)).inc()
        try:
            if error_code is not None:
                await self._send(protocol_error(error_code, reason))
        except (ConnectionClosed, ClientNotReading):
            pass
        await close_or_abort(self.ws, code, reason, self.limits.close_timeout_s)
