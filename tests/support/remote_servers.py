"""Real speech-to-text servers on loopback for the remote engines' tests: started, stopped, restarted.

Each server is a child process on a random free port, serving the starter Whisper
(models/faster-whisper-tiny.en) offline: faster-whisper-server (the OpenAI audio
API) and wyoming-faster-whisper (Wyoming). A reader thread (owned here, joined
on stop) follows the server's log and sets ``ready`` at the line that says it
listens, so tests wait on an event rather than polling. ``stop`` kills the
process (SIGKILL, as a crash); ``start`` again serves on the same port.

The pytest fixtures (``openai_stt_server``, ``wyoming_stt_server``) are module-scoped; a
test module imports them by name. A server package that is not importable skips.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicechat.models.store import PROJECT_ROOT

WHISPER_DIR = PROJECT_ROOT / "models" / "faster-whisper-tiny.en"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SttServer:
    """One server process, restartable on its port."""

    def __init__(self, kind: str, module: str, argv: list[str], ready_marker: str, endpoint: str) -> None:
        self.kind = kind
        self.module = module
        self.argv = argv
        self.ready_marker = ready_marker
        self.endpoint = endpoint
        self.ready = threading.Event()
        self.log: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> SttServer:
        """Start the process and wait (on ``ready``) until it serves."""
        self.ready.clear()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process,), name=f"test-{self.kind}-log",
                                        daemon=True)
        self._reader.start()
        if not self.ready.wait(START_TIMEOUT_S) or not self._accepts():
            self.stop()
            raise AssertionError(f"{self.kind} server did not start within {START_TIMEOUT_S} s:\n"
                                 + "\n".join(self.log[-20:]))
        return self

    def _accepts(self, tries: int = 100) -> bool:
        """Its port takes connections (Wyoming logs "Ready" just before it binds: a few ms at most)."""
        host, port = self.endpoint.rsplit("/", 1)[-1].rsplit(":", 1)
        pause = threading.Event()  # never set: a bounded wait between tries
        for _ in range(tries):
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                return True
            except OSError:
                pause.wait(0.02)
        return False

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.log.append(line.rstrip())
            if self.ready_marker in line:
                self.ready.set()

    def stop(self) -> None:
        """Kill the process (no goodbye to its clients) and join its log reader."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
        if self._reader is not None:
            self._reader.join(10)
            self._reader = None


def openai_server(model_dir: Path = WHISPER_DIR) -> SttServer:
    """faster-whisper-server 0.0.3: a local model directory as its one model (loaded at the first request)."""
    port = free_port()
    return SttServer("openai", "faster_whisper_server",
                     [str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
                     "Uvicorn running", f"http://127.0.0.1:{port}")


def wyoming_server(data_dir: Path, model_dir: Path = WHISPER_DIR) -> SttServer:
    """wyoming-faster-whisper 3.8.1: the local model directory, faster-whisper, no download ever."""
    port = free_port()
    return SttServer("wyoming", "wyoming_faster_whisper",
                     ["--uri", f"tcp://127.0.0.1:{port}", "--model", str(model_dir), "--data-dir", str(data_dir),
                      "--stt-library", "faster-whisper", "--local-files-only", "--language", "en",
                      "--cpu-threads", "2"],
                     "Ready", f"tcp://127.0.0.1:{port}")


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (the remote STT server for these tests)")
    if not (WHISPER_DIR / "model.bin").is_file():
        pytest.fail(f"{WHISPER_DIR} has no model.bin: run `python3 run.py models download --set starter`",
                    pytrace=False)


@pytest.fixture(scope="module")
def openai_stt_server() -> Iterator[SttServer]:
    _needs("faster_whisper_server")
    server = openai_server().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wyoming_stt_server() -> Iterator[SttServer]:
    _needs("wyoming_faster_whisper")
    with tempfile.TemporaryDirectory(prefix="wyoming-stt-") as data_dir:
        server = wyoming_server(Path(data_dir)).start()
        yield server
        server.stop()
