"""A protocol client for the WebSocket server: tests, the load benchmark, scripts.

Speaks docs/protocol.md exactly as a browser would (hello, binary audio frames
paced in real time, playback reports), and records every message it receives
so callers can wait for conditions instead of sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from voicechat.server.protocol import ServerAudio, decode_server_audio, encode_client_audio


@dataclass
class Received:
    """What a client has heard so far (messages in order; audio frames with arrival times)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    message_times: list[float] = field(default_factory=list)  # arrival (time.monotonic()) of each message
    audio: list[tuple[float, ServerAudio]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def timed(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        """Messages of one type with their arrival times."""
        return [(t, m) for t, m in zip(self.message_times, self.messages, strict=True) if m.get("type") == kind]


class VoiceClient:
    """One connection; ``async with VoiceClient(url, token) as c: ...``."""

    def __init__(
        self, url: str, token: str | None, *, origin: str | None = None, ssl_context: ssl.SSLContext | None = None,
        input_sample_rate: int = 16000, output_sample_rate: int = 16000, playback_reports: bool = False,
        resume: str | None = None, frame_ms: int = 20, headers: dict[str, str] | None = None,
    ) -> None:
        self.url, self.token, self.origin, self.ssl_context = url, token, origin, ssl_context
        self.headers = dict(headers or {})  # sent with the upgrade request (a proxy's cookie, for one)
        self.input_sample_rate, self.output_sample_rate = input_sample_rate, output_sample_rate
        self.playback_reports, self.resume, self.frame_ms = playback_reports, resume, frame_ms
        self.received = Received()
        self.ws: ClientConnection | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0

    async def __aenter__(self) -> VoiceClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, hello: bool = True) -> None:
        self.ws = await websockets.connect(
            self.url, ssl=self.ssl_context, origin=self.origin, compression=None,  # type: ignore[arg-type]
            max_size=2**20, open_timeout=10, additional_headers=self.headers or None,
        )
        self._reader = asyncio.create_task(self._read())
        if hello and self.token is not None:
            await self.send_json(
                type="hello", token=self.token, resume=self.resume, input_sample_rate=self.input_sample_rate,
                output_sample_rate=self.output_sample_rate, playback_reports=self.playback_reports,
            )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    # -- sending ---------------------------------------------------------------
    async def send_json(self, **message: Any) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    @property
    def frame_samples(self) -> int:
        return self.input_sample_rate * self.frame_ms // 1000

    async def stream(self, pcm16: np.ndarray, realtime: float = 1.0) -> float:
        """Send PCM16 audio in frames at ``realtime`` × real-time pace; returns the time the last frame left."""
        n = self.frame_samples
        return await self._send_paced((pcm16[i : i + n] for i in range(0, len(pcm16), n)), realtime)

    async def _send_paced(self, frames: Iterable[np.ndarray], realtime: float = 1.0) -> float:
        assert self.ws is not None
        start, sent = time.monotonic(), 0
        for frame in frames:
            await self.ws.send(encode_client_audio(self._seq, int(time.time() * 1e6), frame.astype("<i2").tobytes()))
            self._seq += 1
            sent += len(frame)
            due = start + sent / self.input_sample_rate / realtime - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
        return time.monotonic()

    def keep_streaming_silence(self) -> asyncio.Task[float]:
        """Go on sending silent frames in real time, as an open microphone does, until the task is cancelled.

        Voice activity detectors find the end of an utterance from the audio after it, so a client
        that goes quiet on the wire (instead of sending silence) may never be heard to stop speaking.
        """
        return asyncio.create_task(self._send_paced(itertools.repeat(np.zeros(self.frame_samples, np.int16))))

    # -- receiving -------------------------------------------------------------
    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for data in self.ws:
                now = time.monotonic()
                async with self._changed:
                    if isinstance(data, bytes):
                        self.received.audio.append((now, decode_server_audio(data)))
                    else:
                        self.received.messages.append(json.loads(data))
                        self.received.message_times.append(now)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self.received.close_code = self.ws.close_code
                self.received.close_reason = self.ws.close_reason or ""
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 30.0) -> Received:
        """Wait until ``predicate(received)`` holds (or the connection closed), up to ``timeout`` seconds."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.received) or self.received.close_code is not None),
                timeout,
            )
        return self.received

    async def wait_type(self, kind: str, n: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        await self.wait_for(lambda r: len(r.of_type(kind)) >= n, timeout)
        found = self.received.of_type(kind)
        if len(found) < n:
            raise AssertionError(
                f"expected {n} {kind!r}, got {len(found)}; closed {self.received.close_code} "
                f"{self.received.close_reason!r}; last messages {self.received.messages[-5:]}"
            )
        return found

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await self.wait_for(lambda r: r.close_code is not None, timeout)
        return self.received.close_code
