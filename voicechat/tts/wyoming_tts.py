"""Remote text to speech over Home Assistant's Wyoming protocol (wyoming-piper and friends).

A ``synthesize`` event is answered by ``audio-start``, ``audio-chunk``s and
``audio-stop`` (or an ``error`` event). The ``wyoming`` library is asyncio-first,
but its event framing also has synchronous ``read_event``/``write_event`` over
binary files. The pool calls engines from its own worker threads, so each
sentence uses a plain blocking socket with that framing: no event loop thread
to own, start and join, and abort is one ``shutdown`` of the socket from
another thread, which wakes the blocked read at once. One connection per
sentence: a connect on a LAN costs far less than a synthesis, and a connection
never carries a half-read reply into the next sentence. Every read waits at most
``read_timeout_s``, so a stalled server ends the sentence with EngineError.

``WyomingReply`` (the event sequence) and ``synthesize_bytes`` are pure.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, read_event, write_event
from wyoming.tts import Synthesize, SynthesizeVoice

from voicechat.engines.endpoints import tcp_address
from voicechat.engines.protocols import EngineError
from voicechat.tts.remote import Reachability, remote_health

__all__ = ["WyomingReply", "WyomingSpeechClient", "synthesize_bytes"]


def synthesize_bytes(text: str, voice: str = "") -> bytes:
    """The wire bytes of one ``synthesize`` event (``voice`` empty = the server's default voice)."""
    event = Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event()
    out = io.BytesIO()
    write_event(event, out)
    return out.getvalue()


class WyomingReply:
    """The server's answer to one ``synthesize``, event by event: audio out, errors raised, ``done`` at the end."""

    def __init__(self) -> None:
        self.rate: int | None = None  # Hz, from audio-start (or the first chunk)
        self.done = False

    def feed(self, event: Event) -> bytes:
        """The PCM16 mono audio this event carries (often none); EngineError for an error event or bad audio."""
        if Error.is_type(event.type):
            error = Error.from_event(event)
            raise EngineError(f"the Wyoming speech server reported an error: {error.text} ({error.code})")
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self._check(start.rate, start.width, start.channels)
            self.rate = start.rate
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            self._check(chunk.rate, chunk.width, chunk.channels)
            if self.rate is None:
                self.rate = chunk.rate
            elif chunk.rate != self.rate:
                raise EngineError(f"the Wyoming speech server changed its rate within a reply: "
                                  f"{self.rate} -> {chunk.rate} Hz")
            return chunk.audio
        elif AudioStop.is_type(event.type):
            self.done = True
        return b""  # other events (info, synthesize-stopped, ...) carry no audio here

    @staticmethod
    def _check(rate: int, width: int, channels: int) -> None:
        if width != 2 or channels != 1 or rate <= 0:
            raise EngineError(f"the Wyoming speech server's audio is not PCM16 mono ({rate} Hz, {8 * width} bit, "
                              f"{channels} channels)")


class _WyomingStream:
    """One sentence over its own connection; no I/O until ``pieces()`` runs (in the pool worker's thread)."""

    def __init__(self, client: WyomingSpeechClient, text: str, voice: str) -> None:
        self._client = client
        self._request = synthesize_bytes(text, voice)
        self._lock = threading.Lock()
        self._aborted = False
        self._sock: socket.socket | None = None

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv
                except OSError:
                    pass

    def pieces(self) -> Iterator[tuple[bytes, int]]:
        c = self._client
        try:
            sock = socket.create_connection((c.host, c.port), timeout=c.connect_timeout_s)
        except OSError as exc:
            raise EngineError(f"cannot connect to the Wyoming speech server at {c.endpoint} ({exc})") from exc
        with self._lock:
            if self._aborted:
                sock.close()
                return
            self._sock = sock
        try:
            sock.settimeout(c.read_timeout_s)
            sock.sendall(self._request)
            reply = WyomingReply()
            with sock.makefile("rb") as reader:
                while not reply.done:
                    event = read_event(reader)
                    if event is None:
                        raise EngineError(f"the Wyoming speech server at {c.endpoint} closed the connection "
                                          "before the end of its reply")
                    audio = reply.feed(event)
                    if audio:
                        assert reply.rate is not None
                        yield audio, reply.rate
        except TimeoutError as exc:
            raise EngineError(f"the Wyoming speech server at {c.endpoint} sent nothing for "
                              f"{c.read_timeout_s:g} s") from exc
        except OSError as exc:
            raise EngineError(f"the Wyoming speech server at {c.endpoint} failed: {exc}") from exc
        finally:
            with self._lock:
                self._sock = None
            sock.close()


class WyomingSpeechClient:
    """The ``RemoteSpeech`` client of ``tts.engine = "wyoming"``: shared by a pool's engines, thread-safe."""

    kind = "wyoming"

    def __init__(self, endpoint: str, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 10.0) -> None:
        """``endpoint``: ``tcp://host:port``; timeouts in seconds."""
        self.host, self.port = tcp_address(endpoint, "tts.endpoint")
        self.endpoint = endpoint.strip()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reach = Reachability(self.host, self.port, timeout_s=min(2.0, connect_timeout_s))

    def open(self, text: str, voice: str, speed: float) -> _WyomingStream:
        """``speed`` is not part of the Wyoming protocol: the server's own length scale rules."""
        return _WyomingStream(self, text, voice)

    def remote_status(self) -> dict[str, object]:
        return remote_health(self.kind, self.endpoint, self.reach)

    def close(self) -> None:
        """Nothing is kept open between sentences."""
