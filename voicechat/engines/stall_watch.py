"""When is a running engine call stalled, and when has it timed out? (pure policy)

A shared engine's worker that hangs blocks everything queued behind it. Two
deadlines per running call: after the *stall* limit its worker stops counting
as available (the owner starts a spare so the queue moves on), after the
*timeout* its callers get an error and the worker thread is given up on. The
stall limit adapts to the engine: a few times its recent typical time per item,
times the call's items (a batch of four may take four times one), so a slow
model is not taken for a hung one and a fast one is not waited on long. The
owner keeps one history per kind of call (an STT final is not judged by the
pace of cheaper partials) and may pass the model's measured time for a single
item (``baseline_s``, from a warm-up call): the typical time is never taken
below it, because items decoded in a batch cost less each than one alone.

No threads or clocks here: the owner passes ``now`` and acts on the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

STALL_FLOOR_S = 0.5  # an adaptive stall limit is never shorter than this
# ... and otherwise this many times the 90th percentile of recent times per item: a CPU shared by the
# STT, the LLM and the TTS gives each a third of it under load, so a merely slow call can take 3x its pace.
STALL_FACTOR = 4.0
MIN_SAMPLES = 5  # fewer recent calls than this: a quarter of the timeout


class Watched(Protocol):
    """A running call as the policy sees it; ``stalled``/``timed_out`` are set here, once."""

    started: float
    stalled: bool
    timed_out: bool

    @property
    def size(self) -> int: ...


def stall_limit(
    recent_per_item_s: Sequence[float], timeout_s: float | None, fixed_s: float | None = None, size: int = 1,
    baseline_s: float | None = None,
) -> float | None:
    """Seconds a call of ``size`` items may run before it counts as stalled (None: never).

    ``recent_per_item_s``: recent calls of the same kind, seconds per item; ``baseline_s``: one item's
    measured time (a warm-up call), the least the typical time is taken to be."""
    if fixed_s is not None:
        return fixed_s
    if timeout_s is None:
        return None
    if len(recent_per_item_s) >= MIN_SAMPLES:
        ordered = sorted(recent_per_item_s)
        typical = max(ordered[int(0.9 * (len(ordered) - 1))], baseline_s or 0.0)
    elif baseline_s is not None:
        typical = baseline_s
    else:
        return max(STALL_FLOOR_S, timeout_s / 4)
    return min(timeout_s / 2, max(STALL_FLOOR_S, STALL_FACTOR * typical * max(1, size)))


@dataclass
class Deadlines:
    """What changed at ``now``, and how long until the next deadline (None: none pending)."""

    stalled: list[Watched] = field(default_factory=list)
    timed_out: list[Watched] = field(default_factory=list)
    wake_in_s: float | None = None


def check(
    running: Iterable[Watched], now: float, stall_for: Callable[[Watched], float | None], timeout_s: float | None
) -> Deadlines:
    """Mark calls past their stall limit or timeout (each at most once) and find the next deadline."""
    result = Deadlines()

    def pending(at: float) -> None:
        left = at - now
        result.wake_in_s = left if result.wake_in_s is None else min(result.wake_in_s, left)

    for call in running:
        stall_s = stall_for(call)
        if stall_s is not None and not call.stalled:
            if now - call.started >= stall_s:
                call.stalled = True
                result.stalled.append(call)
            else:
                pending(call.started + stall_s)
        if timeout_s is not None and not call.timed_out:
            if now - call.started >= timeout_s:
                call.timed_out = True
                result.timed_out.append(call)
            else:
                pending(call.started + timeout_s)
    return result


def needs_spare(threads: int, stalled: int, workers: int, max_threads: int, waiting: int) -> bool:
    """Start another worker: work waits, fewer than ``workers`` are available, and the cap allows it."""
    return waiting > 0 and threads - stalled < workers and threads < max_threads
