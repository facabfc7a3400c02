"""The echo stage's parts on plain arrays: the simulated room, the delay estimate, the canceller's framing and
far-end queue, the fallback to the gate, and the speaker timeline it reads."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from support.helpers import SENTENCES, speech

from voicechat.config.stages import AudioSettings
from voicechat.local.echo_cancel import EchoCanceller, EchoStage
from voicechat.local.echo_delay import EchoDelayTracker, gcc_phat_delay
from voicechat.local.playback_buffer import PlaybackBuffer
from voicechat.local.room import EchoRoom, RoomConfig, echo_of, rms


def far_speech() -> np.ndarray:
    return np.concatenate([speech(SENTENCES[0]), speech(SENTENCES[2])]).astype(np.float64)


def test_the_streamed_room_equals_the_whole_clip_room():
    far = far_speech()[:16000]
    room = RoomConfig(rt60_s=0.3, delay_ms=50, gain_db=-3, noise_dbfs=-120)
    stream = EchoRoom(room)
    pieces = []
    for i in range(0, len(far), 320):
        stream.push(far[i:i + 320])
        pieces.append(stream.echo(320))
    assert np.allclose(np.concatenate(pieces), echo_of(far, room), atol=0.5)  # noise at -120 dBFS is < 0.5


def test_room_gain_and_delay():
    far = far_speech()
    echo = echo_of(far, RoomConfig(rt60_s=0.3, delay_ms=100, gain_db=-6, clip_drive=0))
    assert not echo[:1600].any()  # nothing before the delay
    assert rms(echo) / rms(far) == pytest.approx(0.5, rel=0.15)  # -6 dB (the RIR has unit energy)


@pytest.mark.parametrize("delay_ms", [20, 150])
def test_the_delay_is_found_by_cross_correlation(delay_ms):
    far = far_speech()
    echo = echo_of(far, RoomConfig(rt60_s=0.6, delay_ms=delay_ms))
    assert gcc_phat_delay(far[:24000], echo[:24000], 16000, 500).delay_ms == pytest.approx(delay_ms, abs=1)
    tracker = EchoDelayTracker()
    found = [tracker.add(far[i:i + 160], echo[i:i + 160]) for i in range(0, len(far) - 160, 160)]
    assert [f for f in found if f is not None], "no confident estimate"
    assert tracker.estimate is not None and tracker.estimate.delay_ms == pytest.approx(delay_ms, abs=1)


def test_a_delay_counts_once_two_windows_in_a_row_find_it():
    """One window's false peak (a user talking as the reply fades) is not reported; a lasting change is, one
    window later. Windows of 1 s without overlap; the echo's delay per second of audio in ``delays``."""
    rate, delays = 16000, [20, 20, 20, 400, 20, 20, 150, 150, 150]
    far = np.tile(far_speech(), 3)[: (len(delays) + 1) * rate]
    near = np.zeros(len(far))
    for second, delay in enumerate(delays, start=1):
        start, shift = second * rate, delay * rate // 1000
        near[start:start + rate] = far[start - shift:start + rate - shift]
    tracker = EchoDelayTracker(rate, window_s=1.0, interval_s=1.0)
    reported = []
    for i in range(rate, len(far) - 159, 160):
        found = tracker.add(far[i:i + 160], near[i:i + 160])
        if found is not None:
            reported.append((i // rate, round(found.delay_ms)))
    assert reported == [(2, 20), (3, 20), (6, 20), (8, 150), (9, 150)]  # not 400, and 150 a window late


def test_silence_on_the_speaker_gives_no_estimate():
    tracker = EchoDelayTracker()
    noise = np.random.default_rng(0).standard_normal(40000) * 300
    assert all(tracker.add(np.zeros(160), noise[i:i + 160]) is None for i in range(0, 40000 - 160, 160))


class Recorder:
    """Stands in for AEC3: records the frame pairs, returns the near frame."""

    def __init__(self, rate: int, delay_ms: int) -> None:
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.stream_delay_ms = delay_ms

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        self.pairs.append((near.copy(), far.copy()))
        return near


def test_frames_are_10_ms_in_lockstep_and_the_rest_waits():
    aec = EchoCanceller(16000, factory=Recorder, track_delay=False)
    aec.far(np.arange(480, dtype=np.int16))
    out = aec.process(np.arange(250, dtype=np.int16))
    assert len(out) == 160 and np.array_equal(out, np.arange(160))
    out = aec.process(np.arange(250, 320, dtype=np.int16))
    assert np.array_equal(out, np.arange(160, 320))
    pairs = aec._aec.pairs
    assert [len(n) for n, _ in pairs] == [160, 160] and np.array_equal(pairs[1][1], np.arange(160, 320))


def test_a_far_queue_running_ahead_is_cut():
    aec = EchoCanceller(16000, factory=Recorder, max_lead_ms=80, track_delay=False)
    aec.far(np.arange(3200, dtype=np.int16))  # 200 ms ahead of the microphone
    aec.process(np.zeros(160, np.int16))
    assert aec.far_dropped == 3200 - 160 and np.array_equal(aec._aec.pairs[0][1], np.arange(3040, 3200))


def test_the_microphone_waits_for_late_far_audio_then_takes_silence():
    aec = EchoCanceller(16000, factory=Recorder, max_wait_ms=20, track_delay=False)
    assert len(aec.process(np.arange(320, dtype=np.int16))) == 0  # 20 ms of microphone, no far yet: wait
    aec.far(np.arange(1000, 1160, dtype=np.int16))
    out = aec.process(np.zeros(0, np.int16))
    assert np.array_equal(out, np.arange(160)) and np.array_equal(aec._aec.pairs[0][1], np.arange(1000, 1160))
    assert aec.far_missing == 0  # the late far frame kept the streams' alignment
    out = aec.process(np.arange(320, 640, dtype=np.int16))  # the oldest frame has waited 20 ms: it gives up
    assert np.array_equal(out, np.arange(160, 320)) and aec.far_missing == 1 and not aec._aec.pairs[1][1].any()


def test_aec3_removes_most_of_the_echo():
    pytest.importorskip("pywebrtc_audio")
    far = np.concatenate([far_speech()] * 2)
    echo = echo_of(far, RoomConfig(rt60_s=0.3, delay_ms=60, gain_db=-3))
    aec = EchoCanceller(16000)
    out = np.concatenate([aec.process(echo[i:i + 320].astype(np.int16)) if aec.far(far[i:i + 320].astype(np.int16))
                          is None else None for i in range(0, len(far) - 320, 320)])
    tail = slice(len(out) // 2, len(out))
    assert 20 * np.log10(rms(echo[tail]) / rms(out[tail])) > 20
    assert aec.cpu_share() < 0.05


def test_without_the_wheel_the_stage_falls_back_to_the_gate(caplog):
    def missing(rate: int, delay_ms: int) -> object:
        raise ImportError("No module named 'pywebrtc_audio'")

    with caplog.at_level(logging.WARNING):
        stage = EchoStage("aec", factory=missing)
    assert stage.mode == "gate" and stage.gate is not None and stage.canceller is None
    assert [r.message for r in caplog.records if "falling back to the echo gate" in r.message]


def test_the_speaker_timeline_is_read_once_and_in_order():
    buffer = PlaybackBuffer(16000, history_s=0.1)
    buffer.put(np.arange(1, 301, dtype=np.int16).tobytes())
    out = np.zeros(200, np.int16)
    buffer.pull(out)
    first, position = buffer.since(0)
    buffer.pull(out)  # 100 queued samples, then silence
    second, position = buffer.since(position)
    assert np.array_equal(np.concatenate([first, second])[:300], np.arange(1, 301)) and position == 400
    for _ in range(10):
        buffer.pull(out)
    assert len(buffer.since(0)[0]) == 1600  # a reader far behind gets the newest history only


def test_old_configs_echo_gate_becomes_echo():
    assert AudioSettings().echo == "speex"
    assert AudioSettings.model_validate({"echo_gate": True}).echo == "speex"
    assert AudioSettings.model_validate({"echo_gate": False}).echo == "off"
