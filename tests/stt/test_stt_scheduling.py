"""The STT scheduling policy, the partial stabilizer and the utterance buffer (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicechat.stt.partial_stabilizer import PartialStabilizer
from voicechat.stt.scheduling import BusyMeter, Job, SttSchedule, partials_may_run
from voicechat.stt.utterance_buffer import UtteranceBuffer


def job(sid: str, final: bool, tag: str = "") -> Job[str]:
    return Job(sid, final, tag or f"{sid}-{'F' if final else 'P'}")


# -- SttSchedule -----------------------------------------------------------------------------
def test_finals_go_before_partials_even_when_queued_later() -> None:
    s: SttSchedule[str] = SttSchedule()
    s.submit(job("a", False))
    s.submit(job("b", False))
    s.submit(job("c", True))
    assert [j.payload for j in s.next_batch()] == ["c-F"]
    assert sorted(j.payload for j in s.next_batch()) == ["a-P", "b-P"]
    assert s.next_batch() == []


def test_a_newer_partial_replaces_the_waiting_one_and_keeps_its_place() -> None:
    s: SttSchedule[str] = SttSchedule(max_batch=1)
    s.submit(job("a", False, "a1"))
    s.submit(job("b", False, "b1"))
    replaced = s.submit(job("a", False, "a2"))
    assert replaced is not None and replaced.payload == "a1"
    assert len(s) == 2
    assert [j.payload for j in s.next_batch()] == ["a2"]  # a was first in line
    assert [j.payload for j in s.next_batch()] == ["b1"]


def test_finals_of_waiting_sessions_form_one_batch_up_to_max() -> None:
    s: SttSchedule[str] = SttSchedule(max_batch=3)
    for sid in "abcde":
        s.submit(job(sid, True))
    assert [j.session_id for j in s.next_batch()] == ["a", "b", "c"]
    assert [j.session_id for j in s.next_batch()] == ["d", "e"]


def test_round_robin_between_sessions_for_finals() -> None:
    s: SttSchedule[str] = SttSchedule(max_batch=1)
    for tag in ("a1", "a2", "a3"):
        s.submit(job("a", True, tag))
    s.submit(job("b", True, "b1"))
    order = [s.next_batch()[0].payload for _ in range(4)]
    assert order == ["a1", "b1", "a2", "a3"]


def test_cancel_removes_a_sessions_jobs() -> None:
    s: SttSchedule[str] = SttSchedule()
    s.submit(job("a", True))
    s.submit(job("a", False))
    s.submit(job("b", False))
    assert [j.payload for j in s.cancel("a", partials_only=True)] == ["a-P"]
    assert [j.payload for j in s.cancel("a")] == ["a-F"]
    assert [j.payload for j in s.next_batch()] == ["b-P"]


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), max_size=40), st.integers(1, 4))
def test_every_final_runs_once_and_at_most_one_partial_per_session_waits(ops, max_batch) -> None:
    s: SttSchedule[int] = SttSchedule(max_batch)
    finals: list[int] = []
    for i, (sid, final) in enumerate(ops):
        s.submit(Job(sid, final, i))
        if final:
            finals.append(i)
    ran: list[Job[int]] = []
    while batch := s.next_batch():
        assert len(batch) <= max_batch
        assert len({j.final for j in batch}) == 1, "finals and partials never share a batch"
        ran.extend(batch)
    assert sorted(j.payload for j in ran if j.final) == finals
    assert all(j.final for j in ran[: len(finals)]), "all finals before any partial"
    partial_sessions = [j.session_id for j in ran if not j.final]
    assert len(partial_sessions) == len(set(partial_sessions))


# -- PartialStabilizer ---------------------------------------------------------------------
def test_words_become_stable_when_consecutive_hypotheses_agree() -> None:
    stab = PartialStabilizer()
    first = stab.update("what is")
    assert first.stable == "" and first.text == "what is"
    second = stab.update("what is the weather")
    assert second.stable == "what is"
    third = stab.update("what is the weather like")
    assert third.stable == "what is the weather"
    assert third.text == "what is the weather like"


def test_the_last_word_stays_tentative_because_it_may_be_cut() -> None:
    stab = PartialStabilizer()
    stab.update("hello there")
    assert stab.update("hello there").stable == "hello"


def test_case_and_punctuation_do_not_break_agreement() -> None:
    stab = PartialStabilizer()
    stab.update("Hello, world how")
    assert stab.update("hello world how are").stable == "hello world how"


def test_stable_words_are_never_taken_back_and_reset_starts_over() -> None:
    stab = PartialStabilizer()
    stab.update("turn on the light")
    assert stab.update("turn on the light please").stable == "turn on the light"
    changed = stab.update("turn off the lights please")
    assert changed.stable == "turn on the light"
    assert changed.text == "turn on the light please"
    stab.reset()
    assert stab.update("new words").stable == ""


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8), max_size=12))
def test_stable_text_only_grows(hypotheses) -> None:
    stab = PartialStabilizer()
    previous = ""
    for words in hypotheses:
        out = stab.update(" ".join(words))
        assert out.stable.startswith(previous)
        assert out.text.startswith(out.stable)
        previous = out.stable


# -- partials only from spare time ---------------------------------------------------------------
def test_the_busy_meter_measures_the_share_of_the_recent_window() -> None:
    meter = BusyMeter(window_s=2.0)
    assert meter.load(now=10.0) == 0.0
    meter.begin(10.0)
    assert meter.load(now=10.5) == pytest.approx(0.25)  # running for 0.5 s of the last 2
    meter.begin(10.2)  # a spare worker overlaps: busy time counts once
    meter.end(10.6)
    meter.end(11.0)
    assert meter.load(now=11.0) == pytest.approx(0.5)
    assert meter.load(now=12.5) == pytest.approx(0.25)  # only 11.0 - 10.5 is still in the window
    assert meter.load(now=13.0) == 0.0  # all of it out of the window


def test_partials_run_only_below_the_load_limit() -> None:
    assert partials_may_run(0.49, 0.5)
    assert not partials_may_run(0.5, 0.5)
    assert partials_may_run(1.0, None)  # no limit: partials whenever the model is free


def test_a_saturated_model_drops_its_waiting_partials_but_never_finals() -> None:
    schedule: SttSchedule[str] = SttSchedule()
    for j in (job("a", False), job("b", False), job("c", True)):
        schedule.submit(j)
    assert [j.payload for j in schedule.drop_partials()] == ["a-P", "b-P"]
    assert schedule.finals_waiting == 1 and [j.payload for j in schedule.next_batch()] == ["c-F"]
    assert len(schedule) == 0


# -- UtteranceBuffer ---------------------------------------------------------------------------
def pcm(seconds: float, value: int = 1000) -> bytes:
    return np.full(int(seconds * 16000), value, np.int16).tobytes()


def test_partials_are_due_every_interval_of_speech_with_the_pre_roll() -> None:
    buf = UtteranceBuffer(pre_roll_s=0.2, interval_s=0.3, min_s=0.3)
    for _ in range(50):
        assert buf.add(pcm(0.02, 7)) is None  # silence before speech: only the pre-roll is kept
    buf.start()
    due = [buf.add(pcm(0.02)) for _ in range(40)]  # 0.8 s of speech
    snapshots = [d for d in due if d is not None]
    assert len(snapshots) == 3  # ~every 0.3 s (the pre-roll counts toward the first)
    first = snapshots[0]
    assert abs(len(first) - 0.3 * 16000) <= 320
    assert first[0] == pytest.approx(7 / 32768)  # starts with pre-roll audio
    assert len(snapshots[-1]) > len(first)
    buf.stop()
    assert buf.add(pcm(0.5)) is None


def test_no_partial_is_asked_for_while_the_user_is_silent() -> None:
    buf = UtteranceBuffer(pre_roll_s=0, interval_s=0.3, min_s=0.3)
    buf.start()
    assert [d for d in (buf.add(pcm(0.02)) for _ in range(15)) if d is not None] != []  # 0.3 s of speech
    pause = [buf.add(pcm(0.02, 0), silent=True) for _ in range(30)]  # 0.6 s: the turn may be ending
    assert pause == [None] * 30
    due = [d for d in (buf.add(pcm(0.02)) for _ in range(15)) if d is not None]  # the user goes on
    assert len(due) == 1 and len(due[0]) == int(1.2 * 16000)  # the pause is kept in the audio


def test_utterance_counter_tells_old_results_apart() -> None:
    buf = UtteranceBuffer()
    buf.start()
    first = buf.utterance
    buf.stop()
    buf.start()
    assert buf.utterance == first + 1


def test_long_utterances_keep_only_the_last_max_seconds() -> None:
    buf = UtteranceBuffer(pre_roll_s=0, interval_s=0.5, min_s=0, max_s=1.0)
    buf.start()
    due = [d for d in (buf.add(pcm(0.02)) for _ in range(150)) if d is not None]
    assert len(due) == 6 and len(due[-1]) == 16000
