"""Remote engines' endpoints: parsing and checking a configured URL, API paths (pure), and reachability.

Shared by the config schema (a bad URL is a config error naming its key) and the
remote engines of every stage (LLM, STT, TTS), so all read addresses the same way.

Health hook: an engine served by another process offers ``remote_status()`` (the
``RemoteEngine`` protocol, e.g. from ``tcp_status``); ``remote_status_of`` finds it
on a stage's engine or on the model its scheduler fronts, for ``/health/detailed``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

HTTP_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
EXAMPLES = {"http": "http://127.0.0.1:8000", "https": "https://host:443", "tcp": "tcp://127.0.0.1:10300"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed endpoint: ``scheme://host:port/path`` (path without its trailing slash)."""

    scheme: str
    host: str
    port: int
    path: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_endpoint(value: str, *, key: str, schemes: tuple[str, ...]) -> Endpoint:
    """``value`` as an Endpoint of one of ``schemes``; ValueError naming ``key`` and what is allowed.

    http(s) may leave the port out (80/443); other schemes (tcp) need it.
    """
    text = value.strip()
    examples = " or ".join(EXAMPLES.get(s, f"{s}://host:port") for s in schemes)
    article = "an" if schemes[0][0] in "aehiou" else "a"
    problem = f"{key} must be {article} {' or '.join(schemes)} URL such as {examples}, got {value!r}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(problem)
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme)
        if port is None:
            raise ValueError(f"{problem} (the port is missing)")
    path = parts.path.rstrip("/")
    if path and parts.scheme not in HTTP_SCHEMES:
        raise ValueError(f"{problem} (no path after the port)")
    return Endpoint(parts.scheme, parts.hostname, port, path)


def api_url(endpoint: str, path: str, key: str) -> str:
    """The URL of OpenAI API ``path`` (e.g. ``audio/transcriptions``) under a base URL.

    The base may be given with or without ``/v1``, or be the whole URL already.
    ValueError (naming ``key``) for anything but an http(s) URL.
    """
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{key} must be an http(s) URL such as http://127.0.0.1:8080/v1, got {endpoint!r}")
    if url.endswith("/" + path):
        return url
    if url.endswith("/v1"):
        return f"{url}/{path}"
    return f"{url}/v1/{path}"


def tcp_address(endpoint: str, key: str) -> tuple[str, int]:
    """(host, port) of ``tcp://host:port``; ValueError naming ``key`` for anything else."""
    parsed = parse_endpoint(endpoint, key=key, schemes=("tcp",))
    return parsed.host, parsed.port


# -- health --------------------------------------------------------------------------------------
@runtime_checkable
class RemoteEngine(Protocol):
    """An engine served by another process: what ``/health/detailed`` shows of it."""

    def remote_status(self) -> dict[str, object]:
        """JSON-ready: at least ``endpoint`` and ``reachable`` (bool), ``error`` (str or None)."""
        ...


def probe_tcp(host: str, port: int, timeout_s: float = 1.0) -> str | None:
    """Whether a TCP connection to ``host:port`` opens within ``timeout_s``: None if so, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"cannot connect ({exc})" if str(exc) else type(exc).__name__


def tcp_status(endpoint: str, host: str, port: int, timeout_s: float = 1.0) -> dict[str, object]:
    """``remote_status`` of an engine at ``host:port`` (a TCP connect, at most ``timeout_s`` seconds)."""
    error = probe_tcp(host, port, timeout_s)
    return {"endpoint": endpoint, "reachable": error is None, "error": error}


def url_status(url: str, timeout_s: float = 1.0) -> dict[str, object]:
    """``remote_status`` of an engine at an http(s) ``url`` (a TCP connect to its host and port)."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    return tcp_status(url, parts.hostname or "", port, timeout_s)


def remote_status_of(engine: object) -> dict[str, object] | None:
    """The remote status of a stage's engine, of the model its scheduler fronts or of the client its pool
    shares (``remote``); None if local."""
    for candidate in (engine, getattr(engine, "model", None), getattr(engine, "remote", None)):
        if isinstance(candidate, RemoteEngine):
            try:
                return candidate.remote_status()
            except Exception as exc:  # noqa: BLE001 - health must never break on one engine
                return {"reachable": False, "error": str(exc) or type(exc).__name__}
    return None
