"""A real ``redis-server`` for tests (``voicechat.deploy.redis_process``): loopback, a free port, its own
directory, AOF on, torn down after.

``redis_or_skip()`` skips a test when Debian's redis-server is not installed, unless
``VOICECHAT_SERVICE_TESTS=1`` (CI), where that is a failure. A ``RedisServer`` can be killed (SIGKILL,
no chance to flush) and started again on the same port and directory: what its AOF holds is what survived.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from support.services import need
from voicechat.deploy.redis_process import RedisProcess


def redis_or_skip() -> None:
    need("redis-server")


class RedisServer(RedisProcess):
    def __init__(self, directory: Path, appendfsync: str = "everysec") -> None:
        super().__init__(directory, appendfsync)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)


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
