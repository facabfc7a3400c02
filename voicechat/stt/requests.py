"""The shared STT scheduler's bookkeeping: requests, running batches, counters (no threads of its own).

``SttScheduler`` (scheduler.py) owns the threads and the lock; these are the
records it keeps under that lock, and the helpers that settle a request's
future once, whoever gets there first (the batch or the watchdog).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from voicechat.engines.circuit_breaker import Permit
from voicechat.engines.protocols import SpeechInput
from voicechat.engines.stuck_calls import GiveUp


@dataclass(slots=True)
class Request:
    input: SpeechInput
    future: Future[str]
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None  # set when its batch starts


@dataclass(eq=False, slots=True)
class Running:
    """A batch on a worker thread, as the watchdog sees it."""

    requests: list[Request]
    thread: threading.Thread
    started: float
    permit: Permit | None = None
    stalled: bool = False
    timed_out: bool = False
    give_up: GiveUp | None = None

    @property
    def size(self) -> int:
        return len(self.requests)

    @property
    def final(self) -> bool:
        return self.requests[0].input.final


@dataclass
class SttStats:
    """Counters for /metrics and benchmarks (updated under the scheduler's lock)."""

    batches: int = 0
    finals: int = 0
    partials: int = 0
    partials_dropped: int = 0  # replaced by a newer one before they ran, or shed (below)
    partials_shed: int = 0  # dropped because the model's recent load was above partial_max_load
    errors: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    busy_s: float = 0.0
    busy_final_s: float = 0.0  # seconds of batches of finals (busy_s = these + partials' + failed)
    busy_partial_s: float = 0.0
    timeouts: int = 0  # batches that ran past call_timeout_s
    stalls: int = 0  # batches that ran past stall_after_s (a spare worker took over the queue)
    rejected: int = 0  # requests refused while the circuit was open
    final_wait_s: float = 0.0  # finals' seconds in the queue, summed (from the request to its batch's start)
    finals_behind_partial: int = 0  # finals that arrived while a batch of partials was running


def settle(future: Future[str], text: str) -> None:
    try:
        future.set_result(text)
    except InvalidStateError:
        pass  # the watchdog failed it first


def fail(requests: Sequence[Request], error: BaseException) -> None:
    for r in requests:
        try:
            r.future.set_exception(error)
        except InvalidStateError:
            pass  # settled meanwhile (by the watchdog, or the batch came back first)
