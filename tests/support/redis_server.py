"""A real ``redis-server`` for tests: loopback, a free port, its own directory, AOF on, torn down after.

``redis_or_skip()`` skips a test when Debian's redis-server is not installed,
unless ``VOICECHAT_SERVICE_TESTS=1`` (CI), where that is a failure. A
``RedisServer`` can be killed (SIGKILL, no chance to flush) and started again
on the same port and directory: what its AOF holds is what survived.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REQUIRED = os.environ.get("VOICECHAT_SERVICE_TESTS") == "1"
START_TIMEOUT_S = 10.0


def redis_or_skip() -> None:
    if not Path(REDIS_SERVER).exists():
        if REQUIRED:
            pytest.fail("VOICECHAT_SERVICE_TESTS=1 but redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server not installed (set VOICECHAT_SERVICE_TESTS=1 to make this a failure)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (``--save ''``, ``--appendonly yes``, ``appendfsync`` as given)."""

    def __init__(self, directory: Path, appendfsync: str = "everysec") -> None:
        self.directory = directory
        self.appendfsync = appendfsync
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def start(self) -> None:
        """Start (again, on the same port and directory) and return once it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync, "--daemonize", "no",
             "--logfile", str(self.directory / "redis.log"), "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:  # until it loaded its AOF and listens, or gave up
                if self.proc.poll() is not None:
                    raise AssertionError(f"redis-server exited {self.proc.returncode}: {self.log()[-2000:]}")
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:  # not listening yet, or still loading its AOF (BusyLoadingError)
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server silent for {START_TIMEOUT_S} s: {self.log()[-2000:]}")
                time.sleep(0.01)  # nothing to wait on but its socket
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL: what was not yet in its AOF file is gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(how)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_redis(directory: Path, appendfsync: str = "everysec") -> Iterator[RedisServer]:
    """A started RedisServer (skips or fails the test without redis-server), stopped after."""
    redis_or_skip()
    server = RedisServer(directory, appendfsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()
