"""What the remote TTS backends share: body decoding, the pool's per-worker engine, reachability.

A backend (``openai_tts.py``, ``wyoming_tts.py``) is one client object shared by
every worker of a ``TTSPool``; it opens one ``RemoteStream`` per sentence. Each
pool worker owns a ``RemoteTtsEngine`` over that client: it resamples the
server's audio to the pool's rate, cuts it into ``chunk_ms`` chunks, and its
``stop()`` aborts its running streams (closing their sockets), so barge-in
takes effect within one chunk even while a read is blocked.

``PcmDecoder`` and ``WavHeader`` are pure (bytes in, bytes out) and tested without sockets.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.tts.chunking import RunningStreams, StopFlag, StreamStop, chunk_bytes, pcm16_stream_to_chunks

log = logging.getLogger(__name__)

__all__ = [
    "PcmDecoder", "Reachability", "RemoteSpeech", "RemoteStream", "RemoteTtsEngine", "WavFormat", "parse_wav_header",
]

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put in the data chunk's size


# -- pure: response bodies --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WavFormat:
    sample_rate: int
    channels: int
    bits: int


def parse_wav_header(buf: bytes) -> tuple[WavFormat, int, int | None] | None:
    """(format, offset of the audio, its declared length or None if unknown) once ``buf`` holds the
    whole header; None while more bytes are needed. EngineError for a body that is not PCM16 mono WAV."""
    if len(buf) < 12:
        return None
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise EngineError("the TTS server sent something that is not a WAV stream")
    fmt: WavFormat | None = None
    pos = 12
    while len(buf) >= pos + 8:
        tag, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
        if tag == b"data":
            if fmt is None:
                raise EngineError("the TTS server's WAV stream has no fmt chunk before its data")
            return fmt, pos + 8, None if size in _UNKNOWN_SIZES else size
        end = pos + 8 + size + (size & 1)
        if len(buf) < end:
            return None
        if tag == b"fmt ":
            codec, channels, rate = struct.unpack("<HHI", buf[pos + 8 : pos + 16])
            bits = struct.unpack("<H", buf[pos + 22 : pos + 24])[0]
            if codec not in (1, 0xFFFE) or channels != 1 or bits != 16:
                raise EngineError(
                    f"the TTS server's audio is not PCM16 mono (codec {codec}, {channels} channels, {bits} bit); "
                    "choose a 16-bit mono voice or format"
                )
            fmt = WavFormat(rate, channels, bits)
        pos = end
    return None


class PcmDecoder:
    """A response body, fed as it arrives, -> PCM16 mono bytes; ``rate`` (Hz) is known once the first bytes
    decide the kind.

    ``kind``: "wav" (a RIFF header first), "pcm" (raw s16le at ``pcm_rate``) or "auto" (a body starting
    with ``RIFF`` is WAV, any other raw PCM: servers asked for pcm that answer with WAV still work).
    """

    def __init__(self, kind: Literal["pcm", "wav", "auto"] = "auto", pcm_rate: int = 24000) -> None:
        self.kind = kind
        self.pcm_rate = pcm_rate
        self.rate: int | None = pcm_rate if kind == "pcm" else None
        self._head = b""
        self._left: int | None = None  # audio bytes the WAV header announced and not yet passed on

    def feed(self, data: bytes) -> bytes:
        """The audio bytes in ``data`` (maybe empty while a header is incomplete)."""
        if self.rate is None:
            self._head += data
            if self.kind == "auto" and len(self._head) >= 4 and self._head[:4] != b"RIFF":
                self.rate, data, self._head = self.pcm_rate, self._head, b""
                return data
            parsed = parse_wav_header(self._head)
            if parsed is None:
                return b""
            fmt, offset, self._left = parsed
            self.rate, data, self._head = fmt.sample_rate, self._head[offset:], b""
        if self._left is not None:
            data, self._left = data[: self._left], max(0, self._left - len(data))
        return data

    def finish(self) -> None:
        """End of body: EngineError if it ended inside the WAV header."""
        if self.rate is None and self._head:
            raise EngineError("the TTS server's WAV stream ended inside its header")


# -- the backends' interface -------------------------------------------------------------
class RemoteStream(Protocol):
    """One sentence's audio from the server."""

    def pieces(self) -> Iterator[tuple[bytes, int]]:
        """PCM16 mono ``(data, rate)`` as it arrives; EngineError when the call fails or stalls."""
        ...

    def abort(self) -> None:
        """From any thread: stop reading and close the connection (wakes a blocked read)."""
        ...


class RemoteSpeech(Protocol):
    """A backend client shared by every worker of a pool."""

    kind: str  # "openai", "wyoming"
    endpoint: str
    reach: Reachability

    def open(self, text: str, voice: str, speed: float) -> RemoteStream: ...

    def remote_status(self) -> dict[str, object]: ...

    def close(self) -> None: ...


# -- the pool's engine ----------------------------------------------------------------------
class RemoteTtsEngine:
    """One pool worker's engine over a shared ``RemoteSpeech`` client; streams PCM16 at ``sample_rate`` (Hz)."""

    def __init__(self, client: RemoteSpeech, sample_rate: int, chunk_ms: int = 20, voice: str = "",
                 speed: float = 1.0) -> None:
        """``voice`` (the server's voice name; empty = the server's default) overrides the jobs' own."""
        self.client = client
        self.sample_rate = sample_rate
        self.chunk_bytes = chunk_bytes(sample_rate, chunk_ms)
        self.voice = voice
        self.speed = speed
        self._running = RunningStreams()
        self._lock = threading.Lock()
        self._remote: dict[StreamStop, RemoteStream] = {}

    def stream(self, text: str, voice: VoiceSettings | None = None, cancel: StopFlag | None = None) -> Iterator[bytes]:
        """PCM16 chunks of ``text``; ends quietly once ``cancel`` is set or ``stop()`` is called."""
        if not text.strip():
            return iter(())
        return self._run(text, voice.speed if voice else self.speed, cancel)

    def _run(self, text: str, speed: float, cancel: StopFlag | None) -> Iterator[bytes]:
        stop = self._running.begin(cancel)
        remote: RemoteStream | None = None
        try:
            remote = self.client.open(text, self.voice, speed)
            with self._lock:
                self._remote[stop] = remote
            if stop.is_set():
                return
            for chunk in pcm16_stream_to_chunks(remote.pieces(), self.sample_rate, self.chunk_bytes):
                if stop.is_set():
                    return
                yield chunk
        except Exception:
            if stop.is_set():
                return  # our own abort broke the read
            raise
        finally:
            with self._lock:
                self._remote.pop(stop, None)
            if remote is not None:
                remote.abort()  # no-op after a complete read; closes a connection left mid-body
            self._running.end(stop)

    def stop(self) -> None:
        """End this instance's running streams now: their connections are closed."""
        self._running.stop_all()
        with self._lock:
            remotes = list(self._remote.values())
        for remote in remotes:
            remote.abort()

    def shutdown(self) -> None:
        self.stop()


# -- health ------------------------------------------------------------------------------
class Reachability:
    """Whether a TCP endpoint accepts connections, checked at most every ``ttl_s`` seconds (a connect
    of at most ``timeout_s``); the clock and the connect call are injectable for tests."""

    def __init__(
        self, host: str, port: int, *, ttl_s: float = 5.0, timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[tuple[str, int], float], socket.socket] = socket.create_connection,
    ) -> None:
        self.host, self.port = host, port
        self._ttl_s, self._timeout_s = ttl_s, timeout_s
        self._clock, self._connect = clock, connect
        self._lock = threading.Lock()
        self._expires = float("-inf")
        self._state: tuple[bool, str] = (False, "not checked yet")

    def check(self) -> tuple[bool, str]:
        """(reachable, error or "")."""
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                try:
                    self._connect((self.host, self.port), self._timeout_s).close()
                    self._state = (True, "")
                except OSError as exc:
                    self._state = (False, f"{type(exc).__name__}: {exc}")
                self._expires = now + self._ttl_s
            return self._state

    def warn_if_down(self, what: str, endpoint: str) -> None:
        """At start: one warning if the server is not up yet (calls then fail until it is, through the breaker)."""
        up, error = self.check()
        if not up:
            log.warning("%s at %s is not reachable now (%s); replies get no speech until it is", what, endpoint,
                        error)


def remote_health(kind: str, endpoint: str, reach: Reachability) -> dict[str, object]:
    """The JSON-ready health of one remote engine (``/health/detailed``)."""
    up, error = reach.check()
    return {"kind": kind, "endpoint": endpoint, "reachable": up, "error": error or None}
