"""The server under test for `bench load`: `run.py` in its own process, watched from outside.

The server runs exactly as `python run.py --no-tui` does (same code path as
`serve`), in a separate process so the benchmark's clients do not share its
GIL. Its CPU, memory and threads are read with psutil; its queue evictions,
sessions and turns from its own `/metrics` (loopback needs no token).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


# First part of the names of the threads each session owns (its stage workers and RealtimeSTT's).
SESSION_THREADS = {"capture", "stt", "llm", "tts", "local"}


class ServerStartError(RuntimeError):
    """The server process exited or never printed its URL."""


class BenchServer:
    """``with BenchServer(data_dir, settings) as server: server.ws_url ...``"""

    def __init__(self, data_dir: Path, settings: dict[str, str], scripted: bool, start_timeout_s: float = 120.0):
        self.data_dir = data_dir
        self.token = secrets.token_urlsafe(16)
        self.settings = {
            "server.host": "127.0.0.1", "server.port": "0", "server.data_dir": str(data_dir),
            "server.token": self.token, "server.tls": "off", "logging.level": "WARNING", **settings,
        }
        self.scripted = scripted
        self.start_timeout_s = start_timeout_s
        self.http_url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.process: psutil.Process | None = None
        self._drainers: list[threading.Thread] = []
        self._stderr_tail: list[str] = []

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http://", "ws://") + "ws"

    def __enter__(self) -> BenchServer:
        cmd = [sys.executable, str(ROOT / "run.py"), "--no-tui"] + (["--scripted"] if self.scripted else [])
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        env = {**os.environ, "VOICECHAT_SKIP_BOOTSTRAP": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._drain(self.proc.stderr, self._stderr_tail)
        deadline = time.monotonic() + self.start_timeout_s
        for line in self.proc.stdout:  # the banner names the URL once the server listens
            if match := re.search(r"(http://127\.0\.0\.1:\d+/)", line):
                self.http_url = match.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.http_url:
            self.__exit__(None, None, None)
            raise ServerStartError("the server did not start:\n" + "".join(self._stderr_tail[-30:]))
        self._drain(self.proc.stdout, [])
        self.process = psutil.Process(self.proc.pid)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for thread in self._drainers:
            thread.join(timeout=5)

    def _drain(self, stream: IO[str], keep: list[str]) -> None:
        """Read a pipe to its end so the server never blocks on a full one; keep its last lines."""

        def run() -> None:
            for line in stream:
                keep.append(line)
                del keep[:-200]

        thread = threading.Thread(target=run, name="bench-server-pipe", daemon=True)
        thread.start()
        self._drainers.append(thread)

    # -- observation -------------------------------------------------------------
    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stderr_tail(self, lines: int = 30) -> str:
        return "".join(self._stderr_tail[-lines:])

    def rss_mb(self) -> float:
        assert self.process is not None
        return self.process.memory_info().rss / 2**20

    def threads(self) -> int:
        assert self.process is not None
        return self.process.num_threads()

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = self.process.cpu_times()
        return times.user + times.system

    def thread_cpu(self) -> dict[int, tuple[str, float]]:
        """The server's live threads: OS thread id -> (OS name, CPU seconds). Names: ``engines/thread_names.py``."""
        assert self.process is not None
        found: dict[int, tuple[str, float]] = {}
        for thread in self.process.threads():
            try:
                name = Path(f"/proc/{self.process.pid}/task/{thread.id}/comm").read_text().strip()
            except OSError:
                continue  # ended meanwhile
            found[thread.id] = (name, thread.user_time + thread.system_time)
        return found

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        with urllib.request.urlopen(self.http_url + path.lstrip("/"), timeout=timeout) as response:
            return response.read()

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``name{label=value,...}`` -> value."""
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(self.get("metrics").decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return found

    def health(self) -> dict[str, object]:
        return json.loads(self.get("health/detailed"))

    def python_threads(self) -> dict[str, int]:
        """The server's Python threads per group (``/health/detailed``), ids stripped from the names."""
        system = self.health()["system"]
        return dict(system["threads"]["names"])  # type: ignore[index]

    def settled_threads(self, timeout: float = 15.0, interval: float = 0.25) -> dict[str, int]:
        """Python threads once no session's threads remain (closing sessions end theirs a little later)."""
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        while True:
            groups = self.python_threads()
            if not any(name.split("-")[0] in SESSION_THREADS for name in groups) or time.monotonic() > deadline:
                return groups
            stop.wait(interval)

    def wait_sessions(self, count: int, timeout: float = 30.0, interval: float = 0.2) -> int:
        """Wait until the server reports ``count`` open sessions (closing ones join their threads first)."""
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        while True:
            open_now = int(self.metrics().get("voicechat_sessions_active", -1))
            if open_now == count or time.monotonic() > deadline:
                return open_now
            stop.wait(interval)  # an external process: asking again is the only way to learn


def evictions(metrics: dict[str, float]) -> dict[str, int]:
    """Queue evictions per queue from a /metrics scrape."""
    found = {}
    for key, value in metrics.items():
        if match := re.fullmatch(r"voicechat_queue_evictions(?:_total)?\{queue=(\w+)\}", key):
            found[match.group(1)] = int(value)
    return found
