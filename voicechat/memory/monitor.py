"""Memory pressure: a level (ok, soft, hard) from the process's RSS and the system's memory in use.

``classify`` is pure. ``MemoryMonitor`` samples on its own thread, which
sleeps on an Event between checks (``stop()`` wakes it at once), and hands
each level to a callback: the SessionManager trims histories and drops
disconnected sessions at ``soft``, and refuses new sessions at ``hard``
(``refusal()``, sampled afresh when a session asks to be admitted). The
reading is injectable, so tests drive the levels without allocating memory.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024


class Level(enum.IntEnum):
    OK = 0
    SOFT = 1
    HARD = 2


@dataclass(frozen=True)
class MemoryReading:
    rss_bytes: int
    system_percent: float  # of physical memory in use (psutil: total - available)
    system_available_bytes: int


@dataclass(frozen=True)
class MemoryLimits:
    """Thresholds; 0 turns one off. Either the process's RSS or the system's use can raise the level."""

    soft_rss_mb: int = 0
    hard_rss_mb: int = 0
    soft_system_percent: float = 90.0
    hard_system_percent: float = 95.0
    check_interval_s: float = 5.0
    pressure_history_tokens: int = 512


def read_memory(process: psutil.Process | None = None) -> MemoryReading:
    """This process's RSS and the machine's memory in use."""
    vm = psutil.virtual_memory()
    rss = (process or psutil.Process()).memory_info().rss
    return MemoryReading(rss, vm.percent, vm.available)


def classify(reading: MemoryReading, limits: MemoryLimits) -> tuple[Level, str]:
    """The level and, above ok, why (the first limit passed, hardest first)."""
    rss_mb = reading.rss_bytes / MB
    for level, rss_limit, system_limit in (
        (Level.HARD, limits.hard_rss_mb, limits.hard_system_percent),
        (Level.SOFT, limits.soft_rss_mb, limits.soft_system_percent),
    ):
        if rss_limit and rss_mb > rss_limit:
            return level, f"RSS {rss_mb:.0f} MB > limit {rss_limit} MB"
        if system_limit and reading.system_percent > system_limit:
            return level, f"system memory {reading.system_percent:.0f}% in use > limit {system_limit:g}%"
    return Level.OK, ""


@dataclass
class MemoryStats:
    checks: int = 0
    level: Level = Level.OK
    reason: str = ""
    last: MemoryReading | None = None
    level_changes: int = 0
    histories_trimmed: int = 0  # sessions whose history lost messages to pressure
    messages_trimmed: int = 0
    sessions_dropped: int = 0
    sessions_refused: int = 0


ACTIONS = ("histories_trimmed", "messages_trimmed", "sessions_dropped", "sessions_refused")


class MemoryMonitor:
    """Samples memory every ``limits.check_interval_s`` and reports each level to ``on_level``."""

    def __init__(
        self, limits: MemoryLimits | None = None, reader: Callable[[], MemoryReading] | None = None,
        *, run_thread: bool = True,
    ) -> None:
        self.limits = limits or MemoryLimits()
        self._run_thread = run_thread
        self._process = psutil.Process()
        self._reader = reader or (lambda: read_memory(self._process))
        self.stats = MemoryStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_level: Callable[[Level], None] | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self, on_level: Callable[[Level], None]) -> None:
        """Check now and then every interval on a thread, calling ``on_level`` each time.

        Without ``run_thread`` this only connects ``on_level``: the caller runs ``check()`` (tests).
        """
        if self._thread is not None:
            return
        self._on_level = on_level
        if not self._run_thread:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memory-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                self.check()
            except Exception:
                log.exception("memory check failed")
            if self._stop.wait(self.limits.check_interval_s):
                return

    # -- checks ----------------------------------------------------------------
    def check(self) -> Level:
        """One round: sample, then let ``on_level`` act on the level (what the thread does each interval)."""
        level = self.sample()
        if self._on_level is not None:
            self._on_level(level)
        return level

    def sample(self) -> Level:
        """Read memory now and update the level (logged when it changes)."""
        reading = self._reader()
        level, reason = classify(reading, self.limits)
        with self._lock:
            previous = self.stats.level
            self.stats.checks += 1
            self.stats.last, self.stats.level, self.stats.reason = reading, level, reason
            if level != previous:
                self.stats.level_changes += 1
        if level != previous:
            if level > previous:
                log.warning("memory pressure %s: %s", level.name.lower(), reason)
            else:
                log.info("memory pressure now %s%s", level.name.lower(), f": {reason}" if reason else "")
        return level

    def refusal(self) -> str | None:
        """Why a new session must be refused now (hard pressure), or None; counts refusals."""
        level = self.sample()
        if level < Level.HARD:
            return None
        with self._lock:
            self.stats.sessions_refused += 1
            reason = self.stats.reason
        return f"server is low on memory ({reason}); try again later"

    def count(self, action: str, n: int = 1) -> None:
        """Add to one of ``ACTIONS`` (the manager reports what it did about the pressure)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown memory action {action!r}")
        with self._lock:
            setattr(self.stats, action, getattr(self.stats, action) + n)

    @property
    def level(self) -> Level:
        with self._lock:
            return self.stats.level

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            s = self.stats
            last = s.last
            return {
                "level": s.level.name.lower(), "reason": s.reason or None, "checks": s.checks,
                "rss_mb": round(last.rss_bytes / MB, 1) if last else None,
                "system_percent": last.system_percent if last else None,
                "system_available_mb": round(last.system_available_bytes / MB, 1) if last else None,
                "limits": {
                    "soft_rss_mb": self.limits.soft_rss_mb, "hard_rss_mb": self.limits.hard_rss_mb,
                    "soft_system_percent": self.limits.soft_system_percent,
                    "hard_system_percent": self.limits.hard_system_percent,
                },
                "actions": {a: getattr(s, a) for a in ACTIONS},
                "level_changes": s.level_changes,
            }
