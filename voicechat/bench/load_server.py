"""The server under test for `bench load`: `run.py` in its own process, watched from outside.

The server runs exactly as `python run.py --no-tui` does (same code path as
`serve`), in a separate process so the benchmark's clients do not share its
GIL. Its CPU, memory and threads are read with psutil; its queue evictions,
sessions and turns from its own `/metrics` (loopback needs no token).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import psutil
from prometheus_client.parser import text_string_to_metric_families

from voicechat.deploy.processes import ServerProcess

# First part of the names of the threads each session owns (its stage workers and RealtimeSTT's).
SESSION_THREADS = {"capture", "stt", "llm", "tts", "local"}


def parse_metrics(text: str) -> dict[str, float]:
    """A Prometheus text scrape as ``name{label=value,...}`` -> value (labels sorted; none: the bare name)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


class BenchServer(ServerProcess):
    """``with BenchServer(data_dir, settings) as server: server.ws_url ...``"""

    def __init__(self, data_dir: Path, settings: dict[str, str], scripted: bool, start_timeout_s: float = 120.0):
        self.data_dir = data_dir
        self.token = secrets.token_urlsafe(16)
        super().__init__("bench-server", {
            "server.host": "127.0.0.1", "server.port": "0", "server.data_dir": str(data_dir),
            "server.token": self.token, "server.tls": "off", "logging.level": "WARNING", **settings,
        }, scripted=scripted)
        self.start_timeout_s = start_timeout_s
        self.process: psutil.Process | None = None

    def __enter__(self) -> BenchServer:
        self.start(timeout_s=self.start_timeout_s)
        assert self.pid is not None
        self.process = psutil.Process(self.pid)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def address(self, client: int) -> tuple[str, str]:
        """Where client number ``client`` connects: (WebSocket URL, token)."""
        return self.ws_url, self.token

    # -- observation -------------------------------------------------------------
    def stderr_tail(self, lines: int = 30) -> str:
        return self.output_tail(lines)

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
        """Prometheus samples as ``name{label=value,...}`` -> value (``parse_metrics``)."""
        return parse_metrics(self.get("metrics").decode())

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


class ServerGroup:
    """Several bench servers observed as one: the sessions sharded over worker processes (``bench load
    --shards K``). Client ``i`` goes to server ``i mod K``; every figure is the sum over the servers (CPU,
    memory, threads, counters), so the report reads as one server's. Each server loads its own engines: with
    the scripted ones this measures what sharding the per-frame work (event loop, listening front end) gives."""

    def __init__(self, servers: list[BenchServer]) -> None:
        self.servers = servers

    def __enter__(self) -> ServerGroup:
        started: list[BenchServer] = []
        try:
            for server in self.servers:
                started.append(server.__enter__())
        except BaseException:
            for server in started:
                server.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for server in self.servers:
            server.stop()

    def address(self, client: int) -> tuple[str, str]:
        return self.servers[client % len(self.servers)].address(client)

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(server.stderr_tail(lines) for server in self.servers)

    def rss_mb(self) -> float:
        return sum(server.rss_mb() for server in self.servers)

    def threads(self) -> int:
        return sum(server.threads() for server in self.servers)

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)

    def thread_cpu(self) -> dict[int, tuple[str, float]]:
        return {tid: found for server in self.servers for tid, found in server.thread_cpu().items()}

    def metrics(self) -> dict[str, float]:
        return _summed(server.metrics() for server in self.servers)

    def settled_threads(self) -> dict[str, int]:
        return {k: int(v) for k, v in _summed(server.settled_threads() for server in self.servers).items()}

    def wait_sessions(self, count: int) -> int:
        """Wait until the servers report ``count`` open sessions in all (0: each of them none)."""
        if count:
            raise ValueError("a server group waits only for no sessions")
        return sum(server.wait_sessions(0) for server in self.servers)


def _summed(dicts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for found in dicts:
        for key, value in found.items():
            total[key] = total.get(key, 0.0) + value
    return total


def evictions(metrics: dict[str, float]) -> dict[str, int]:
    """Queue evictions per queue from a /metrics scrape."""
    found = {}
    for key, value in metrics.items():
        if match := re.fullmatch(r"voicechat_queue_evictions(?:_total)?\{queue=(\w+)\}", key):
            found[match.group(1)] = int(value)
    return found
