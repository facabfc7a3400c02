"""A redis-server this process owns (Debian's ``redis-server``): loopback, its own directory, AOF on.

For ``run.py layout`` and the tests; production runs Redis as a service (docs/deploy.md).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import redis

from voicechat.deploy.processes import ChildProcess, ChildStartError, free_port

READY_S = 20.0


class RedisProcess(ChildProcess):
    """``redis-server`` on 127.0.0.1 with ``--appendonly yes`` and ``appendfsync`` as given, files in
    ``directory``; ``start`` again after ``kill`` serves the same port and directory (what its AOF held)."""

    def __init__(self, directory: Path, appendfsync: str = "always", port: int | None = None) -> None:
        self.directory, self.appendfsync = directory, appendfsync
        self.port = port or free_port()
        program = shutil.which("redis-server") or "redis-server"
        super().__init__("redis", [
            program, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(directory), "--save", "",
            "--appendonly", "yes", "--appendfsync", appendfsync, "--protected-mode", "yes", "--daemonize", "no",
        ])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, ready: re.Pattern[str] | None = None, timeout_s: float = READY_S) -> re.Match[str] | None:
        """Start and return (None) once it answers PING, having loaded its append-only file (``ready``: unused)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        super().start()
        deadline = time.monotonic() + timeout_s
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        pause = threading.Event()
        try:
            while True:  # nothing to wait on but its socket
                try:
                    if probe.ping():
                        return None
                except redis.ConnectionError:  # not listening yet, or still loading (BusyLoadingError)
                    pass
                if self.exit_code is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ChildStartError(f"redis-server did not answer on port {self.port}:\n{self.output_tail()}")
                pause.wait(0.01)
        finally:
            probe.close()
