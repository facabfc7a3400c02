"""Per-connection message rate limiting and abuse accounting (pure, clock injected).

A token bucket admits ``rate`` messages per second with a burst of one second's
worth. Messages over the limit are dropped; the client hears ``rate_limited``
for the first dropped message and then at most once per ``tell_every_s`` while
drops go on (one error per dropped message would double the flood). A client
that keeps pushing until its overdraft passes ``abuse_seconds`` worth of
messages is abusive and gets disconnected. Malformed messages are counted in a
row: a working client sends one by mistake, a broken or hostile one many.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class Verdict(str, Enum):
    OK = "ok"
    DROP = "drop"  # over the rate: drop this message, tell the client
    DROP_QUIETLY = "drop_quietly"  # over the rate, and the client was told less than tell_every_s ago
    CLOSE = "close"  # persistent abuse: close the connection (1008)


@dataclass
class RateLimiter:
    """Token bucket with an overdraft counter; ``check()`` once per received message."""

    rate: float
    abuse_seconds: float = 2.0
    tell_every_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _overdraft: float = field(default=0.0, init=False)
    _last: float = field(init=False)
    _told: float | None = field(default=None, init=False)
    dropped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        self._tokens = self.rate
        self._last = self.clock()

    def check(self) -> Verdict:
        now = self.clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        refill = elapsed * self.rate
        # Time spent within the limit pays the overdraft back first.
        paid = min(self._overdraft, refill)
        self._overdraft -= paid
        self._tokens = min(self.rate, self._tokens + refill - paid)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.OK
        self.dropped += 1
        self._overdraft += 1.0
        if self._overdraft > self.rate * self.abuse_seconds:
            return Verdict.CLOSE
        if self._told is not None and now - self._told < self.tell_every_s:
            return Verdict.DROP_QUIETLY
        self._told = now
        return Verdict.DROP


@dataclass
class MalformedCounter:
    """Malformed messages in a row; any good message resets the count."""

    limit: int = 20
    in_a_row: int = 0
    total: int = 0

    def bad(self) -> bool:
        """Count one malformed message; True when the connection should close."""
        self.in_a_row += 1
        self.total += 1
        return self.in_a_row >= self.limit

    def good(self) -> None:
        self.in_a_row = 0
