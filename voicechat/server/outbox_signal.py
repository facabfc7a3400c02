"""OutboxSignal: wakes the asyncio writer of a session's connection from the session's threads.

A session's stages put events into its outbox on their own threads; the
outbox's ``on_put`` hook is this object, which sets the current writer's
``asyncio.Event`` on the server loop. A resumed session is served by a new
connection's writer; the previous writer hears ``on_replaced``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class OutboxSignal:
    """Thread-safe wake-up of the writer that currently serves a session (if any).

    Calls from the session's threads are coalesced: at most one wake-up is in
    flight on the loop at a time, however many events arrive meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._replaced: Callable[[], None] | None = None
        self._scheduled = False

    def attach(
        self, loop: asyncio.AbstractEventLoop, event: asyncio.Event, on_replaced: Callable[[], None]
    ) -> None:
        """Serve the session's events to a new writer; the previous one (if any) hears ``on_replaced``."""
        with self._lock:
            previous, previous_replaced = self._target, self._replaced
            self._target, self._replaced = (loop, event), on_replaced
            self._scheduled = False
        if previous is not None and previous_replaced is not None and previous[1] is not event:
            previous_loop = previous[0]
            previous_loop.call_soon_threadsafe(previous_replaced)
        event.set()  # drain whatever queued while no one was attached

    def detach(self, event: asyncio.Event) -> None:
        with self._lock:
            if self._target is not None and self._target[1] is event:
                self._target, self._replaced = None, None

    def __call__(self) -> None:
        with self._lock:
            if self._target is None or self._scheduled:
                return
            self._scheduled = True
            loop, _ = self._target
        try:
            loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _fire(self) -> None:
        with self._lock:
            self._scheduled = False
            target = self._target
        if target is not None:
            target[1].set()
