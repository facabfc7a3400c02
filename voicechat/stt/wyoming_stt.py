"""Speech to text from a Wyoming server (``stt.engine = "wyoming"``), Home Assistant's voice protocol.

One request is one TCP connection (the protocol's own way: the server answers
one ``transcript`` per audio stream and closes): ``transcribe`` (model name and
language), ``audio-start``, the utterance as ``audio-chunk`` events of 16 kHz
16-bit mono PCM, ``audio-stop``; then events are read until ``transcript``
(``error`` fails the request; anything else, e.g. streamed ``transcript-chunk``s,
is skipped).

Why a blocking socket rather than the library's asyncio client: the engine is
called from the scheduler's worker threads, and the ``wyoming`` library's event
framing also comes synchronous (``read_event``/``write_event`` over binary
files). A blocking socket per request in the calling thread needs no event
loop thread to own, start and stop; its timeouts are the socket's (connect,
then read); and abort from another thread is ``socket.shutdown``, which wakes
the blocked read (``engines.remote.Abortable``). The connect itself is not
aborted: it ends within ``stt.connect_timeout_s``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, read_event, write_event

from voicechat.engines.endpoints import parse_endpoint, tcp_status
from voicechat.engines.protocols import EngineError, SpeechInput
from voicechat.engines.remote import Abortable, describe
from voicechat.stt.remote import SAMPLE_RATE, RemoteTranscriber, pcm16_bytes

WIDTH = 2  # bytes per sample
CHUNK_SAMPLES = 8000  # 0.5 s of audio per audio-chunk event


# -- pure helpers --------------------------------------------------------------------------------
def request_events(pcm: bytes, *, model: str = "", language: str | None = None,
                   rate: int = SAMPLE_RATE, chunk_samples: int = CHUNK_SAMPLES) -> list[Event]:
    """The events that ask for the transcript of 16-bit mono ``pcm`` at ``rate`` Hz."""
    events = [Transcribe(name=model or None, language=language or None).event(),
              AudioStart(rate=rate, width=WIDTH, channels=1).event()]
    step = chunk_samples * WIDTH
    for start in range(0, len(pcm), step):
        events.append(AudioChunk(rate=rate, width=WIDTH, channels=1, audio=pcm[start:start + step]).event())
    events.append(AudioStop().event())
    return events


def read_transcript(next_event: Callable[[], Event | None], where: str = "") -> str:
    """Read events until the ``transcript``; EngineError on ``error`` or a connection closed before it."""
    while True:
        event = next_event()
        if event is None:
            raise EngineError(f"The speech recogniser at {where} closed the connection without a transcript")
        if Transcript.is_type(event.type):
            return str(Transcript.from_event(event).text or "").strip()
        if Error.is_type(event.type):
            error = Error.from_event(event)
            raise EngineError(f"The speech recogniser at {where} reported an error: {error.text}")


# -- the engine ------------------------------------------------------------------------------------
class WyomingTranscriber(RemoteTranscriber):
    """A ``BatchTranscriber`` (and ``AbortableTranscriber``) over a Wyoming ASR server at ``tcp://host:port``."""

    def __init__(
        self,
        endpoint: str,
        *,
        model: str = "",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        address = parse_endpoint(endpoint, key="stt.endpoint", schemes=("tcp",))
        super().__init__(str(address), concurrency=concurrency, name="stt-wyoming")
        self.address = address
        self.model = model
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s

    def transcribe_one(self, item: SpeechInput, call: Abortable) -> str:
        events = request_events(pcm16_bytes(item.audio), model=self.model, language=item.language)
        try:
            sock = socket.create_connection((self.address.host, self.address.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise EngineError(f"The speech recogniser at {self.endpoint} failed: {describe(exc)}") from exc
        with sock:
            if not call.attach(sock):
                return ""
            try:
                sock.settimeout(self.read_timeout_s)
                with sock.makefile("wb") as out:
                    for event in events:
                        write_event(event, out)
                with sock.makefile("rb") as incoming:
                    return read_transcript(lambda: read_event(incoming), self.endpoint)
            except OSError as exc:
                raise EngineError(f"The speech recogniser at {self.endpoint} failed: {describe(exc)}") from exc
            finally:
                call.detach()

    def remote_status(self) -> dict[str, object]:
        status = tcp_status(self.endpoint, self.address.host, self.address.port, min(1.0, self.connect_timeout_s))
        return {**status, "protocol": "wyoming", "model": self.model or None}
