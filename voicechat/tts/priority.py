"""The TTS pool's job order, apart from its threads.

Time to first audio is what a user waits for, so a reply's first sentence
goes before later sentences of other replies (which are behind the audio the
listener is already hearing). Within each class the order is FIFO, which keeps
replies fair to each other and a reply's own sentences in order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

FIRST, LATER = 0, 1  # priority classes: lower runs first


@dataclass(order=True, slots=True)
class _Entry(Generic[T]):
    rank: int
    seq: int
    item: T = field(compare=False)


class PriorityJobQueue(Generic[T]):
    """First sentences before later ones, FIFO within each; not thread-safe."""

    def __init__(self) -> None:
        self._heap: list[_Entry[T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: T, first_in_reply: bool) -> None:
        heapq.heappush(self._heap, _Entry(FIRST if first_in_reply else LATER, next(self._seq), item))

    def pop(self) -> T | None:
        """The next job to run, or None when empty."""
        return heapq.heappop(self._heap).item if self._heap else None

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out every queued job matching ``predicate`` (abort, cancel); returns them."""
        keep: list[_Entry[T]] = []
        removed: list[_Entry[T]] = []
        for entry in self._heap:
            (removed if predicate(entry.item) else keep).append(entry)
        if removed:
            self._heap = keep
            heapq.heapify(self._heap)
        return [e.item for e in sorted(removed)]

    def drain(self) -> list[T]:
        """Take out everything (pool close)."""
        items = [e.item for e in sorted(self._heap)]
        self._heap.clear()
        return items
