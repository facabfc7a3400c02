"""TurnJudge: one thread, batched asks, latest ask per session wins, failures give None."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support.helpers import speech
from support.turn_models import smart_turn_or_skip

from voicechat.stt.turn_judge import TurnJudge

WAIT = 5.0


class FakeModel:
    """P(finished) = the audio's first sample; the first call can be held on ``gate``."""

    def __init__(self, hold_first: bool = False, fail: int = 0) -> None:
        self.batches: list[list[float]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.hold_first = hold_first
        self.fail = fail

    def predict(self, audios):
        self.batches.append([float(a[0]) for a in audios])
        if self.hold_first and len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("model broke")
        return [float(a[0]) for a in audios]


class Results:
    def __init__(self) -> None:
        self.got: dict[str, list[float | None]] = {}
        self.events: dict[str, threading.Event] = {}

    def callback(self, key: str):
        self.events[key] = threading.Event()

        def on_result(p: float | None) -> None:
            self.got.setdefault(key, []).append(p)
            self.events[key].set()

        return on_result

    def wait(self, key: str) -> list[float | None]:
        assert self.events[key].wait(WAIT), f"no result for {key}"
        return self.got[key]


def clip(value: float) -> np.ndarray:
    return np.full(1600, value, np.float32)


@pytest.fixture
def judge_of():
    made: list[TurnJudge] = []

    def make(model, **kw) -> TurnJudge:
        made.append(TurnJudge(model, **kw))
        return made[-1]

    yield make
    for j in made:
        j.close()


def test_an_ask_gets_the_models_probability_and_the_thread_starts_lazily(judge_of):
    judge, r = judge_of(FakeModel()), Results()
    assert not any(t.name == "turn-judge" for t in threading.enumerate())
    assert judge.ask("a", clip(0.25), r.callback("a"))
    assert r.wait("a") == [0.25]
    assert judge.stats.calls == 1 and judge.stats.batches == 1 and judge.stats.busy_s >= 0


def test_waiting_asks_run_as_one_batch_and_the_latest_per_session_wins(judge_of):
    model, r = FakeModel(hold_first=True), Results()
    judge = judge_of(model)
    judge.ask("a", clip(0.1), r.callback("a"))
    assert model.entered.wait(WAIT)
    judge.ask("b", clip(0.2), r.callback("b-old"))
    judge.ask("c", clip(0.3), r.callback("c"))
    judge.ask("b", clip(0.4), r.callback("b"))
    assert judge.waiting == 2
    model.gate.set()
    assert r.wait("a") == [pytest.approx(0.1)] and r.wait("c") == [pytest.approx(0.3)]
    assert r.wait("b") == [pytest.approx(0.4)]
    assert [sorted(b) for b in model.batches] == [[pytest.approx(0.1)], [pytest.approx(0.3), pytest.approx(0.4)]]
    assert "b-old" not in r.got
    assert judge.stats.max_batch == 2 and judge.stats.superseded == 1


def test_a_result_that_a_newer_ask_overtook_while_running_is_dropped(judge_of):
    model, r = FakeModel(hold_first=True), Results()
    judge = judge_of(model)
    judge.ask("a", clip(0.1), r.callback("a-old"))
    assert model.entered.wait(WAIT)
    judge.ask("a", clip(0.9), r.callback("a"))
    model.gate.set()
    assert r.wait("a") == [pytest.approx(0.9)]
    assert "a-old" not in r.got


def test_cancel_drops_a_running_ask(judge_of):
    model, r = FakeModel(hold_first=True), Results()
    judge = judge_of(model)
    judge.ask("a", clip(0.1), r.callback("a"))
    assert model.entered.wait(WAIT)
    judge.cancel("a")
    model.gate.set()
    judge.ask("b", clip(0.2), r.callback("b"))
    r.wait("b")  # the thread handles batches in order: a's result would have come first
    assert "a" not in r.got


def test_cancel_waits_for_a_callback_that_is_running(judge_of):
    judge = judge_of(FakeModel())
    entered, release, cancelled = threading.Event(), threading.Event(), threading.Event()

    def slow_callback(p):
        entered.set()
        assert release.wait(WAIT)

    judge.ask("a", clip(0.5), slow_callback)
    assert entered.wait(WAIT)
    canceller = threading.Thread(target=lambda: (judge.cancel("a"), cancelled.set()))
    canceller.start()
    assert not cancelled.wait(0.05)
    release.set()
    assert cancelled.wait(WAIT)
    canceller.join(WAIT)


def test_a_failing_model_gives_none_and_the_thread_goes_on(judge_of):
    judge, r = judge_of(FakeModel(fail=1)), Results()
    judge.ask("a", clip(0.3), r.callback("a"))
    assert r.wait("a") == [None]
    judge.ask("a", clip(0.7), r.callback("a2"))
    assert r.wait("a2") == [pytest.approx(0.7)]
    assert judge.stats.errors == 1


def test_a_failing_callback_is_counted(judge_of):
    judge, r = judge_of(FakeModel()), Results()

    def bad(p):
        raise RuntimeError("callback broke")

    judge.ask("a", clip(0.3), bad)
    judge.ask("b", clip(0.6), r.callback("b"))
    r.wait("b")
    judge.close()
    assert judge.stats.callback_errors == 1


def test_close_joins_the_thread_and_later_asks_are_refused(judge_of):
    judge, r = judge_of(FakeModel()), Results()
    judge.ask("a", clip(0.3), r.callback("a"))
    r.wait("a")
    judge.close()
    assert not any(t.name == "turn-judge" for t in threading.enumerate())
    assert judge.ask("a", clip(0.3), r.callback("late")) is False


def test_asks_are_copied_and_only_the_last_8_s_kept(judge_of):
    seen: list[np.ndarray] = []

    class Keep:
        def predict(self, audios):
            seen.extend(audios)
            return [0.5] * len(audios)

    judge, r = judge_of(Keep()), Results()
    audio = np.zeros(16000 * 10, np.float32)
    audio[-16000 * 8] = 1.0
    judge.ask("a", audio, r.callback("a"))
    audio[:] = 2.0
    r.wait("a")
    assert seen[0].shape == (16000 * 8,) and seen[0][0] == 1.0 and seen[0][1:].max() == 0.0


@pytest.mark.slow
def test_the_real_model_judges_sessions_as_it_does_alone(judge_of):
    model = smart_turn_or_skip()
    clips = {"q": speech("How many legs does a spider have?"), "f": speech("I would like to order a")}
    clips = {k: v.astype(np.float32) / 32768.0 for k, v in clips.items()}
    judge, r = judge_of(model), Results()
    for k, v in clips.items():
        judge.ask(k, v, r.callback(k))
    for k, v in clips.items():
        assert r.wait(k) == [pytest.approx(model.predict([v])[0], abs=1e-5)]
