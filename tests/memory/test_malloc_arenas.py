"""limit_malloc_arenas: glibc's mallopt where it exists, and never over an explicit MALLOC_ARENA_MAX."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from voicechat.memory.malloc_arenas import limit_malloc_arenas


def test_zero_and_an_explicit_environment_leave_glibc_alone(monkeypatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas(0) is False
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or "musl" in (ctypes.util.find_library("c") or ""),
                    reason="glibc only")
def test_glibc_takes_the_cap(monkeypatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas(8) is True  # 8: what this test process may already use; harmless
