"""The scale-out layout on one machine, for trying it: Redis, N voicechat replicas, haproxy in front.

``python3 run.py layout --replicas 2`` starts them all as children of this
process (each owned: stopped and reaped when it ends), prints the join URL and
waits for Ctrl-C. Tests use ``Layout`` directly and kill a replica to watch its
clients move. On several machines, run the same pieces by hand: docs/deploy.md.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from voicechat.deploy.haproxy import Backend, haproxy_config
from voicechat.deploy.processes import ChildProcess, ChildStartError, ServerProcess, free_port, wait_for_port
from voicechat.deploy.redis_process import RedisProcess

PROXY_READY_S = 20.0


@dataclass
class LayoutPlan:
    """What to start. ``settings`` go to every replica (``--set``); ``port`` 0 picks a free one."""

    replicas: int = 2
    host: str = "127.0.0.1"
    port: int = 0
    scripted: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    work_dir: Path | None = None  # replicas' data dirs, redis' files, haproxy.cfg; None: a temporary one


def tools_missing() -> list[str]:
    """The programs the layout needs that this machine lacks (Debian: apt-get install redis-server haproxy)."""
    return [tool for tool in ("redis-server", "haproxy") if shutil.which(tool) is None]


class Layout:
    """``with Layout(plan) as layout: layout.url ...``; everything started is stopped on exit, in reverse."""

    def __init__(self, plan: LayoutPlan) -> None:
        self.plan = plan
        self.redis: RedisProcess | None = None
        self.replicas: list[ServerProcess] = []
        self.proxy: ChildProcess | None = None
        self.redis_url = ""
        self.port = plan.port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.work_dir = plan.work_dir

    @property
    def url(self) -> str:
        """The proxy's address, as a browser opens it (the token goes in the fragment)."""
        return f"http://{self.plan.host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.plan.host}:{self.port}/ws"

    def __enter__(self) -> Layout:
        missing = tools_missing()
        if missing:
            raise ChildStartError(f"the layout needs {' and '.join(missing)}: apt-get install redis-server haproxy")
        if self.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="voicechat-layout-")
            self.work_dir = Path(self._tmp.name)
        try:
            self._start_redis()
            for i in range(self.plan.replicas):
                self.start_replica(i)
            self._start_proxy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for child in [self.proxy, *reversed(self.replicas), self.redis]:
            if child is not None:
                child.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def replica_settings(self, index: int) -> dict[str, str]:
        assert self.work_dir is not None
        return {
            "server.host": "127.0.0.1", "server.port": "0", "server.tls": "off", "server.token": self.plan.token,
            "server.data_dir": str(self.work_dir / f"replica-{index + 1}"),
            "server.trusted_proxies": '["127.0.0.1"]', "sessions.store": "redis",
            "sessions.redis_url": self.redis_url, "logging.level": "WARNING", **self.plan.settings,
        }

    def start_replica(self, index: int) -> ServerProcess:
        """Start replica ``index`` (0-based; again after ``kill``: a new process, maybe on a new port)."""
        replica = ServerProcess(f"replica-{index + 1}", self.replica_settings(index), scripted=self.plan.scripted)
        replica.start()
        if index < len(self.replicas):
            self.replicas[index] = replica
        else:
            self.replicas.append(replica)
        return replica

    def kill_replica(self, index: int) -> None:
        """SIGKILL replica ``index``: no goodbye to its clients, nothing flushed (a crash)."""
        self.replicas[index].kill()

    # -- internals ---------------------------------------------------------------------
    def _start_redis(self) -> None:
        assert self.work_dir is not None
        self.redis = RedisProcess(self.work_dir / "redis")
        self.redis.start()
        self.redis_url = self.redis.url

    def _start_proxy(self) -> None:
        assert self.work_dir is not None
        if not self.port:
            self.port = free_port(self.plan.host)
        backends = [Backend(f"r{i + 1}", "127.0.0.1", r.port) for i, r in enumerate(self.replicas)]
        config = self.work_dir / "haproxy.cfg"
        config.write_text(haproxy_config(f"{self.plan.host}:{self.port}", backends))
        self.proxy = ChildProcess("haproxy", ["haproxy", "-db", "-f", str(config)])
        self.proxy.start()
        wait_for_port(self.plan.host, self.port, PROXY_READY_S, alive=self.proxy)


def main(argv: list[str]) -> int:
    """``run.py layout``: start the layout, print how to join, run until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="run.py layout", description="Try the scale-out layout on one machine: "
                                     "Redis, several voicechat replicas and haproxy in front (docs/deploy.md).")
    parser.add_argument("--replicas", type=int, default=2, help="voicechat processes (default 2)")
    parser.add_argument("--host", default="127.0.0.1", help="the proxy's address (0.0.0.0: the LAN; see "
                        "docs/deploy.md for HTTPS, which browsers need for the microphone off this machine)")
    parser.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    parser.add_argument("--scripted", action="store_true", help="scripted engines (no models needed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every replica, as run.py --set")
    parser.add_argument("--remote-engines", action="store_true", help="serve the starter models from their own "
                        "servers (llama_cpp.server, faster-whisper-server, wyoming-piper) that every replica shares")
    parser.add_argument("--dir", type=Path, default=None, help="keep the replicas' and Redis' files here")
    args = parser.parse_args(argv)
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        settings[key.strip()] = value
    plan = LayoutPlan(replicas=args.replicas, host=args.host, port=args.port, scripted=args.scripted,
                      settings=settings, work_dir=args.dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with ExitStack() as stack:
            if args.remote_engines:
                from voicechat.deploy.engine_servers import engine_servers, settings_of

                work = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voicechat-engines-")))
                servers = stack.enter_context(engine_servers(work / "engines"))
                plan.settings = {"models.set": "starter", **settings_of(servers), **plan.settings}
                for name, server in servers.items():
                    print(f"voicechat layout: {name} server on 127.0.0.1:{server.port} (pid {server.process.pid})")
            layout = stack.enter_context(Layout(plan))
            print(f"voicechat layout: {len(layout.replicas)} replicas, Redis at {layout.redis_url}")
            for i, replica in enumerate(layout.replicas):
                print(f"  replica r{i + 1}: {replica.http_url} (pid {replica.pid})")
            print(f"join: {layout.url}#token={plan.token}\nCtrl-C stops everything.", flush=True)
            try:
                while not stop.wait(1.0):
                    for replica in layout.replicas:
                        if replica.exit_code is not None:
                            print(f"voicechat layout: {replica.name} exited ({replica.exit_code})", file=sys.stderr)
                            stop.set()
            except KeyboardInterrupt:
                pass
    except ChildStartError as err:
        print(f"voicechat layout: {err}", file=sys.stderr)
        return 1
    return 0
