"""Remote text to speech over the OpenAI audio API: ``POST {endpoint}/v1/audio/speech``.

One pooled httpx2 client (``engines/remote.py``, shared with the LLM's
OpenAI backend) serves every worker of the TTS pool. The body is read in pieces
as it arrives, so a server that streams (raw ``pcm`` sent sentence by sentence)
gives audio before it has finished; ``pcm`` is OpenAI's 24 kHz s16le unless the
server says otherwise in ``X-Sample-Rate``, and a WAV body is recognised by its
header whatever was asked. Read waits are bounded by ``read_timeout_s``: a
stalled stream ends with EngineError. Abort shuts the response's socket down;
a call still waiting for the response headers ends when they arrive (or at the
read timeout), its worker released by the pool meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import httpx2

from voicechat.engines.endpoints import api_url
from voicechat.engines.protocols import EngineError
from voicechat.engines.remote import Abortable, describe, pooled_client, response_error
from voicechat.tts.remote import PcmDecoder, Reachability, remote_health

__all__ = ["OpenAISpeechClient", "speech_body"]

DEFAULT_VOICE = "alloy"  # OpenAI's API requires a voice; OpenAI-compatible servers map or ignore it
READ_BYTES = 4096


def speech_body(model: str, voice: str, text: str, response_format: str, speed: float) -> dict[str, object]:
    """The JSON body; ``speed`` only when not 1 (servers that do not know it may reject it)."""
    body: dict[str, object] = {
        "model": model, "voice": voice or DEFAULT_VOICE, "input": text, "response_format": response_format,
    }
    if speed != 1.0:
        body["speed"] = speed
    return body


def header_rate(headers: httpx2.Headers, default: int) -> int:
    """The rate of a raw PCM body: ``X-Sample-Rate`` where the server sends one, else ``default``."""
    value = headers.get("x-sample-rate", "")
    return int(value) if value.isdigit() and int(value) > 0 else default


class _SpeechStream:
    """One sentence's request; no I/O until ``pieces()`` runs (in the pool worker's thread)."""

    def __init__(self, client: OpenAISpeechClient, body: dict[str, object]) -> None:
        self._client = client
        self._body = body
        self._socket = Abortable()

    def abort(self) -> None:
        self._socket.abort()

    def pieces(self) -> Iterator[tuple[bytes, int]]:
        c = self._client
        if self._socket.aborted.is_set():
            return
        try:
            with c.http.stream("POST", c.url, json=self._body) as response:
                if not self._socket.attach_response(response):
                    return
                try:
                    _check_status(response, c.url)
                    decoder = PcmDecoder(c.response_format, header_rate(response.headers, c.pcm_rate))
                    for data in response.iter_bytes(READ_BYTES):
                        audio = decoder.feed(data)
                        if audio:
                            assert decoder.rate is not None
                            yield audio, decoder.rate
                    decoder.finish()
                finally:
                    self._socket.detach()
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise EngineError(f"the speech server at {c.url} failed: {describe(exc)}") from exc


def _check_status(response: httpx2.Response, url: str) -> None:
    if response.status_code == 200:
        return
    hint = {401: " (check tts.remote_api_key)", 403: " (check tts.remote_api_key)",
            404: " (check tts.endpoint and tts.remote_model)"}.get(response.status_code, "")
    raise EngineError(f"the speech server at {url} refused the request: {response_error(response)}{hint}")


class OpenAISpeechClient:
    """The ``RemoteSpeech`` client of ``tts.engine = "openai"``: shared by a pool's engines, thread-safe."""

    kind = "openai"

    def __init__(
        self, endpoint: str, *, model: str = "tts-1", response_format: Literal["pcm", "wav"] = "pcm",
        pcm_rate: int = 24000, api_key: str = "", connect_timeout_s: float = 5.0, read_timeout_s: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        """``pcm_rate``: Hz of a raw ``pcm`` body whose server sends no ``X-Sample-Rate``; timeouts in seconds."""
        self.url = api_url(endpoint, "audio/speech", "tts.endpoint")
        self.endpoint = self.url
        self.model = model
        self.response_format = response_format
        self.pcm_rate = pcm_rate
        self.http = pooled_client(
            api_key=api_key, accept="audio/*, application/json", connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s, max_connections=max_connections,
        )
        url = self.http.build_request("POST", self.url).url
        self.reach = Reachability(url.host, url.port or (443 if url.scheme == "https" else 80),
                                  timeout_s=min(2.0, connect_timeout_s))

    def open(self, text: str, voice: str, speed: float) -> _SpeechStream:
        return _SpeechStream(self, speech_body(self.model, voice, text, self.response_format, speed))

    def remote_status(self) -> dict[str, object]:
        return remote_health(self.kind, self.url, self.reach)

    def close(self) -> None:
        self.http.close()
