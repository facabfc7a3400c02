"""The shared STT scheduler under faults: hung batches, starved workers, poison inputs, an open circuit."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from voicechat.engines.call_guard import EngineTimeout
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from voicechat.engines.protocols import SpeechInput
from voicechat.engines.stuck_calls import StuckCalls
from voicechat.stt.scheduler import SttScheduler

WAIT = 10.0


def tagged(tag: str) -> np.ndarray:
    return np.frombuffer(tag.encode().ljust(16, b" "), dtype=np.uint8).astype(np.float32)


def tag_of(audio: np.ndarray) -> str:
    return bytes(audio.astype(np.uint8)).decode().strip()


class FaultyModel:
    """Text = the input's tag; a batch with "hang" blocks until ``release``; one with "bad" raises."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[str]] = []

    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        tags = [tag_of(i.audio) for i in inputs]
        self.batches.append(tags)
        if "hang" in tags:
            self.hanging.set()
            self.release.wait(WAIT * 3)
        assert self.gate.wait(WAIT)
        if "bad" in tags:
            raise RuntimeError("poison input")
        return tags


def final(scheduler: SttScheduler, sid: str, tag: str, results: dict[str, object]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        try:
            results[sid] = scheduler.transcribe(tagged(tag), session_id=sid, final=True)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[sid] = exc
        results[f"{sid}_s"] = time.monotonic() - started

    thread = threading.Thread(target=run, name=f"final-{sid}")
    thread.start()
    return thread


@pytest.fixture
def model() -> FaultyModel:
    m = FaultyModel()
    yield m
    m.release.set()
    m.gate.set()


def test_a_hung_batch_hands_the_queue_to_a_spare_worker_then_times_out(model: FaultyModel) -> None:
    stuck = StuckCalls()
    scheduler = SttScheduler(model, call_timeout_s=1.0, stall_after_s=0.2, stuck=stuck)
    results: dict[str, object] = {}
    try:
        hung = final(scheduler, "hung", "hang", results)
        assert model.hanging.wait(WAIT)
        final(scheduler, "other", "hello", results).join(WAIT)
        assert results["other"] == "hello"
        assert results["other_s"] < 0.2 + 0.5  # the stall limit, not the timeout
        hung.join(WAIT)
        assert isinstance(results["hung"], EngineTimeout) and 0.9 < results["hung_s"] < 1.0 + 1.5
        assert scheduler.breaker.stats().failures_total == 1
        assert (scheduler.stats.stalls, scheduler.stats.timeouts) == (1, 1)
        assert stuck.wait_settled(WAIT) and stuck.stuck_names("hung") == ["stt-scheduler-0"]
        assert scheduler.worker_threads == 2
        model.release.set()  # it comes back late: its result is dropped and it retires
        deadline = time.monotonic() + WAIT
        while scheduler.worker_threads > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.worker_threads == 1 and stuck.stuck_names() == []
        assert scheduler.transcribe(tagged("again"), session_id="hung", final=True) == "again"
    finally:
        model.release.set()
        assert scheduler.close()


def test_with_every_worker_stuck_callers_time_out_and_the_circuit_opens(model: FaultyModel) -> None:
    breaker = CircuitBreaker("speech recogniser", failure_threshold=2, window_s=60, cooldown_s=60)
    scheduler = SttScheduler(model, call_timeout_s=0.5, stall_after_s=0.1, spare_workers=0, breaker=breaker,
                             stuck=StuckCalls())
    results: dict[str, object] = {}
    try:
        hung = final(scheduler, "a", "hang", results)
        assert model.hanging.wait(WAIT)
        final(scheduler, "b", "queued", results).join(WAIT)
        hung.join(WAIT)
        assert isinstance(results["a"], EngineTimeout) and isinstance(results["b"], EngineTimeout)
        assert breaker.state is BreakerState.OPEN  # a's hang, then b starved behind it: two failures
        assert breaker.stats().failures_total == 2
        started = time.monotonic()
        with pytest.raises(CircuitOpenError, match="speech recogniser is not available right now"):
            scheduler.transcribe(tagged("c"), session_id="c", final=True)
        assert time.monotonic() - started < 0.1
        queued = scheduler.queued  # b's request, cancelled, waits to be dropped by a worker
        scheduler.request_partial("c", tagged("p"), [].append)  # skipped while open: no probe, no error
        assert scheduler.queued == queued and scheduler.stats.rejected == 1
    finally:
        model.release.set()
        scheduler.close()


def test_a_failed_batch_is_retried_one_utterance_at_a_time(model: FaultyModel) -> None:
    scheduler = SttScheduler(model, max_batch=8)
    results: dict[str, object] = {}
    try:
        model.gate.clear()
        first = final(scheduler, "s0", "first", results)
        deadline = time.monotonic() + WAIT
        while not model.batches and time.monotonic() < deadline:
            time.sleep(0.005)
        waiters = [final(scheduler, sid, tag, results) for sid, tag in (("s1", "good"), ("s2", "bad"), ("s3", "fine"))]
        while scheduler.queued < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        model.gate.set()
        for t in [first, *waiters]:
            t.join(WAIT)
        assert sorted(model.batches[1]) == ["bad", "fine", "good"]  # one batch, which failed
        assert sorted(map(tuple, model.batches[2:])) == [("bad",), ("fine",), ("good",)]
        assert (results["s0"], results["s1"], results["s3"]) == ("first", "good", "fine")
        assert isinstance(results["s2"], RuntimeError)
        s = scheduler.breaker.stats()
        assert (s.failures_total, s.successes_total) == (1, 3)  # only the poison input counts
    finally:
        scheduler.close()
