"""Fewer glibc malloc arenas, so sessions that come and go do not leave native heap behind.

glibc gives threads their own malloc arenas (up to 8 per core) and rarely
returns their freed memory to the system. Every session starts and stops
threads that allocate audio buffers and ONNX tensors natively, so a server
whose sessions churn grew its RSS step by step: 1000 connect/speak/leave cycles
left about 45 MB (`bench load --churn`). With two arenas, 500 cycles left about
4 MB instead of 20. Python's own small objects do not use these arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap new malloc arenas at ``arenas`` (0: leave glibc's default); True if the cap is in effect.

    An explicit ``MALLOC_ARENA_MAX`` in the environment wins. Other C libraries (musl,
    macOS) have no such arenas: nothing to do there.
    """
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_ARENA_MAX, arenas) == 1
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done
