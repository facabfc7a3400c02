"""OS thread names: threads started while a name is set inherit it (what maps native pools to stages)."""

from __future__ import annotations

import sys
import threading

import pytest

from voicechat.engines.thread_names import named_while, native_name, set_native_name

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc")


def test_a_thread_started_inside_the_block_inherits_the_name_and_the_caller_gets_its_own_back() -> None:
    seen: list[str] = []
    before = native_name()
    with named_while("vc-test-engine"):
        assert native_name() == "vc-test-engine"
        child = threading.Thread(target=lambda: seen.append(native_name()))
        child.start()
        child.join(10)
    assert seen == ["vc-test-engine"]
    assert native_name() == before


def test_names_are_cut_to_the_kernels_fifteen_bytes() -> None:
    seen: list[str] = []

    def run() -> None:
        set_native_name("a-very-long-thread-name")
        seen.append(native_name())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert seen == ["a-very-long-thr"]
