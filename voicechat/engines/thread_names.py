"""Native (OS) thread names, so per-thread CPU (``top -H``, ``/proc/PID/task``) maps to stages.

Python 3.11 does not give its threads OS names: every thread shows as ``python``.
On Linux a new thread, Python's or a native library's, starts with the OS name of
the thread that created it. So naming the thread that builds an engine names the
native worker pools that engine starts (CTranslate2, ONNX Runtime), and naming a
thread before it calls llama.cpp names the threads llama.cpp starts from it.
Names are cut to 15 bytes (the kernel's limit). Elsewhere than Linux: no-ops.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_NAME = 15
_MAX = 15  # bytes, without the terminating NUL

# Groups that `bench load` reports CPU for (each thread's name starts with one of them).
ENGINE_STT, ENGINE_LLM, ENGINE_TTS = "vc-stt", "vc-llm", "vc-tts"
SESSION_VAD = "ses-vad"  # RealtimeSTT's recording thread of a session
EVENT_LOOP = "vc-loop"


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _libc()


def set_native_name(name: str) -> None:
    """Name the calling thread for the OS (cut to 15 bytes)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_NAME, name.encode()[:_MAX], 0, 0, 0)


def native_name() -> str:
    """The calling thread's OS name ('' where it cannot be read)."""
    if _LIBC is None:
        return ""
    import threading

    try:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
    except OSError:
        return ""


@contextmanager
def named_while(name: str) -> Iterator[None]:
    """The calling thread carries ``name`` inside the block (threads started there inherit it), then its own."""
    before = native_name()
    set_native_name(name)
    try:
        yield
    finally:
        if before:
            set_native_name(before)
