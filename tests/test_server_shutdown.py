"""`python run.py` as a process: SIGTERM with sessions mid-reply exits 0 quickly and leaves no thread."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from server_helpers import TOKEN

from voicechat.ws_client import VoiceClient

ROOT = Path(__file__).resolve().parent.parent


def test_sigterm_with_active_sessions_exits_0_within_10_s(tmp_path):
    cmd = [
        sys.executable, "run.py", "--scripted", "--set", "server.host=127.0.0.1", "--set", "server.port=0",
        "--set", f"server.data_dir={tmp_path}", "--set", f"server.token={TOKEN}",
        "--set", "llm.scripted_token_s=0.05", "--set", "llm.max_tokens=400", "--set", "logging.level=INFO",
    ]
    env = {**os.environ, "VOICECHAT_SKIP_BOOTSTRAP": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stdout:  # the banner names the port the OS picked
            if match := re.search(r"http://127\.0\.0\.1:(\d+)/", line):
                url = f"ws://127.0.0.1:{match.group(1)}/ws"
                break
        assert url, "no URL in the banner"

        async def talk_then_stop() -> list[VoiceClient]:
            clients = [VoiceClient(url, TOKEN) for _ in range(4)]
            for c in clients:
                await c.connect()
                await c.wait_type("session")
                await c.send_json(type="text", text="please talk for a long while")
            for c in clients:
                await c.wait_type("assistant_text_delta")
            proc.send_signal(signal.SIGTERM)
            for c in clients:
                await c.wait_closed(timeout=10)
            return clients

        started = time.monotonic()
        clients = asyncio.run(talk_then_stop())
        _out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert elapsed < 10
    for c in clients:
        assert c.received.close_code == 1001 and c.received.of_type("shutdown")
        assert not c.received.of_type("reply_done")  # they really were mid-reply
    assert "threads left: none" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
