"""Per-connection rate limiting and malformed-message accounting (pure, fake clock)."""

from __future__ import annotations

from voicechat.core.events import ErrorEvent
from voicechat.server.protocol import encode_event
from voicechat.server.rate_limit import MalformedCounter, RateLimiter, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_steady_traffic_within_the_rate_is_never_dropped():
    clock = Clock()
    limiter = RateLimiter(rate=50, clock=clock)
    for _ in range(50 * 60):  # one minute of 20 ms audio frames
        clock.now += 0.02
        assert limiter.check() is Verdict.OK
    assert limiter.dropped == 0


def test_a_burst_is_allowed_then_excess_dropped_then_recovered():
    clock = Clock()
    limiter = RateLimiter(rate=10, clock=clock)
    assert [limiter.check() for _ in range(10)] == [Verdict.OK] * 10  # one second's burst
    assert limiter.check() is Verdict.DROP
    clock.now += 0.5  # pays back the one dropped message, then refills
    assert limiter.check() is Verdict.OK


def test_persistent_flood_closes():
    clock = Clock()
    limiter = RateLimiter(rate=10, abuse_seconds=2.0, clock=clock)
    verdicts = []
    for _ in range(200):
        clock.now += 0.001
        verdicts.append(limiter.check())
        if verdicts[-1] is Verdict.CLOSE:
            break
    assert verdicts[-1] is Verdict.CLOSE
    # 10 burst + about 20 (two seconds' worth) dropped before the close.
    assert 25 <= len(verdicts) <= 35
    assert Verdict.DROP in verdicts


def test_the_client_is_told_of_drops_once_then_at_most_once_a_second():
    clock = Clock()
    limiter = RateLimiter(rate=10, abuse_seconds=100, clock=clock)
    assert [limiter.check() for _ in range(10)] == [Verdict.OK] * 10
    assert [limiter.check() for _ in range(117)] == [Verdict.DROP] + [Verdict.DROP_QUIETLY] * 116
    clock.now += 0.999
    assert limiter.check() is Verdict.DROP_QUIETLY  # still paying back the overdraft: dropped, not told
    clock.now += 0.001
    assert limiter.check() is Verdict.DROP  # a second after the last time it was told
    assert limiter.dropped == 119


def test_malformed_in_a_row_resets_on_a_good_message():
    counter = MalformedCounter(limit=3)
    assert not counter.bad() and not counter.bad()
    counter.good()
    assert not counter.bad() and not counter.bad()
    assert counter.bad()
    assert counter.total == 5


def test_error_events_travel_as_type_error():
    wire = encode_event(ErrorEvent("llm_failed", "model crashed", "llm", 3))
    assert wire == '{"type":"error","code":"llm_failed","message":"model crashed","stage":"llm","generation":3}'
