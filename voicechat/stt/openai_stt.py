"""Speech to text from an OpenAI audio API server (``stt.engine = "openai"``).

``POST {endpoint}/v1/audio/transcriptions`` with the utterance as a multipart
WAV file (16 kHz, 16-bit mono) and ``response_format=json``; the answer's
``text`` is the transcript. Served by OpenAI itself, vLLM, faster-whisper-server,
speaches and others. One pooled ``httpx2`` client (the LLM's remote engine uses
the same library) keeps connections open between requests, with separate
connect and read timeouts; its pool is built by ``engines.remote.abortable_client``
so an aborted request's socket is shut down even while it waits for the
server's answer. A failed request is not retried here: the scheduler's
breaker counts it and the turn ends with ``stt_failed``.
"""

from __future__ import annotations

import json

import httpx2

from voicechat.engines.endpoints import api_url, url_status
from voicechat.engines.protocols import EngineError, SpeechInput
from voicechat.engines.remote import Abortable, abortable_client, aborting, describe, error_message
from voicechat.stt.remote import RemoteTranscriber, wav_bytes

PATH = "audio/transcriptions"


# -- pure helpers --------------------------------------------------------------------------------
def form_fields(model: str, language: str | None) -> dict[str, str]:
    """The request's form fields besides the file; ``model`` and ``language`` only when set."""
    fields = {"response_format": "json", "temperature": "0"}
    if model:
        fields["model"] = model
    if language:
        fields["language"] = language
    return fields


def transcript_text(status: int, body: bytes, url: str = "") -> str:
    """The transcript of a response with ``status`` and ``body``; EngineError for an error or odd body."""
    try:
        payload: object = json.loads(body) if body.strip() else {}
    except ValueError:
        payload = body.decode("utf-8", errors="replace")
    if status != 200:
        hint = {401: " (check stt.api_key)", 403: " (check stt.api_key)",
                404: " (check stt.endpoint and stt.remote_model)"}.get(status, "")
        raise EngineError(f"The speech recogniser at {url} refused the request: HTTP {status}: "
                          f"{error_message(payload)}{hint}")
    if isinstance(payload, str):  # response_format text, from a server that ignored ours
        return payload.strip()
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise EngineError(f"The speech recogniser at {url} sent no transcript: {str(payload)[:120]!r}")
    return payload["text"].strip()


# -- the engine ------------------------------------------------------------------------------------
class OpenAITranscriber(RemoteTranscriber):
    """A ``BatchTranscriber`` (and ``AbortableTranscriber``) over an OpenAI audio transcription endpoint."""

    def __init__(
        self,
        endpoint: str,
        *,
        model: str = "",
        api_key: str = "",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        url = api_url(endpoint, PATH, key="stt.endpoint")
        super().__init__(url, concurrency=concurrency, name="stt-openai")
        self.url = url
        self.model = model
        self._connect_timeout_s = connect_timeout_s
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = abortable_client(max_connections=concurrency, connect_timeout_s=connect_timeout_s,
                                        read_timeout_s=read_timeout_s, headers=headers)

    def transcribe_one(self, item: SpeechInput, call: Abortable) -> str:
        files = {"file": ("speech.wav", wav_bytes(item.audio), "audio/wav")}
        with aborting(call):
            try:
                response = self._client.post(self.url, files=files, data=form_fields(self.model, item.language))
            except httpx2.HTTPError as exc:
                raise EngineError(f"The speech recogniser at {self.url} failed: {describe(exc)}") from exc
        return transcript_text(response.status_code, response.content, self.url)

    def remote_status(self) -> dict[str, object]:
        status = url_status(self.url, min(1.0, self._connect_timeout_s))
        return {**status, "protocol": "openai", "model": self.model or None}

    def close(self) -> None:
        super().close()
        self._client.close()
