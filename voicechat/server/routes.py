"""HTTP side of the one port: the page, its static files, health, metrics, and the WebSocket's door.

websockets hands every request to ``HttpRoutes.handle`` before any upgrade
(``process_request``); returning ``None`` lets the WebSocket handshake go on,
anything else is the HTTP answer. Only ``/ws`` can become a WebSocket, and only
from an allowed Origin (cross-site WebSocket hijacking), and only while its
address holds fewer than its share of connections (``admit_websocket``; 429).
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voicechat.server.access import origin_allowed, request_token, token_matches
from voicechat.server.address_limits import address_of
from voicechat.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from voicechat.server.metrics import ServerMetrics
from voicechat.server.tls import is_loopback

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json",
         ".png": "image/png", ".ico": "image/x-icon", ".webmanifest": "application/manifest+json"}
# 'self' covers same-origin ws:/wss: in current browsers; no inline script, no third-party anything.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; worker-src 'self'; media-src 'self' blob:; frame-ancestors 'none'"
    ),
}


def response(status: HTTPStatus, body: bytes | str, content_type: str = "text/plain; charset=utf-8",
             extra: dict[str, str] | None = None) -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(data)),
                       "Cache-Control": "no-cache", **SECURITY_HEADERS, **(extra or {})})
    return Response(status.value, status.phrase, headers, data)


def json_response(status: HTTPStatus, payload: object) -> Response:
    return response(status, json.dumps(payload, indent=1, default=str), "application/json")


def static_file(web_dir: Path, name: str) -> Path | None:
    """The file ``name`` inside ``web_dir``, or None for anything else (traversal, dirs, missing)."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        return None
    root = web_dir.resolve()
    try:
        path = (root / name).resolve()
    except (OSError, ValueError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


class HttpRoutes:
    """Answers plain HTTP requests; lets allowed ``/ws`` upgrades through."""

    def __init__(
        self,
        token: str,
        metrics: ServerMetrics,
        detailed_health: Callable[[], dict[str, object]],
        is_stopping: Callable[[], bool],
        allowed_origins: Sequence[str] = (),
        web_dir: Path = WEB_DIR,
        admit_websocket: Callable[[ServerConnection], bool] = lambda _connection: True,
        client_address: Callable[[ServerConnection], str] = lambda c: address_of(c.remote_address),
    ) -> None:
        self.token = token
        self.metrics = metrics
        self.detailed_health = detailed_health
        self.is_stopping = is_stopping
        self.allowed_origins = list(allowed_origins)
        self.web_dir = web_dir
        self.admit_websocket = admit_websocket
        self.client_address = client_address  # behind a trusted proxy, the forwarded client's

    async def handle(self, connection: ServerConnection, request: Request) -> Response | None:
        path = unquote(urlsplit(request.path).path)
        result = await self._route(connection, request, path)
        label = path if path in ("/", "/ws", "/health", "/health/detailed", "/metrics") else (
            "/static" if path.startswith("/static/") else "other")
        self.metrics.http.labels(label, "101" if result is None else str(result.status_code)).inc()
        return result

    async def _route(self, connection: ServerConnection, request: Request, path: str) -> Response | None:
        if path == "/ws":
            origin = request.headers.get("Origin")
            if not origin_allowed(origin, request.headers.get("Host"), self.allowed_origins):
                log.warning("refused WebSocket from origin %r (host %r)", origin, request.headers.get("Host"))
                return response(HTTPStatus.FORBIDDEN, "origin not allowed\n")
            if self.is_stopping():
                return response(HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down\n")
            if not self.admit_websocket(connection):
                return response(HTTPStatus.TOO_MANY_REQUESTS, "too many connections from your address\n",
                                extra={"Retry-After": "10"})
            return None
        if path == "/health":
            if self.is_stopping():
                return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "stopping"})
            return json_response(HTTPStatus.OK, {"status": "ok"})
        if path in ("/health/detailed", "/metrics"):
            if not self._authorized(connection, request):
                return response(HTTPStatus.UNAUTHORIZED, "token required (Authorization: Bearer or ?token=)\n",
                                extra={"WWW-Authenticate": 'Bearer realm="voicechat"'})
            if path == "/metrics":
                return response(HTTPStatus.OK, self.metrics.render(), METRICS_CONTENT_TYPE)
            # psutil and nvidia-smi can block for a moment: not on the event loop.
            return json_response(HTTPStatus.OK, await asyncio.to_thread(self.detailed_health))
        if path in ("/", "/index.html"):
            return self._file("index.html")
        if path.startswith("/static/"):
            return self._file(path[len("/static/"):])
        if path == "/favicon.ico":
            return response(HTTPStatus.NO_CONTENT, b"")
        return response(HTTPStatus.NOT_FOUND, "not found\n")

    def _authorized(self, connection: ServerConnection, request: Request) -> bool:
        if is_loopback(self.client_address(connection)):
            return True
        return token_matches(self.token, request_token(request.path, request.headers.get("Authorization")))

    def _file(self, name: str) -> Response:
        path = static_file(self.web_dir, name)
        if path is None:
            return response(HTTPStatus.NOT_FOUND, "not found\n")
        content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return response(HTTPStatus.OK, path.read_bytes(), content_type)
