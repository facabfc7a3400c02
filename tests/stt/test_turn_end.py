"""The end-of-turn decision: silence so far and the signals in so far."""

import pytest

from voicechat.stt.turn_end import FIXED, Decision, TurnEndRules, decide

END, WAIT, HOLD = Decision.END, Decision.WAIT, Decision.HOLD
RULES = TurnEndRules(min_silence_s=0.2, max_silence_s=1.5, signal_timeout_s=0.6, combine="both")


def test_never_before_the_minimum_always_at_the_maximum():
    assert decide(RULES, 0.1, 1.0, 1.0).decision is WAIT
    assert decide(RULES, 1.5, 0.0, 0.0) == decide(RULES, 1.5)
    assert decide(RULES, 1.5).reason == "max_silence" and decide(RULES, 1.5).decision is END


def test_both_signals_finished_ends_at_the_minimum():
    assert decide(RULES, 0.2, 0.9, 0.9).decision is END
    assert decide(RULES, 0.2, 0.9, 0.1).decision is HOLD
    assert decide(RULES, 0.2, 0.1, 0.9).decision is HOLD


def test_a_missing_signal_is_waited_for_until_the_timeout_then_left_out():
    assert decide(RULES, 0.3, 0.9, None).decision is WAIT
    assert decide(RULES, 0.6, 0.9, None).decision is END
    assert decide(RULES, 0.6, None, 0.1).decision is HOLD


def test_no_signal_at_all_is_the_fixed_silence_rule():
    assert [decide(RULES, s).decision for s in (0.3, 0.59, 0.6)] == [WAIT, WAIT, END]
    assert decide(RULES, 0.6).reason == "no_signal"
    assert [decide(FIXED, s, 1.0, 1.0).decision for s in (0.2, 0.59, 0.6)] == [WAIT, WAIT, END]


@pytest.mark.parametrize(("combine", "audio", "words", "expected"), [
    ("audio", 0.9, 0.0, END), ("audio", 0.1, 1.0, HOLD), ("audio", 0.9, None, END),
    ("words", 0.0, 0.9, END), ("words", 1.0, 0.1, HOLD), ("words", None, 0.9, END),
    ("either", 0.9, 0.1, END), ("either", 0.1, 0.1, HOLD),
    ("mean", 0.9, 0.4, END), ("mean", 0.7, 0.4, HOLD),
])
def test_combinations(combine, audio, words, expected):
    rules = TurnEndRules(combine=combine, mean_threshold=0.6, audio_weight=0.5)
    assert decide(rules, 0.25, audio, words).decision is expected


def test_a_signal_the_rules_do_not_use_is_not_waited_for():
    assert decide(TurnEndRules(combine="audio"), 0.25, 0.9, None).decision is END
    assert decide(TurnEndRules(combine="words"), 0.25, None, 0.9).decision is END
    assert TurnEndRules(combine="audio").uses() == (True, False)
