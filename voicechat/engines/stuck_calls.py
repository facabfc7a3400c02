"""Engine calls that were given up on, and whether their threads ever came back.

Python cannot kill a thread. When a call is abandoned (it timed out, or its
turn was interrupted) its engine is asked to abort, and the thread running it
gets ``grace_s`` to end. One that does not is *stuck*: it is logged by name,
counted, and listed until it finally returns (then it counts as recovered), so
a hung native call is never a silent leak. ``on_stuck`` lets an owner act on
it, e.g. a pool starting a replacement worker.

A watchdog thread sleeps on a condition until the earliest grace deadline; it
exists only while some call is within its grace period, so an idle process
keeps no extra thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["GiveUp", "StuckCall", "StuckCalls", "StuckStats", "STUCK_CALLS"]


@dataclass(frozen=True, slots=True)
class StuckCall:
    """A thread that did not end after its call was abandoned."""

    name: str
    stage: str
    session_id: str
    stuck_for_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class StuckStats:
    stuck_now: tuple[StuckCall, ...]
    stuck_total: int  # ever declared stuck
    recovered_total: int  # of those, ended later


class GiveUp:
    """The handle of one abandoned call; its thread calls ``ended()`` when (if) it returns."""

    __slots__ = ("name", "stage", "session_id", "reason", "deadline", "given_up_at", "on_stuck", "state",
                 "_registry")

    def __init__(
        self, registry: StuckCalls, name: str, stage: str, session_id: str, reason: str, deadline: float,
        now: float, on_stuck: Callable[[GiveUp], None] | None,
    ) -> None:
        self._registry = registry
        self.name = name
        self.stage = stage
        self.session_id = session_id
        self.reason = reason
        self.deadline = deadline
        self.given_up_at = now
        self.on_stuck = on_stuck
        self.state = "pending"  # -> "ended" (within grace), "stuck" -> "recovered"

    def ended(self) -> bool:
        """The abandoned thread has returned; True if it had been declared stuck meanwhile."""
        return self._registry._ended(self)


class StuckCalls:
    """A registry of abandoned calls: pending (within grace), stuck, recovered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: list[GiveUp] = []
        self._stuck: list[GiveUp] = []
        self._stuck_total = 0
        self._recovered_total = 0
        self._watchdog: threading.Thread | None = None

    def give_up(
        self, name: str, stage: str, session_id: str = "", *, reason: str = "abandoned", grace_s: float = 2.0,
        on_stuck: Callable[[GiveUp], None] | None = None,
    ) -> GiveUp:
        """Start the grace period of thread ``name``, whose call nobody waits for any more."""
        now = self._clock()
        handle = GiveUp(self, name, stage, session_id, reason, now + max(0.0, grace_s), now, on_stuck)
        with self._cond:
            self._pending.append(handle)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="stuck-call-watchdog", daemon=True)
                self._watchdog.start()
            self._cond.notify_all()
        return handle

    def stats(self) -> StuckStats:
        now = self._clock()
        with self._cond:
            stuck = tuple(
                StuckCall(h.name, h.stage, h.session_id, round(now - h.given_up_at, 1), h.reason) for h in self._stuck
            )
            return StuckStats(stuck, self._stuck_total, self._recovered_total)

    def stuck_names(self, session_id: str | None = None) -> list[str]:
        with self._cond:
            return [h.name for h in self._stuck if session_id is None or h.session_id == session_id]

    def wait_settled(self, timeout: float) -> bool:
        """Block until no call is within its grace period (tests); True if none is."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    # -- internals ---------------------------------------------------------------
    def _ended(self, handle: GiveUp) -> bool:
        with self._cond:
            if handle.state == "pending":
                handle.state = "ended"
                self._pending.remove(handle)
                self._cond.notify_all()
                return False
            if handle.state != "stuck":
                return handle.state == "recovered"
            handle.state = "recovered"
            self._stuck.remove(handle)
            self._recovered_total += 1
        log.warning(
            "%s call thread %s (session %s) finally returned after %.1f s",
            handle.stage, handle.name, handle.session_id or "-", self._clock() - handle.given_up_at,
        )
        return True

    def _watch(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._pending:
                        self._watchdog = None
                        self._cond.notify_all()
                        return
                    now = self._clock()
                    due = [h for h in self._pending if h.deadline <= now]
                    if due:
                        break
                    self._cond.wait(min(h.deadline for h in self._pending) - now)
                for handle in due:
                    handle.state = "stuck"
                    self._pending.remove(handle)
                    self._stuck.append(handle)
                    self._stuck_total += 1
                self._cond.notify_all()
            for handle in due:
                log.error(
                    "%s call thread %s (session %s) was %s and did not stop within %.2f s: abandoned "
                    "(%d stuck now); it is counted until it returns",
                    handle.stage, handle.name, handle.session_id or "-", handle.reason,
                    handle.deadline - handle.given_up_at, len(self._stuck),
                )
                if handle.on_stuck is not None:
                    try:
                        handle.on_stuck(handle)
                    except Exception:
                        log.exception("handling stuck call %s failed", handle.name)


# The process's registry: threads are a process-wide resource, and /health reports them in one place.
STUCK_CALLS = StuckCalls()
