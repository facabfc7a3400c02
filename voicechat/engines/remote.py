"""What the remote engines of every stage share: aborting a blocked call, error texts, the health hook.

Abort. A call blocked in ``recv`` on another thread is woken by shutting its
socket down (``Abortable``). A plain socket is attached by its owner; an HTTP
request through a pooled ``httpx2`` client cannot see its socket, so
``abortable_client`` gives the client's connection pool a network backend whose
streams attach themselves, on every read and write, to the call the current
thread runs under ``aborting(call)``. That covers the wait for the response
headers too (where a remote STT or TTS server spends its time), and a
connection whose call was aborted is broken and never goes back to the pool.

The health hook (``RemoteEngine``, ``tcp_status``) is in ``endpoints``, free of HTTP libraries.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore2
import httpx2

_current = threading.local()  # .call: the Abortable this thread's HTTP request belongs to


class Abortable:
    """One in-flight remote call that another thread may abort (thread-safe).

    ``abort`` sets ``aborted`` and shuts the attached socket down, which wakes a
    reader blocked in ``recv``; the lock orders that against ``detach``, so a
    socket handed back to a pool is never shut down by a late abort.
    """

    def __init__(self) -> None:
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def attach(self, sock: socket.socket | None) -> bool:
        """Make ``sock`` the call's socket; False if the call was aborted already (do not use it)."""
        with self._lock:
            if self.aborted.is_set():
                return False
            self._sock = sock
            return True

    def attach_response(self, response: httpx2.Response) -> bool:
        """Attach a streamed response's socket (``attach``), so ``abort`` wakes its reader."""
        stream = response.extensions.get("network_stream")
        return self.attach(stream.get_extra_info("socket") if stream is not None else None)

    def detach(self) -> None:
        with self._lock:
            self._sock = None

    def abort(self) -> None:
        with self._lock:
            self.aborted.set()
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its owner


@contextmanager
def aborting(call: Abortable) -> Iterator[Abortable]:
    """Run this thread's requests through an ``abortable_client`` as ``call`` (detached on exit)."""
    _current.call = call
    try:
        yield call
    finally:
        _current.call = None
        call.detach()


class _TrackedStream(httpcore2.NetworkStream):
    """A pooled connection's stream that attaches itself to the call the current thread runs."""

    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def _bind(self) -> None:
        call: Abortable | None = getattr(_current, "call", None)
        if call is not None and not call.attach(self._stream.get_extra_info("socket")):
            raise httpcore2.ReadError("the call was aborted")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._bind()
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._bind()
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        return _TrackedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _TrackingBackend(httpcore2.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        return _TrackedStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        return _TrackedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def pooled_client(
    *, api_key: str = "", accept: str = "*/*", connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0,
    max_connections: int = 100,
) -> httpx2.Client:
    """One client for all calls to an endpoint: kept-alive connections, a bearer token when ``api_key`` is set.

    ``read_timeout_s`` bounds each wait for the server's next bytes (seconds), so a stalled stream ends
    with ``httpx2.ReadTimeout`` instead of hanging. A streamed response's reader is aborted through
    ``Abortable.attach_response``; to abort the wait for the headers too, use ``abortable_client``.
    """
    headers = {"Accept": accept}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx2.Client(
        headers=headers,
        timeout=httpx2.Timeout(read_timeout_s, connect=connect_timeout_s),
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


def abortable_client(*, max_connections: int, connect_timeout_s: float, read_timeout_s: float,
                     headers: dict[str, str] | None = None) -> httpx2.Client:
    """A pooled httpx2 client whose requests made under ``aborting(call)`` stop when ``call`` is aborted."""
    transport = httpx2.HTTPTransport(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    pool = getattr(transport, "_pool", None)
    if not hasattr(pool, "_network_backend"):  # httpx2's internals moved: say so rather than lose abort
        raise RuntimeError("httpx2's connection pool has no _network_backend: update voicechat/engines/remote.py")
    pool._network_backend = _TrackingBackend()  # type: ignore[union-attr]
    return httpx2.Client(
        transport=transport, headers=headers,
        timeout=httpx2.Timeout(read_timeout_s, connect=connect_timeout_s),
    )


# -- error texts ---------------------------------------------------------------------------------
def error_message(body: object) -> str:
    """The human part of an error body: OpenAI ``error.message``, FastAPI ``detail``, or the text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if err:
            return str(err)
        detail = body.get("detail")
        if isinstance(detail, dict):
            return error_message(detail)
        if detail:
            return str(detail)
    return str(body)[:200]


def response_error(response: httpx2.Response) -> str:
    """``HTTP <status>: <the body's human part>`` of a response that was not 200 (reads its body)."""
    response.read()
    try:
        detail = error_message(response.json())
    except ValueError:
        detail = response.text[:200]
    return f"HTTP {response.status_code}: {detail}"


def describe(exc: BaseException) -> str:
    """A short reason for a failed request, for logs and the breaker's last error."""
    if isinstance(exc, httpx2.ConnectError | ConnectionRefusedError):
        return f"cannot connect ({exc})"
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__
