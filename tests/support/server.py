"""Running a real VoiceServer in the test process, and talking to it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from voicechat.server.client import VoiceClient
from voicechat.server.connection import ConnectionLimits
from voicechat.server.server import ServerConfig, VoiceServer
from voicechat.session.manager import SessionManager
from voicechat.session.pipeline import PipelineOptions

T = TypeVar("T")
TOKEN = "test-token-0123456789"


@contextmanager
def running_server(
    manager: SessionManager, data_dir: Path, *, options: PipelineOptions | None = None, **config: Any
) -> Iterator[VoiceServer]:
    config.setdefault("limits", ConnectionLimits())
    server = VoiceServer(
        manager, options or manager.options,
        ServerConfig(host=config.pop("host", "127.0.0.1"), port=0, tls=config.pop("tls", "off"), data_dir=str(data_dir),
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


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def server_process(data_dir: Path, *settings: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`python run.py --scripted` in its own process (no GIL shared with the test's clients).

    Yields the WebSocket URL (the OS picks the port; the banner names it) and the process.
    """
    cmd = [
        sys.executable, "run.py", "--scripted", "--no-tui", "--set", "server.host=127.0.0.1", "--set", "server.port=0",
        "--set", f"server.data_dir={data_dir}", "--set", f"server.token={TOKEN}", "--set", "logging.level=INFO",
    ]
    for setting in settings:
        cmd += ["--set", setting]
    env = {**os.environ, "VOICECHAT_SKIP_BOOTSTRAP": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := re.search(r"http://127\.0\.0\.1:(\d+)/", line):
                url = f"ws://127.0.0.1:{match.group(1)}/ws"
                break
        if url is None:
            proc.wait(timeout=10)
            raise AssertionError(f"server did not start: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def complete_turn(c: VoiceClient, text: str) -> dict[str, Any]:
    """Say ``text`` and play the whole reply (so it joins the history)."""
    replies = len(c.received.of_type("reply_done"))
    await c.send_json(type="text", text=text)
    done = (await c.wait_type("reply_done", n=replies + 1, timeout=60))[-1]
    await c.send_json(type="playback", generation=done["generation"], played_samples=done["total_samples"],
                      finished=True)
    after = c.received.messages.index(done)
    await c.wait_for(lambda r: last_state(r.messages[after:]) == "listening", timeout=30)
    return done


def last_state(messages: list[dict[str, Any]]) -> str | None:
    states = [m["state"] for m in messages if m.get("type") == "state_changed"]
    return states[-1] if states else None
