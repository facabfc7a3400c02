"""Remote endpoints as config gives them: checks and URL building, pure (no I/O, no client libraries).

The config schema validates ``*.endpoint`` values with these, so a malformed URL
stops start-up with the key's name instead of failing at the first call.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["api_url", "check_http_endpoint", "tcp_address"]


def check_http_endpoint(endpoint: str, key: str) -> str:
    """``endpoint`` stripped of spaces and a trailing ``/``; ValueError naming ``key`` unless http(s)://host[:port]."""
    url = endpoint.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number or out of range
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http(s) URL such as http://127.0.0.1:8880/v1, got {endpoint!r}")
    del port
    return url


def api_url(endpoint: str, path: str, key: str) -> str:
    """The URL of ``path`` (e.g. ``chat/completions``) under an OpenAI-style base URL given with or without ``/v1``."""
    url = check_http_endpoint(endpoint, key)
    if url.endswith("/" + path):
        return url
    if url.endswith("/v1"):
        return f"{url}/{path}"
    return f"{url}/v1/{path}"


def tcp_address(endpoint: str, key: str) -> tuple[str, int]:
    """(host, port) of ``tcp://host:port``; ValueError naming ``key`` for anything else."""
    hint = f"{key} must look like tcp://127.0.0.1:10200, got {endpoint!r}"
    try:
        parts = urlsplit(endpoint.strip())
        port = parts.port
    except ValueError:
        raise ValueError(hint) from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(hint)
    return parts.hostname, port
