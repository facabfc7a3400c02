"""Shorter garbage-collector pauses: keep what startup loaded out of full collections.

CPython's full (generation 2) collection walks every container object in the
process while holding the GIL, so every thread of every session stops for it.
After the engines, RealtimeSTT, numpy and the server are loaded the process
holds about 240,000 such objects, nearly all of them alive for good; at 30
speaking sessions a full collection came every 2-3 s and took 132 ms at the
median (177 ms at worst). That alone made the slowest few percent of turns
100-300 ms late (`bench load`, docs/benchmarks.md).

``gc.freeze()`` moves every object that exists at that moment into a permanent
generation that collections skip. Called once the server is ready, it leaves
the collector only what sessions create: full collections then took 6 ms at the
median. Frozen objects are never collected, so this is for what lives as long
as the process (modules, models, settings), which is what exists at startup.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object alive now; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%d objects frozen out of full garbage collections", frozen)
    return frozen
