"""Running a real VoiceServer in the test process, and talking to it."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from voicechat.pipeline import PipelineOptions
from voicechat.server import ServerConfig, VoiceServer
from voicechat.server.connection import ConnectionLimits
from voicechat.session_manager import SessionManager
from voicechat.ws_client import VoiceClient

T = TypeVar("T")
TOKEN = "test-token-0123456789"


@contextmanager
def running_server(
    manager: SessionManager, data_dir: Path, *, options: PipelineOptions | None = None, **config: Any
) -> Iterator[VoiceServer]:
    config.setdefault("limits", ConnectionLimits())
    server = VoiceServer(
        manager, options or manager.options,
        ServerConfig(host="127.0.0.1", port=0, tls=config.pop("tls", "off"), data_dir=str(data_dir),
                     token=config.pop("token", TOKEN), **config),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ws_url(server: VoiceServer) -> str:
    return f"{'wss' if server.ssl else 'ws'}://127.0.0.1:{server.port}/ws"


def client(server: VoiceServer, token: str | None = TOKEN, **kwargs: Any) -> VoiceClient:
    return VoiceClient(ws_url(server), token, **kwargs)


def http_get(server: VoiceServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_json(server: VoiceServer, path: str) -> dict[str, Any]:
    status, body = http_get(server, path)
    assert status == 200, (status, body)
    return json.loads(body)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
