"""The shared STT scheduler's threads: ordering, batching, latest-wins, cancellation, failure."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from voicechat.engines.protocols import EngineError, SpeechInput
from voicechat.stt.scheduler import SttScheduler

WAIT = 10.0


class GatedModel:
    """Each batch reports that it started, then waits for a permit; text = the input's tag."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.started: queue.Queue[list[tuple[str, bool, str]]] = queue.Queue()
        self.permits = threading.Semaphore(0)
        self.fail_on = fail_on
        self.closed = False

    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        batch = [(i.session_id, i.final, tag_of(i.audio)) for i in inputs]
        self.started.put(batch)
        assert self.permits.acquire(timeout=WAIT), "test never released the batch"
        if self.fail_on is not None and any(tag == self.fail_on for _, _, tag in batch):
            raise RuntimeError("model exploded")
        return [tag for _, _, tag in batch]

    def next_batch(self) -> list[tuple[str, bool, str]]:
        return self.started.get(timeout=WAIT)

    def close(self) -> None:
        self.closed = True


def tagged(tag: str) -> np.ndarray:
    """Audio that carries a tag in its samples, so the model can tell requests apart."""
    return np.frombuffer(tag.encode().ljust(16, b" "), dtype=np.uint8).astype(np.float32)


def tag_of(audio: np.ndarray) -> str:
    return bytes(audio.astype(np.uint8)).decode().strip()


@pytest.fixture
def model_and_scheduler() -> Iterator[tuple[GatedModel, SttScheduler]]:
    model = GatedModel()
    scheduler = SttScheduler(model, max_batch=8)
    yield model, scheduler
    model.permits.release(100)
    scheduler.close()


def final_in_thread(scheduler: SttScheduler, sid: str, tag: str, results: dict[str, object]) -> threading.Thread:
    def run() -> None:
        try:
            results[sid] = scheduler.transcribe(tagged(tag), session_id=sid, final=True)
        except EngineError as exc:
            results[sid] = exc

    thread = threading.Thread(target=run, name=f"final-{sid}")
    thread.start()
    return thread


def test_a_partial_flood_delays_another_sessions_final_by_at_most_one_job(model_and_scheduler) -> None:
    model, scheduler = model_and_scheduler
    got: list[str] = []
    scheduler.request_partial("flood", tagged("p0"), got.append)
    assert model.next_batch() == [("flood", False, "p0")]  # running now
    results: dict[str, object] = {}
    waiter = final_in_thread(scheduler, "victim", "final", results)
    # The flood goes on while the victim waits; each new partial replaces the last one.
    for i in range(1, 50):
        scheduler.request_partial("flood", tagged(f"p{i}"), got.append)
    model.permits.release()  # p0 done
    assert model.next_batch() == [("victim", True, "final")], "the final runs right after the one running job"
    model.permits.release()
    waiter.join(WAIT)
    assert results["victim"] == "final"
    assert model.next_batch() == [("flood", False, "p49")], "only the latest partial of the flood runs"
    model.permits.release()
    scheduler.close()
    assert got == ["p0", "p49"]
    assert scheduler.stats.partials_dropped >= 1
    assert scheduler.stats.finals_behind_partial == 1 and scheduler.stats.final_wait_s > 0  # it waited for p0
    assert model.started.empty()


def test_finals_waiting_together_are_decoded_in_one_batch(model_and_scheduler) -> None:
    model, scheduler = model_and_scheduler
    results: dict[str, object] = {}
    first = final_in_thread(scheduler, "s0", "t0", results)
    assert model.next_batch() == [("s0", True, "t0")]
    waiters = [final_in_thread(scheduler, f"s{i}", f"t{i}", results) for i in range(1, 5)]
    # All four are queued while s0 decodes: wait for that, then let s0 finish.
    _wait_until(lambda: scheduler.queued == 4)
    model.permits.release()
    batch = model.next_batch()
    assert sorted(batch) == [(f"s{i}", True, f"t{i}") for i in range(1, 5)]
    model.permits.release()
    for t in [first, *waiters]:
        t.join(WAIT)
    assert results == {f"s{i}": f"t{i}" for i in range(5)}
    assert scheduler.stats.batch_sizes[4] == 1


def test_partials_waiting_while_the_model_is_loaded_are_shed_and_finals_still_run() -> None:
    model = GatedModel()
    # Any busy time at all is "too loaded" here, so the decision does not depend on how long a batch took.
    scheduler = SttScheduler(model, partial_max_load=1e-9)
    try:
        results: dict[str, object] = {}
        got: list[str] = []
        waiter = final_in_thread(scheduler, "a", "final", results)
        assert model.next_batch() == [("a", True, "final")]
        scheduler.request_partial("b", tagged("p"), got.append)  # queued while the final decodes
        model.permits.release()
        waiter.join(WAIT)
        assert results["a"] == "final"
        _wait_until(lambda: scheduler.stats.partials_shed == 1)
        assert scheduler.queued == 0 and got == [] and model.started.empty()
        final_in_thread(scheduler, "b", "later", results)  # a final is never shed
        assert model.next_batch() == [("b", True, "later")]
        model.permits.release()
    finally:
        scheduler.close()


def test_spare_time_is_none_while_a_final_waits_or_the_model_was_loaded() -> None:
    model = GatedModel()
    scheduler = SttScheduler(model, partial_max_load=1e-9)  # any busy time is too much
    idle = SttScheduler(GatedModel())  # no load limit: spare unless a final waits
    try:
        assert scheduler.has_spare_time() and idle.has_spare_time()  # nothing has run yet
        results: dict[str, object] = {}
        first = final_in_thread(scheduler, "a", "one", results)
        assert model.next_batch() == [("a", True, "one")]
        second = final_in_thread(scheduler, "b", "two", results)
        _wait_until(lambda: scheduler.queued == 1)
        assert not scheduler.has_spare_time()  # a final waits
        model.permits.release(2)
        first.join(WAIT)
        second.join(WAIT)
        assert results == {"a": "one", "b": "two"}
        assert not scheduler.has_spare_time()  # nothing waits, but the model has just been busy
    finally:
        model.permits.release(10)
        scheduler.close()
        idle.close()


class TimedModel:
    """Answers at once; counts its calls by kind."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        self.calls += [i.final for i in inputs]
        return ["" for _ in inputs]


def test_warm_up_measures_each_kind_and_the_stall_limits_follow_it() -> None:
    from voicechat.engines.stall_watch import stall_limit

    model = TimedModel()
    scheduler = SttScheduler(model, call_timeout_s=10.0)
    try:
        assert scheduler.stall_after_s(final=True) == 2.5  # nothing measured: a quarter of the timeout
        measured = scheduler.warm_up(np.zeros(16000, np.float32), "en")
        assert model.calls == [True, False] and set(measured) == {True, False}
        for final in (True, False):
            assert scheduler.stall_after_s(final=final) == stall_limit([], 10.0, baseline_s=measured[final])
    finally:
        scheduler.close()


def test_a_failing_batch_errors_its_callers_and_the_scheduler_goes_on() -> None:
    model = GatedModel(fail_on="bad")
    scheduler = SttScheduler(model)
    model.permits.release(10)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            scheduler.transcribe(tagged("bad"), session_id="a", final=True)
        assert scheduler.transcribe(tagged("good"), session_id="b", final=True) == "good"
        assert scheduler.stats.errors == 1
    finally:
        scheduler.close()


def test_cancel_and_close_release_waiting_callers(model_and_scheduler) -> None:
    model, scheduler = model_and_scheduler
    results: dict[str, object] = {}
    busy = final_in_thread(scheduler, "busy", "b", results)
    model.next_batch()
    cancelled = final_in_thread(scheduler, "gone", "g", results)
    stranded = final_in_thread(scheduler, "late", "l", results)
    _wait_until(lambda: scheduler.queued == 2)
    scheduler.cancel("gone")
    cancelled.join(WAIT)
    assert isinstance(results["gone"], EngineError)
    model.permits.release()
    model.next_batch()  # "late" starts; close while it runs
    model.permits.release()
    scheduler.close()
    for t in (busy, stranded):
        t.join(WAIT)
    assert results["busy"] == "b" and results["late"] == "l"
    assert model.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("stt-scheduler")]
    with pytest.raises(EngineError):
        scheduler.transcribe(tagged("x"), session_id="x", final=True)


def _wait_until(predicate, timeout: float = WAIT) -> None:
    """Requests reach the queue from other threads; check at short intervals up to a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)
