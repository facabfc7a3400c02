"""What the remote HTTP engines share: one pooled httpx2 client, error text, abortable response sockets.

httpx2 (the maintained continuation of httpx) gives sync streaming with
separate connect and read timeouts, and a connection pool that every session's
calls share. Abort comes from another thread: ``StreamSocket.abort`` shuts the
response's socket down, which wakes the thread blocked reading it at once.
"""

from __future__ import annotations

import socket
import threading

import httpx2

__all__ = ["StreamSocket", "describe", "error_message", "pooled_client"]


def pooled_client(
    *, api_key: str = "", accept: str = "*/*", connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0,
    max_connections: int = 100,
) -> httpx2.Client:
    """One client for all calls to an endpoint: kept-alive connections, a bearer token when ``api_key`` is set.

    ``read_timeout_s`` bounds each wait for the server's next bytes (seconds), so a stalled stream ends
    with ``httpx2.ReadTimeout`` instead of hanging.
    """
    headers = {"Accept": accept}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx2.Client(
        headers=headers,
        timeout=httpx2.Timeout(read_timeout_s, connect=connect_timeout_s),
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


def error_message(body: object) -> str:
    """The human part of an error body: OpenAI ``error.message``, FastAPI ``detail``, or the text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if err:
            return str(err)
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:200]


def describe(exc: BaseException) -> str:
    """A failure of an HTTP call in a few words."""
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect ({exc})"
    if isinstance(exc, httpx2.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


class StreamSocket:
    """The socket of one streamed response, so another thread can abort the read; the lock orders abort
    against attach/detach."""

    def __init__(self) -> None:
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def attach(self, response: httpx2.Response) -> bool:
        """Remember the response's socket; False if the call was aborted already (then do not read)."""
        stream = response.extensions.get("network_stream")
        with self._lock:
            if self.aborted.is_set():
                return False
            self._sock = stream.get_extra_info("socket") if stream is not None else None
            return True

    def detach(self) -> None:
        with self._lock:
            self._sock = None

    def abort(self) -> None:
        """From any thread: flag the call and wake its reader blocked in ``recv``."""
        with self._lock:
            self.aborted.set()
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its owner
