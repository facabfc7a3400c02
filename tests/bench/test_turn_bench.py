"""bench turns: the evidence set's making and the scoring of end-of-turn rules (no models)."""

import math

import numpy as np
import pytest

from voicechat.bench import turn_evidence as te
from voicechat.bench.turn_scoring import Observed, Signal, choose, end_silence, percentile, summarize, sweep
from voicechat.stt.turn_end import FIXED, TurnEndRules


def test_the_evidence_set_is_big_enough_and_its_pauses_are_mid_sentence():
    assert len(te.COMPLETE) >= 30 and len(te.PAUSED) >= 30
    for sentence in te.PAUSED:
        before, after = te.split(sentence)
        share = len(before) / (len(before) + 1 + len(after))
        assert 0.35 <= share <= 0.65, sentence
        assert not before.endswith((".", "?", "!")) and after


def test_a_cut_lands_in_the_quiet_gap_and_within_35_to_65_percent():
    rate = te.RATE
    tone = lambda s: (8000 * np.sin(np.arange(int(s * rate)) * 0.2)).astype(np.int16)  # noqa: E731
    gap = np.zeros(int(0.05 * rate), np.int16)
    speech = np.concatenate([tone(0.5), gap, tone(0.3), gap, tone(0.6)])  # gaps at 0.50-0.55 s and 0.85-0.90 s
    audio, cut, share = te.paused(speech, "one two | three four five", 0.8)
    assert 0.35 <= share <= 0.65
    assert int(0.5 * rate) <= cut <= int(0.55 * rate)
    assert len(audio) == len(speech) + int(0.8 * rate) and not audio[cut : cut + int(0.8 * rate)].any()


@pytest.mark.slow
def test_espeak_evidence_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(te, "COMPLETE", te.COMPLETE[:1])
    monkeypatch.setattr(te, "PAUSED", te.PAUSED[:1])
    try:
        a, b = te.build("espeak", tmp_path), te.load("espeak", tmp_path)
    except te_unavailable() as exc:
        pytest.skip(str(exc))
    assert [u.name for u in a] == ["espeak/complete/00", "espeak/paused/00"]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.audio, y.audio)
    paused = a[1]
    assert 0.6 <= paused.pause_s <= 1.2 and paused.speech_start < paused.pause_start < paused.speech_end
    assert np.abs(paused.audio[paused.pause_start : paused.pause_end].astype(float)).max() < 100  # room noise only
    assert te.load("espeak", tmp_path)[1].pause_s == paused.pause_s  # from the cache


def te_unavailable():
    from voicechat.speech_samples import SpeechSynthesisUnavailable

    return SpeechSynthesisUnavailable


def item(kind: str, available: float, audio=None, words=None, audio_at=0.25, words_at=0.3) -> Observed:
    signals = {}
    if audio is not None:
        signals["audio"] = Signal(audio, audio_at, 50.0)
    if words is not None:
        signals["words"] = Signal(words, words_at, 200.0)
    return Observed("x", "v", kind, available, 0.1, True, "", signals)


def test_end_silence_replays_the_decision_as_signals_come_in():
    both = TurnEndRules(combine="both")
    assert end_silence(both, item("complete", math.inf, 0.9, 0.9)) == pytest.approx(0.3)
    assert end_silence(both, item("complete", math.inf, 0.9, 0.1)) == pytest.approx(1.5)
    assert end_silence(both, item("paused", 0.8, 0.9, 0.1)) is None
    assert end_silence(both, item("paused", 0.8, 0.9, 0.9)) == pytest.approx(0.3)
    assert end_silence(FIXED, item("paused", 0.8)) == pytest.approx(0.6)
    assert end_silence(FIXED, item("paused", 0.5)) is None


def test_summaries_and_choosing_the_fastest_rule_that_cuts_few_pauses():
    items = [item("complete", math.inf, 0.9, 0.9), item("complete", math.inf, 0.9, 0.2),
             item("paused", 1.0, 0.9, 0.2), item("paused", 1.0, 0.2, 0.9)]
    fixed = summarize(FIXED, items)
    assert (fixed.end_p50_ms, fixed.cut, fixed.paused) == (600, 2, 2)
    rules, key, score = choose(sweep(TurnEndRules()), items, max_cut=0.0)
    assert score.cut == 0 and score.ended_by_signals == 1 and key == "words"
    assert summarize(rules, items).as_dict()["cut_percent"] == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
