"""BoundedLRUQueue: the queue between pipeline stages.

A real-time pipeline must never block a producer (an audio callback, a model's
token loop) because a consumer is slow. So ``put`` never blocks: when the queue
is full the *oldest* item is evicted and counted, which keeps the freshest audio
and drops stale backlog. Consumers block on ``get`` with a timeout and are woken
at once by ``close``. Items that carry a ``generation`` attribute can be dropped
in bulk when a barge-in makes them stale.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """Raised by ``get`` once the queue is closed and drained (or closed hard)."""


class BoundedLRUQueue(Generic[T]):
    """Thread-safe FIFO with a capacity, evict-oldest-on-full, and close().

    ``name`` labels the eviction counter in metrics. ``on_put`` (optional) is
    called after every successful put and once on ``close()``, outside the lock,
    so an asyncio consumer can be woken with ``loop.call_soon_threadsafe``
    instead of polling, and learns of the close the same way.
    """

    def __init__(self, maxsize: int, name: str = "queue", on_put: Callable[[], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.name = name
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._evicted = 0
        self._dropped_stale = 0
        self._on_put = on_put

    # -- producer side -------------------------------------------------------
    def put(self, item: T) -> T | None:
        """Append ``item``; never blocks. Returns the evicted item, if any.

        Putting into a closed queue is a silent no-op (returns None): a stage
        that races with session shutdown must not crash on it.
        """
        evicted: T | None = None
        with self._cond:
            if self._closed:
                return None
            if len(self._items) >= self.maxsize:
                evicted = self._items.popleft()
                self._evicted += 1
            self._items.append(item)
            self._cond.notify()
        if self._on_put is not None:
            self._on_put()
        return evicted

    # -- consumer side -------------------------------------------------------
    def get(self, timeout: float | None = None) -> T:
        """Remove and return the oldest item.

        Blocks up to ``timeout`` seconds (forever if None). Raises
        ``TimeoutError`` when nothing arrived in time and ``QueueClosed`` when
        the queue is closed and empty.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError(f"{self.name}: nothing within {timeout}s")
            if self._items:
                return self._items.popleft()
            raise QueueClosed(self.name)

    def get_nowait(self) -> T:
        """Non-blocking ``get``: raises ``TimeoutError`` when empty."""
        return self.get(timeout=0)

    # -- maintenance ---------------------------------------------------------
    def clear(self) -> int:
        """Drop every queued item; returns how many were dropped."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def drop_older_than(self, generation: int, kinds: tuple[type, ...] | None = None) -> int:
        """Drop items whose ``generation`` attribute is below ``generation``.

        Items without that attribute are kept (control messages are never
        stale); with ``kinds``, only items of those types are candidates.
        Returns how many were dropped.
        """

        def stale(item: T) -> bool:
            if kinds is not None and not isinstance(item, kinds):
                return False
            return getattr(item, "generation", generation) < generation

        with self._cond:
            keep = deque(item for item in self._items if not stale(item))
            dropped = len(self._items) - len(keep)
            self._items = keep
            self._dropped_stale += dropped
            return dropped

    def close(self) -> None:
        """Refuse further puts and wake every waiting consumer.

        Items already queued can still be taken; ``get`` raises QueueClosed
        only once the queue is empty.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._on_put is not None:
            self._on_put()

    # -- introspection -------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def evicted(self) -> int:
        """Items evicted because the queue was full (exported as a metric)."""
        return self._evicted

    @property
    def dropped_stale(self) -> int:
        """Items dropped by ``drop_older_than`` (barge-in flushes)."""
        return self._dropped_stale

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def snapshot(self) -> list[T]:
        """A copy of the queued items, oldest first (for tests and debugging)."""
        with self._cond:
            return list(self._items)
