"""Shared fixtures; the helpers they use live in ``tests/support``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engines import scripted_engines
from support.redis_server import RedisServer, running_redis

from voicechat.engines.protocols import Engines
from voicechat.session.manager import SessionLimits, SessionManager
from voicechat.session.pipeline import PipelineOptions


@pytest.fixture
def make_manager() -> Iterator:
    """Build SessionManagers that are shut down (and hung engines released) after the test."""
    managers: list[SessionManager] = []

    def make(engines: Engines | None = None, limits: SessionLimits | None = None, **options) -> SessionManager:
        engines = engines or scripted_engines()
        limits = limits or SessionLimits()
        m = SessionManager(engines, limits, PipelineOptions(join_timeout_s=limits.join_timeout_s, **options))
        m.start()
        managers.append(m)
        return m

    yield make
    for m in managers:
        for engine in (m.engines.llm, m.engines.tts, m.engines.transcriber.model):
            faults = getattr(engine, "faults", None)
            if faults is not None:
                faults.release()
        m.shutdown()
        m.engines.close()


@pytest.fixture
def thread_baseline() -> int:
    return threading.active_count()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (loopback, AOF on), stopped after; skipped where none is installed."""
    with running_redis(tmp_path / "redis") as server:
        yield server
