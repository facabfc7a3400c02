"""The capture stage runs in the feeding thread; the recognizer's bounded backlog absorbs a stalled detector."""

from __future__ import annotations

import queue
import threading

import pytest
from support.helpers import EventCollector, FixedTextModel

from voicechat.audio import AudioFrame
from voicechat.core.events import ErrorEvent
from voicechat.engines.protocols import RecognizerCallbacks
from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer, _RecorderBacklog


def test_the_backlog_is_the_queue_realtimestt_expects_but_bounded_and_counted() -> None:
    backlog = _RecorderBacklog(3, "capture")
    for chunk in (b"a", b"b", b"c", b"d", b"e"):
        backlog.put(chunk)
    assert backlog.qsize() == 3 and backlog.evicted == 2
    assert [backlog.get(timeout=0.01) for _ in range(3)] == [b"c", b"d", b"e"]  # the oldest went
    assert backlog.empty()
    with pytest.raises(queue.Empty):  # what RealtimeSTT's loops catch
        backlog.get_nowait()


@pytest.mark.timeout(60)
def test_a_stalled_detector_never_blocks_the_feeder_and_its_evictions_are_counted() -> None:
    recognizer = RealtimeSTTRecognizer("s", FixedTextModel(""), RecognizerCallbacks(), partials=False, backlog_s=0.32)
    stalled, release = threading.Event(), threading.Event()

    def stall(_data: bytes) -> None:
        stalled.set()
        release.wait(30)

    recognizer._recorder.on_recorded_chunk = stall
    try:
        silence = bytes(640)  # 20 ms
        recognizer.feed(silence * 2)
        assert stalled.wait(10)  # the recording thread holds its first chunk
        for _ in range(200):  # 4 s of audio against a 0.32 s backlog: returns at once, evicting
            recognizer.feed(silence)
        assert len(recognizer.backlog) == recognizer.backlog.maxsize == 10
        assert recognizer.backlog.evicted == 200 * 320 // 512 - 10
    finally:
        release.set()
        recognizer.close()


@pytest.mark.timeout(60)
def test_a_frame_the_capture_stage_cannot_take_is_this_sessions_error_not_the_callers(make_manager) -> None:
    session = make_manager().create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.feed_audio(AudioFrame(bytes(640), sample_rate=-1, seq=0))  # no such rate
    errors = collector.wait_for(lambda events: any(isinstance(e, ErrorEvent) for e in events), timeout=10)
    assert [e.stage for e in errors if isinstance(e, ErrorEvent)] == ["capture"]
    assert session.pipeline.queue_stats()["capture"] == {"size": 0, "evicted": 0, "dropped_stale": 0}
