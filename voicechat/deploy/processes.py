"""Child processes this process owns: started, their output drained, stopped (or killed) and reaped.

``ChildProcess`` is any program (redis-server, haproxy); ``ServerProcess`` is
``run.py --no-tui`` with ``--set`` overrides, ready once its banner names the URL
it serves (so port 0 works: the OS picks a free port and the banner says which).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from voicechat.models.store import PROJECT_ROOT

KEPT_LINES = 200


class ChildStartError(RuntimeError):
    """The child exited, or did not get ready in time; the message has the end of its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another program may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, alive: ChildProcess | None = None) -> None:
    """Return once something accepts TCP connections on ``host:port``; ChildStartError after ``timeout_s``
    or as soon as ``alive`` has exited. (An external program: connecting is the only way to know.)"""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if alive is not None and alive.exit_code is not None:
            raise ChildStartError(f"{alive.name} exited with {alive.exit_code}:\n{alive.output_tail()}")
        if time.monotonic() > deadline:
            detail = f":\n{alive.output_tail()}" if alive is not None else ""
            raise ChildStartError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s{detail}")
        pause.wait(0.05)


class ChildProcess:
    """``with ChildProcess("redis", [...]) as redis: ...``: stopped (SIGTERM, then SIGKILL) and reaped on exit."""

    def __init__(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path = PROJECT_ROOT, merge_stderr: bool = False) -> None:
        self.name, self.cmd, self.env, self.cwd = name, list(cmd), dict(env) if env is not None else None, cwd
        self.merge_stderr = merge_stderr  # the ``ready`` line may come on standard error (uvicorn logs there)
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._drainers: list[threading.Thread] = []

    def start(self, ready: re.Pattern[str] | None = None, timeout_s: float = 60.0) -> re.Match[str] | None:
        """Start it (again, after ``stop`` or ``kill``); with ``ready``, wait until a line of its output matches."""
        if self.exit_code is None and self.proc is not None:
            raise RuntimeError(f"{self.name} is running already (pid {self.proc.pid})")
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stderr is not None:
            self._drain(self.proc.stderr)
        if ready is None:
            self._drain(self.proc.stdout)
            return None
        found: list[re.Match[str]] = []
        got = threading.Event()

        def watch(line: str) -> None:
            if not found and (match := ready.search(line)):
                found.append(match)
                got.set()

        self._drain(self.proc.stdout, watch, on_end=got.set)
        if not got.wait(timeout_s) or not found:
            self.stop()
            raise ChildStartError(f"{self.name} did not get ready ({ready.pattern!r}):\n{self.output_tail()}")
        return found[0]

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def output_tail(self, lines: int = 30) -> str:
        with self._lock:
            return "".join(self._lines[-lines:])

    def kill(self) -> None:
        """SIGKILL now, as a crash would end it (no goodbye to anyone); reaped at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (the program's own orderly stop), SIGKILL after ``timeout_s``; joins the pipe readers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        for thread in self._drainers:
            thread.join(timeout=5)
        self._drainers.clear()

    def __enter__(self) -> ChildProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _drain(self, stream: IO[str], on_line: Callable[[str], None] | None = None,
               on_end: Callable[[], None] | None = None) -> None:
        """Read a pipe to its end so the child never blocks on a full one; keep its last lines."""

        def run() -> None:
            for line in stream:
                with self._lock:
                    self._lines.append(line)
                    del self._lines[:-KEPT_LINES]
                if on_line is not None:
                    on_line(line)
            if on_end is not None:
                on_end()

        thread = threading.Thread(target=run, name=f"{self.name}-pipe", daemon=True)
        thread.start()
        self._drainers.append(thread)


class ServerProcess(ChildProcess):
    """voicechat itself (``run.py --no-tui``) in a child process, ``settings`` as ``--set`` overrides."""

    BANNER_URL = re.compile(r"(https?://127\.0\.0\.1:(\d+)/)")

    def __init__(self, name: str, settings: Mapping[str, str], *, scripted: bool = False,
                 extra_args: Sequence[str] = ()) -> None:
        cmd = [sys.executable, str(PROJECT_ROOT / "run.py"), "--no-tui", *(["--scripted"] if scripted else []),
               *extra_args]
        for key, value in settings.items():
            cmd += ["--set", f"{key}={value}"]
        env = {**os.environ, "VOICECHAT_SKIP_BOOTSTRAP": "1", "PYTHONUNBUFFERED": "1"}
        super().__init__(name, cmd, env=env)
        self.settings = dict(settings)
        self.http_url = ""
        self.port = 0

    def start(self, ready: re.Pattern[str] | None = None, timeout_s: float = 120.0) -> re.Match[str] | None:
        """Start it and wait until it serves (its banner names the URL; needs ``server.host=127.0.0.1``)."""
        match = super().start(ready or self.BANNER_URL, timeout_s)
        assert match is not None
        self.http_url, self.port = match.group(1), int(match.group(2))
        return match

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http", "ws", 1) + "ws"
