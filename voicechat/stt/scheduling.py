"""Which transcription requests run next, and together with which (pure policy).

Every session shares one speech-to-text model, so the order of its work decides
how fast each user gets an answer. The rules, in priority order:

1. **Finals before partials.** A final transcript ends the user's turn and gates
   the reply; a partial only refreshes what the user sees.
2. **Fair between sessions.** Sessions take turns (round robin); a session that
   was just served goes to the back of the line.
3. **Latest partial wins.** A session has at most one partial waiting: a newer
   request replaces it (the old one is dropped, never run), because each request
   covers the whole utterance so far.
4. **Batch what waits together.** All finals waiting at the same moment are
   decoded as one batch (up to ``max_batch``); partials likewise, one per session.
   Finals and partials never share a batch: partials are decoded more cheaply.
5. **Partials only from spare time.** A partial is a whole decode (on a CPU as
   long as a final), so partials run only while the model's recent load
   (``BusyMeter``) is below ``max_load``; otherwise the waiting ones are dropped
   (newer ones follow while the user speaks). The rest of the time stays free
   for finals, which then rarely wait behind a partial.

A recognizer cancels its session's waiting partial when the utterance ends, and
asks for none while its user is silent (the words would not change).

No threads here: ``SttScheduler`` (engines/stt_scheduler.py) drives this.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

LOAD_WINDOW_S = 2.0  # the recent past over which the model's load is measured


class BusyMeter:
    """The share of the last ``window_s`` seconds in which the model was busy (0..1).

    ``begin``/``end`` bracket each decode (overlapping ones count once); the
    caller passes the clock (``time.monotonic()`` seconds). Not thread-safe.
    """

    def __init__(self, window_s: float = LOAD_WINDOW_S) -> None:
        self.window_s = window_s
        self._spans: deque[tuple[float, float]] = deque()  # finished busy spans, oldest first
        self._running = 0
        self._since = 0.0  # start of the busy span in progress

    def begin(self, now: float) -> None:
        if self._running == 0:
            self._since = now
        self._running += 1

    def end(self, now: float) -> None:
        self._running = max(0, self._running - 1)
        if self._running == 0:
            self._spans.append((self._since, now))

    def load(self, now: float) -> float:
        start = now - self.window_s
        while self._spans and self._spans[0][1] <= start:
            self._spans.popleft()
        busy = sum(min(b, now) - max(a, start) for a, b in self._spans if b > start)
        if self._running:
            busy += now - max(self._since, start)
        return min(1.0, max(0.0, busy / self.window_s))


def partials_may_run(load: float, max_load: float | None) -> bool:
    """Whether waiting partials may take the model now (``max_load`` None: always)."""
    return max_load is None or load < max_load


@dataclass(eq=False)
class Job(Generic[T]):
    """A queued request; ``payload`` is whatever the scheduler needs to run it."""

    session_id: str
    final: bool
    payload: T
    seq: int = field(default=0)


class SttSchedule(Generic[T]):
    """Per-session fair queues with final-first, latest-partial-wins batching."""

    def __init__(self, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self._finals: OrderedDict[str, deque[Job[T]]] = OrderedDict()
        self._partials: OrderedDict[str, Job[T]] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._finals.values()) + len(self._partials)

    @property
    def finals_waiting(self) -> int:
        return sum(len(q) for q in self._finals.values())

    def submit(self, job: Job[T]) -> Job[T] | None:
        """Queue ``job``; returns the partial it replaced (to be dropped), if any."""
        self._seq += 1
        job.seq = self._seq
        if job.final:
            self._finals.setdefault(job.session_id, deque()).append(job)
            return None
        replaced = self._partials.get(job.session_id)
        # A replacement keeps its place in line: the session has waited since then.
        self._partials[job.session_id] = job
        return replaced

    def cancel(self, session_id: str, *, partials_only: bool = False) -> list[Job[T]]:
        """Remove a session's waiting jobs and return them."""
        removed: list[Job[T]] = []
        partial = self._partials.pop(session_id, None)
        if partial is not None:
            removed.append(partial)
        if not partials_only:
            removed.extend(self._finals.pop(session_id, ()))
        return removed

    def drop_partials(self) -> list[Job[T]]:
        """Take out every waiting partial (the model has no time for them); returns them."""
        dropped = list(self._partials.values())
        self._partials.clear()
        return dropped

    def next_batch(self) -> list[Job[T]]:
        """The next jobs to decode together (empty when nothing waits)."""
        if self._finals:
            return self._take_finals()
        return self._take_partials()

    def _take_finals(self) -> list[Job[T]]:
        batch: list[Job[T]] = []
        while self._finals and len(batch) < self.max_batch:
            # One round: each waiting session in line order gives its oldest final.
            for sid in list(self._finals):
                if len(batch) >= self.max_batch:
                    break
                queue = self._finals[sid]
                batch.append(queue.popleft())
                self._finals.move_to_end(sid)
                if not queue:
                    del self._finals[sid]
        return batch

    def _take_partials(self) -> list[Job[T]]:
        batch: list[Job[T]] = []
        for sid in list(self._partials)[: self.max_batch]:
            batch.append(self._partials.pop(sid))
        return batch
