"""LanguageModel over a remote OpenAI-compatible ``/v1/chat/completions`` endpoint.

The scale-out path: llama.cpp's server, vLLM or Ollama on a bigger box serve
every session of this process through one pooled HTTP client (httpx2, the
maintained continuation of httpx: sync streaming and separate connect/read
timeouts).

Failures before the first token are retried with exponential backoff and
jitter: nothing was said yet, so a retry cannot duplicate text. After the
first token a failure ends the reply with ``EngineError``. A circuit breaker
shared by all sessions counts failed requests (after their retries) and makes
calls fail fast while the endpoint is down.

Abort (barge-in, session close) comes from another thread: it sets the call's
event, which ends a backoff wait at once, and shuts the response's socket
down, which wakes the reading thread blocked in ``recv``. A call still waiting
for the response headers ends when they arrive (or at the read timeout).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx2

from voicechat.core.history import ChatMessage
from voicechat.engines.circuit_breaker import BreakerStats, CircuitBreaker, Permit
from voicechat.engines.endpoints import api_url, url_status
from voicechat.engines.protocols import EngineError, GenerationParams
from voicechat.engines.remote import Abortable, describe, error_message, pooled_client, response_error
from voicechat.llm.probe import ProbeCallback, report

log = logging.getLogger(__name__)

__all__ = ["OpenAIChatEngine", "OpenAIEngineStats", "RetryPolicy", "SseDecoder", "chat_url", "delta_text"]

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
DONE = "[DONE]"


# -- pure helpers ------------------------------------------------------------------
def chat_url(endpoint: str) -> str:
    """The chat completions URL for a base URL given with or without ``/v1``."""
    return api_url(endpoint, "chat/completions", key="llm.endpoint")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with +/- ``jitter`` (a fraction) so sessions do not retry in lockstep."""

    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    jitter: float = 0.25

    def delay(self, retry: int, rand: float) -> float:
        """Delay before retry number ``retry`` (1-based); ``rand`` is uniform in [0, 1)."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))


class SseDecoder:
    """Server-sent events, line by line: the ``data`` of each complete event.

    Multi-line data fields are joined with newlines as the SSE spec says;
    comments (``: ping``) and other fields are skipped.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """End of an event (blank line or end of stream)."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def delta_text(payload: str) -> str:
    """The text of one streamed chunk (``choices[0].delta.content``); errors raise EngineError."""
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise EngineError(f"The language model endpoint sent malformed data: {payload[:80]!r}") from exc
    if not isinstance(chunk, dict):
        raise EngineError(f"The language model endpoint sent unexpected data: {payload[:80]!r}")
    if "error" in chunk:
        raise EngineError(f"The language model endpoint reported an error: {error_message(chunk)}")
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta") or choices[0].get("message") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


def request_body(model: str, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, object]:
    """The JSON body; optional sampling fields only when set, for servers that reject unknown ones."""
    body: dict[str, object] = {
        "model": model,
        "messages": [m.as_dict() for m in messages],
        "stream": True,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    seed = getattr(params, "seed", None)
    if seed is not None and seed >= 0:
        body["seed"] = seed
    top_k = getattr(params, "top_k", 0)
    if top_k:
        body["top_k"] = top_k
    min_p = getattr(params, "min_p", 0.0)
    if min_p:
        body["min_p"] = min_p  # llama.cpp's server, vLLM and Ollama's OpenAI routes read it
    return body


# -- the engine ----------------------------------------------------------------------
class _Retryable(Exception):
    """A failure before the first token that a retry may cure."""


class _Call(Abortable):
    """One in-flight ``stream`` call of ``session_id``."""

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id


@dataclass(frozen=True, slots=True)
class OpenAIEngineStats:
    requests: int
    attempts: int
    retries: int
    aborted: int
    failed: int
    active: int
    breaker: BreakerStats


class OpenAIChatEngine:
    """A shared ``LanguageModel`` streaming from an OpenAI-compatible endpoint."""

    counts_own_failures = True  # retries and refused requests are not outages: callers report only hangs

    def __init__(
        self,
        endpoint: str,
        *,
        model: str,
        api_key: str = "",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        max_connections: int = 100,
        on_attempt: Callable[[str, int], None] | None = None,
        on_backoff: Callable[[str, int, float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = chat_url(endpoint)
        self.model = model
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker("language model")
        self._on_attempt = on_attempt  # (session_id, attempt): observability and tests
        self._on_backoff = on_backoff  # (session_id, retry, delay_s), just before the backoff wait
        self._rng = rng or random.Random()
        self._connect_timeout_s = connect_timeout_s
        self._client = pooled_client(
            api_key=api_key, accept="text/event-stream", connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s, max_connections=max_connections,
        )
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._closed = False
        self._counts = {"requests": 0, "attempts": 0, "retries": 0, "aborted": 0, "failed": 0}

    # -- LanguageModel ---------------------------------------------------------------
    def stream(
        self, session_id: str, messages: Sequence[ChatMessage], params: GenerationParams,
        on_end_of_message: ProbeCallback | None = None,
        lead: Callable[[], float] | None = None,
    ) -> Iterator[str]:
        """Register the call now (so an abort before the first ``next`` counts) and return its iterator.

        ``on_end_of_message`` gets None at once: the endpoint gives no prompt logits. ``lead`` is not
        used: the server schedules its own batch.
        """
        report(on_end_of_message, None)
        call = _Call(session_id)
        with self._lock:
            if self._closed:
                raise EngineError("The language model client is closed")
            previous = self._calls.get(session_id)
            self._calls[session_id] = call
            self._counts["requests"] += 1
        if previous is not None:
            previous.abort()  # one reply per session at a time
        return self._generate(call, request_body(self.model, messages, params))

    def abort(self, session_id: str) -> None:
        with self._lock:
            call = self._calls.get(session_id)
        if call is not None:
            call.abort()

    def warm(self, session_id: str, messages: Sequence[ChatMessage]) -> bool:
        """Nothing to prepare: the server keeps its own prompt cache, if any."""
        return False

    def discard(self, session_id: str) -> None:
        """Abort is enough: this client keeps nothing of a reply between calls (no KV, no tokens)."""
        self.abort(session_id)

    def release(self, session_id: str) -> None:
        with self._lock:
            call = self._calls.pop(session_id, None)
        if call is not None:
            call.abort()

    def remote_status(self) -> dict[str, object]:
        """For /health/detailed: where the model runs and whether it answers (a TCP connect)."""
        return {**url_status(self.url, min(1.0, self._connect_timeout_s)), "protocol": "openai", "model": self.model}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            calls, self._calls = list(self._calls.values()), {}
        for call in calls:
            call.abort()
        self._client.close()

    def stats(self) -> OpenAIEngineStats:
        with self._lock:
            c = dict(self._counts)
            active = len(self._calls)
        return OpenAIEngineStats(
            c["requests"], c["attempts"], c["retries"], c["aborted"], c["failed"], active, self.breaker.stats()
        )

    # -- internals -------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _generate(self, call: _Call, body: dict[str, object]) -> Iterator[str]:
        permit: Permit | None = None
        try:
            permit = self.breaker.acquire()
            yield from self._attempts(call, body, permit)
        finally:
            if permit is not None:
                permit.cancel()  # no-op once an outcome was reported
            if call.aborted.is_set():
                self._count("aborted")
            with self._lock:
                if self._calls.get(call.session_id) is call:
                    del self._calls[call.session_id]

    def _attempts(self, call: _Call, body: dict[str, object], permit: Permit) -> Iterator[str]:
        attempt = 0
        while not call.aborted.is_set():
            attempt += 1
            self._count("attempts")
            if self._on_attempt is not None:
                self._on_attempt(call.session_id, attempt)
            started = [False]  # set once text went out: from then on, never retry
            try:
                yield from self._one_request(call, body, permit, started)
                return
            except Exception as exc:
                if call.aborted.is_set():
                    return  # our own socket shutdown, or a failure nobody waits for any more
                reason = describe(exc)
                if started[0] or not isinstance(exc, _Retryable) or attempt > self.retry.retries:
                    self._count("failed")
                    if isinstance(exc, EngineError) and not started[0]:
                        permit.succeed()  # the endpoint answered: a request problem, not an outage
                        raise
                    permit.fail(reason)
                    if started[0]:
                        raise EngineError(f"The language model's reply broke off: {reason}") from exc
                    raise EngineError(
                        f"The language model at {self.url} failed after {attempt} attempts: {reason}"
                    ) from exc
                self.breaker.check()  # other sessions found it down meanwhile: stop retrying
                delay = self.retry.delay(attempt, self._rng.random())
                self._count("retries")
                log.warning("LLM request for %s failed (%s); retry %d in %.2f s", call.session_id, reason,
                            attempt, delay)
                if self._on_backoff is not None:
                    self._on_backoff(call.session_id, attempt, delay)
                if call.aborted.wait(delay):
                    return

    def _one_request(
        self, call: _Call, body: dict[str, object], permit: Permit, started: list[bool]
    ) -> Iterator[str]:
        try:
            with self._client.stream("POST", self.url, json=body) as response:
                if not call.attach_response(response):
                    return
                try:
                    self._check_status(response)
                    payloads = _payloads(response)
                    for data in payloads:
                        if call.aborted.is_set():
                            return
                        if data.strip() == DONE:
                            for _ in payloads:  # drain the chunked terminator so the connection is pooled again
                                pass
                            break
                        text = delta_text(data)
                        if text:
                            if not started[0]:
                                started[0] = True
                                permit.succeed()
                            yield text
                    permit.succeed()
                finally:
                    call.detach()
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise _Retryable(describe(exc)) from exc

    @staticmethod
    def _check_status(response: httpx2.Response) -> None:
        if response.status_code == 200:
            return
        message = response_error(response)
        if response.status_code in RETRY_STATUS:
            raise _Retryable(message)
        hint = " (check llm.api_key)" if response.status_code in (401, 403) else ""
        hint = hint or (" (check llm.model and llm.endpoint)" if response.status_code == 404 else "")
        raise EngineError(f"The language model endpoint refused the request: {message}{hint}")


def _payloads(response: httpx2.Response) -> Iterator[str]:
    """Each event's data; a server that ignored ``stream`` sends one JSON body, taken as one payload."""
    if "event-stream" not in response.headers.get("content-type", "event-stream"):
        yield response.read().decode("utf-8", errors="replace")
        return
    decoder = SseDecoder()
    for line in itertools.chain(response.iter_lines(), ("",)):  # the blank line flushes an unterminated event
        data = decoder.feed(line)
        if data is not None:
            yield data
