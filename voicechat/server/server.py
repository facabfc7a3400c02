"""VoiceServer: the one port (page, health, metrics, WebSocket) on an asyncio loop in its own thread.

The rest of the process (sessions' worker threads, the terminal UI, the main
thread waiting for a signal) stays synchronous; the loop only moves bytes
between sockets and session queues. ``start()`` returns once the port is
bound (or raises ``ServerError`` saying why); ``stop()`` tells every client
(``shutdown`` then close 1001), stops the loop and joins its thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage
from websockets.protocol import State

from voicechat.engines.endpoints import remote_status_of
from voicechat.engines.thread_names import EVENT_LOOP, set_native_name
from voicechat.server.access import default_data_dir, join_urls, load_or_create_token
from voicechat.server.address_limits import AddressGuard, AuthBackoff, ConnectionCap, TrustedProxies
from voicechat.server.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    ClientConnection,
    ConnectionLimits,
    close_or_abort,
)
from voicechat.server.health import GpuProbe, system_health
from voicechat.server.metrics import ServerMetrics, engine_breakers
from voicechat.server.protocol import encode_message
from voicechat.server.routes import HttpRoutes
from voicechat.server.tls import (
    cert_fingerprint,
    ensure_self_signed,
    host_names,
    is_loopback,
    lan_addresses,
    server_ssl_context,
    tls_enabled,
)
from voicechat.session.manager import SessionManager
from voicechat.session.pipeline import PipelineOptions

log = logging.getLogger(__name__)


class _QuietHandshakeFailures(logging.Filter):
    """Clients that leave mid-handshake or send malformed HTTP are not server errors: one line, no traceback.

    Browsers open speculative connections and drop them; scanners send anything.
    Exceptions raised by our own code (routes) keep their traceback.
    """

    CLIENT_SIDE = (ConnectionClosed, InvalidMessage, InvalidHandshake, EOFError, TimeoutError, ssl.SSLError,
                   ConnectionError)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "opening handshake failed" or not record.exc_info:
            return True
        error = record.exc_info[1]
        if isinstance(error, self.CLIENT_SIDE):
            cause = error.__cause__ if error is not None else None
            log.info("refused a connection: %s%s", error, f" ({cause})" if cause else "")
            return False
        return True


class ServerError(Exception):
    """The server could not start; the message says why and what to change."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    tls: str = "auto"
    cert_file: str = ""
    key_file: str = ""
    token: str = ""
    data_dir: str = ""
    allowed_origins: tuple[str, ...] = ()
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    models: dict[str, str] = field(default_factory=dict)
    shutdown_timeout_s: float = 3.0
    max_connections_per_address: int = 32
    auth_delay_s: float = 0.5
    auth_delay_max_s: float = 10.0
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-For is believed


class VoiceServer:
    """Owns the event loop thread, the listening socket and every client connection."""

    def __init__(self, manager: SessionManager, options: PipelineOptions, config: ServerConfig) -> None:
        self.manager, self.options, self.config = manager, options, config
        self.metrics = ServerMetrics(manager)
        self.data_dir: Path = default_data_dir(config.data_dir)
        self.token = ""
        self.ssl: ssl.SSLContext | None = None
        self.cert_file: Path | None = None
        self.port = config.port
        self.started_at = time.time()
        self.stopping = threading.Event()
        self._gpu = GpuProbe()
        self._process = psutil.Process()  # cpu_percent is measured between calls on one Process
        self._connections: set[ServerConnection] = set()
        self.guard = AddressGuard(ConnectionCap(config.max_connections_per_address),
                                  AuthBackoff(config.auth_delay_s, config.auth_delay_max_s),
                                  proxies=TrustedProxies.parse(config.trusted_proxies))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ws_log = logging.getLogger("voicechat.server.websockets")
        if not any(isinstance(f, _QuietHandshakeFailures) for f in self._ws_log.filters):
            self._ws_log.addFilter(_QuietHandshakeFailures())

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self.token = load_or_create_token(self.data_dir, self.config.token)
        self.ssl = self._tls_context()
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="ws-server", daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(timeout=30)
        except OSError as err:
            self._thread.join(timeout=5)
            raise ServerError(
                f"cannot listen on {self.config.host}:{self.config.port}: {err.strerror or err} "
                "(set server.port or server.host, e.g. --set server.port=8766)"
            ) from None
        log.info("listening on %s", ", ".join(self.urls(with_token=False)))

    def stop(self) -> None:
        """Stop accepting, tell clients, close connections, end the loop thread. Idempotent."""
        self.stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=self.config.shutdown_timeout_s + 5)
            if self._thread.is_alive():
                log.error("server thread did not stop")

    # -- addresses -------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.ssl is not None else "http"

    def urls(self, with_token: bool = True) -> list[str]:
        host = self.config.host
        urls = join_urls(self.scheme, host, self.port, self.token, lan_addresses())
        return urls if with_token else [u.split("#", 1)[0] for u in urls]

    def _tls_context(self) -> ssl.SSLContext | None:
        if not tls_enabled(self.config.tls, self.config.host):
            return None
        if self.config.cert_file or self.config.key_file:
            if not (self.config.cert_file and self.config.key_file):
                raise ServerError("server.cert_file and server.key_file must be set together")
            cert, key = Path(self.config.cert_file).expanduser(), Path(self.config.key_file).expanduser()
        else:
            cert, key = ensure_self_signed(self.data_dir, host_names(), lan_addresses())
        self.cert_file = cert
        return server_ssl_context(cert, key)

    # -- the loop thread ------------------------------------------------------------
    def _run(self, ready: Future[int]) -> None:
        set_native_name(EVENT_LOOP)
        try:
            asyncio.run(self._main(ready))
        except BaseException as err:  # noqa: BLE001 - reported to start() or logged, never lost
            if not ready.done():
                ready.set_exception(err)
            else:
                log.exception("server loop failed")

    async def _main(self, ready: Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        routes = HttpRoutes(self.token, self.metrics, self.detailed_health, self.stopping.is_set,
                            self.config.allowed_origins, admit_websocket=self._admit_websocket,
                            client_address=self.guard.address_of)
        limits = self.config.limits
        async with websockets.serve(
            self._handle, self.config.host, self.config.port, ssl=self.ssl,
            process_request=routes.handle, server_header="voicechat", logger=self._ws_log,
            max_size=limits.max_frame_bytes, max_queue=64, compression=None,
            ping_interval=20, ping_timeout=20, close_timeout=limits.close_timeout_s,
        ) as server:
            ready.set_result(self._bound_port(server))
            if self.stopping.is_set():  # stop() came before the loop existed
                self._stop.set()
            await self._stop.wait()
            await self._shutdown(server)

    def _bound_port(self, server: Server) -> int:
        for sock in server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        return self.config.port

    async def _shutdown(self, server: Server) -> None:
        self.stopping.set()
        server.close(close_connections=False)  # no new connections from here on

        timeout = self.config.shutdown_timeout_s / 2  # to send the goodbye, then to close

        async def goodbye(ws: ServerConnection) -> None:
            try:  # a client that does not read must not hold up the others (or the exit)
                await asyncio.wait_for(ws.send(encode_message("shutdown", reason="server shutting down")), timeout)
            except Exception:  # noqa: BLE001 - a client gone already is fine
                pass
            await close_or_abort(ws, CLOSE_GOING_AWAY, "server shutting down", timeout)

        pending = [goodbye(ws) for ws in list(self._connections)]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), self.config.shutdown_timeout_s)
            except TimeoutError:
                log.warning("some clients did not close within %.1f s", self.config.shutdown_timeout_s)
        for ws in list(self._connections):  # a goodbye cut short by the timeout above has not aborted yet
            if _still_open(ws):
                ws.transport.abort()
        try:
            await asyncio.wait_for(server.wait_closed(), self.config.shutdown_timeout_s)
        except TimeoutError:
            log.warning("connections still open after %.1f s; abandoning them", self.config.shutdown_timeout_s)

    def _admit_websocket(self, ws: ServerConnection) -> bool:
        """Reserve one of the address's connection slots (released when ``_handle`` ends)."""
        address = self.guard.address_of(ws)
        admitted = self.guard.cap.admit(address, ws, is_open=_still_open)
        if not admitted:
            log.warning("refused a WebSocket from %s: %d connections open from there already",
                        address, self.guard.cap.limit)
        return admitted

    async def _handle(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        try:
            await ClientConnection(
                ws, self.manager, self.options, self.token, self.metrics, self.config.limits, self.stopping,
                self.guard,
            ).serve()
        except Exception:
            log.exception("connection from %s failed", self.guard.address_of(ws))
            await close_or_abort(ws, CLOSE_INTERNAL, "internal error", self.config.limits.close_timeout_s)
        finally:
            self._connections.discard(ws)
            self.guard.cap.release(self.guard.address_of(ws), ws)
            self.metrics.connections.dec()

    # -- health ------------------------------------------------------------------------
    def detailed_health(self) -> dict[str, object]:
        engines = self.manager.engines
        breakers = engine_breakers(engines)
        engine_info = {}
        for stage, engine in (("stt", engines.transcriber), ("llm", engines.llm), ("tts", engines.tts)):
            stats = breakers[stage].stats() if stage in breakers else None
            engine_info[stage] = {
                "engine": type(engine).__name__,
                "circuit": stats.state.value if stats else "none",
                "circuit_detail": None if stats is None else {
                    "failures_in_window": stats.failures_in_window, "opened_total": stats.opened_total,
                    "retry_after_s": round(stats.retry_after_s, 1), "last_error": stats.last_error,
                },
                "remote": remote_status_of(engine),  # endpoint and reachable, for engines on another server
            }
        return {
            "status": "stopping" if self.stopping.is_set() else "ok",
            "uptime_s": round(time.time() - self.started_at, 1),
            "server": {
                "scheme": self.scheme, "port": self.port, "connections": len(self._connections),
                "refused_per_address_cap": self.guard.cap.refused,
                "addresses_with_wrong_tokens": len(self.guard.backoff),
                "certificate_sha256": cert_fingerprint(self.cert_file) if self.cert_file else None,
            },
            "sessions": self.manager.snapshot(),
            "models": self.config.models,
            "engines": engine_info,
            "load_s": engines.extra.get("load_s", {}),
            "system": system_health(self.data_dir, gpu_probe=self._gpu, process=self._process),
        }

    def is_local_only(self) -> bool:
        return is_loopback(self.config.host)


def _still_open(ws: object) -> bool:
    return getattr(ws, "state", State.CLOSED) is not State.CLOSED
