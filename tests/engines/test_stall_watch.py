"""The stall/timeout policy of shared engine workers (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from voicechat.engines.stall_watch import STALL_FLOOR_S, check, needs_spare, stall_limit


@dataclass
class Call:
    started: float
    stalled: bool = False
    timed_out: bool = False
    size: int = 1


def test_stall_limit_adapts_to_recent_call_times_within_bounds() -> None:
    assert stall_limit([], None) is None
    assert stall_limit([], 10.0) == 2.5  # no history yet: a quarter of the timeout
    assert stall_limit([], 1.0) == STALL_FLOOR_S
    assert stall_limit([0.1] * 20, 10.0) == STALL_FLOOR_S  # fast engine: the floor
    assert stall_limit([0.4] * 17 + [0.8, 0.8, 5.0], 10.0) == 4.0 * 0.8  # 90th percentile: one outlier ignored
    assert stall_limit([4.0] * 20, 10.0) == 5.0  # slow engine: at most half the timeout
    assert stall_limit([0.1] * 20, 10.0, fixed_s=0.2) == 0.2
    assert stall_limit([0.3] * 20, 10.0, size=4) == pytest.approx(4.0 * 0.3 * 4)  # a batch of four


def test_stall_limit_never_assumes_the_model_faster_than_its_measured_pace() -> None:
    # A warm-up measured 0.6 s for one utterance: that is the pace before any history...
    assert stall_limit([], 10.0, baseline_s=0.6) == pytest.approx(4.0 * 0.6)
    # ... and the least it is taken to be: items decoded eight at a time cost 0.1 s each, one alone does not.
    assert stall_limit([0.1] * 20, 10.0, baseline_s=0.6) == pytest.approx(4.0 * 0.6)
    assert stall_limit([0.9] * 20, 10.0, baseline_s=0.6) == pytest.approx(4.0 * 0.9)  # slower under load: followed
    assert stall_limit([], 1.0, baseline_s=0.6) == 0.5  # still at most half the timeout


def half(_call: Call) -> float:
    return 0.5


def test_check_marks_each_deadline_once_and_says_when_to_wake() -> None:
    a, b = Call(started=0.0), Call(started=1.0)
    due = check([a, b], now=0.6, stall_for=half, timeout_s=2.0)
    assert due.stalled == [a] and due.timed_out == [] and due.wake_in_s == 0.9  # b stalls at 1.5
    due = check([a, b], now=1.5, stall_for=half, timeout_s=2.0)
    assert due.stalled == [b] and due.wake_in_s == 0.5  # a times out at 2.0
    due = check([a, b], now=2.0, stall_for=half, timeout_s=2.0)
    assert due.stalled == [] and due.timed_out == [a] and due.wake_in_s == 1.0
    assert check([], now=5.0, stall_for=half, timeout_s=2.0).wake_in_s is None
    assert check([Call(0.0)], now=100.0, stall_for=lambda _c: None, timeout_s=None).wake_in_s is None


def test_a_spare_only_when_work_waits_and_the_cap_allows() -> None:
    assert needs_spare(threads=1, stalled=1, workers=1, max_threads=3, waiting=2)
    assert not needs_spare(threads=1, stalled=1, workers=1, max_threads=3, waiting=0)
    assert not needs_spare(threads=2, stalled=1, workers=1, max_threads=3, waiting=2)  # one is available
    assert not needs_spare(threads=3, stalled=3, workers=1, max_threads=3, waiting=2)  # at the cap
