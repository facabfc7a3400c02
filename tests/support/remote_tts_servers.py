"""Real remote TTS servers for tests, on loopback at random free ports, with the starter Piper voice (joe).

- ``wyoming_piper``: wyoming-piper 2.5 (``python -m wyoming_piper``); ``--data-dir`` holds the voice
  files, so it loads them offline (it downloads only voices missing there).
- ``local_tts_studio``: local-tts-studio 1.0 (``python -m local_tts.cli``), an OpenAI-compatible
  ``/v1/audio/speech``; its settings.json points ``voices_dir`` at the voice and makes joe the API's
  default voice. It answers when the whole sentence is made (no streaming); ``pcm`` is at the voice's
  rate, given in ``X-Sample-Rate``.

loudness-tts 0.1.1 cannot serve here: ``loudness-tts serve --offline -v .../en_US-joe-medium.onnx`` starts
and loads the file, but every request resolves its voice through the package's catalogue first
(``server.py``: ``find_voice(options["voice"] or "auto")``), which lacks joe: no voice field gives
503 OFFLINE (the catalogue's best en-US voice is not downloaded), any other 400 VOICE_NOT_FOUND.

``RemoteServer.kill()`` ends the process at once (SIGKILL: a server dying mid-reply) and ``start()``
brings it back on the same port. Readiness is a TCP connect that succeeds, retried until a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicechat.models.store import PROJECT_ROOT

VOICE = "en_US-joe-medium"
VOICE_DIR = PROJECT_ROOT / "models" / "piper"
START_TIMEOUT_S = 60.0  # loading the voice on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int, timeout_s: float = 0.5) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


class RemoteServer:
    """One server process on one port; ``start``/``kill``/``stop`` may repeat."""

    def __init__(self, name: str, args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.args, self.port, self.log = name, args, port, log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._tick = threading.Event()  # never set: a wait with a timeout between readiness checks

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen on {self.port} in {START_TIMEOUT_S} s: "
                                   f"{self.log.read_text()[-2000:]}")
            self._tick.wait(0.1)

    def kill(self) -> None:
        """SIGKILL the server's process group and reap it: connections drop mid-reply."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _need_voice() -> None:
    if not (VOICE_DIR / f"{VOICE}.onnx").is_file():
        pytest.fail(f"{VOICE_DIR / VOICE}.onnx is missing: `python3 run.py models download --set starter`",
                    pytrace=False)


def wyoming_piper(tmp: Path) -> RemoteServer:
    _need_voice()
    port = free_port()
    args = [sys.executable, "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{port}", "--voice", VOICE,
            "--data-dir", str(VOICE_DIR), "--download-dir", str(tmp)]
    return RemoteServer("wyoming-piper", args, port, tmp / "wyoming-piper.log")


def local_tts_studio(tmp: Path) -> RemoteServer:
    _need_voice()
    pytest.importorskip("local_tts", reason="local-tts-studio is a test extra (pip install -e '.[test]')")
    port = free_port()
    data = tmp / "local-tts"
    data.mkdir(exist_ok=True)
    (data / "settings.json").write_text(json.dumps({"voices_dir": str(VOICE_DIR), "api_default_voice": VOICE,
                                                    "device": "cpu"}))
    args = [sys.executable, "-m", "local_tts.cli", "--host", "127.0.0.1", "--port", str(port)]
    return RemoteServer("local-tts-studio", args, port, tmp / "local-tts.log", env={"LOCAL_TTS_DATA_DIR": str(data)})


def running(server: RemoteServer) -> Iterator[RemoteServer]:
    """Start ``server`` for a fixture and stop it after."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    yield from running(wyoming_piper(tmp_path_factory.mktemp("wyoming")))


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    yield from running(local_tts_studio(tmp_path_factory.mktemp("openai-tts")))
