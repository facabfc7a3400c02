"""Speex's linear echo canceller (libspeexdsp over ctypes) and the echo stage that pairs it with the gate."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from support.helpers import SENTENCES, speech

from voicechat.local import speex_echo
from voicechat.local.echo_cancel import SPEEX_GATE_MARGIN_DB, EchoCanceller, EchoStage
from voicechat.local.room import RoomConfig, echo_of, rms
from voicechat.local.speex_echo import SpeexEcho, load_speex

try:
    speex_echo._library()
except OSError as exc:  # CI installs libspeexdsp1 (voicechat/bootstrap.py)
    pytestmark = pytest.mark.skip(reason=str(exc))

ROOM = RoomConfig(rt60_s=0.3, delay_ms=60, gain_db=-3, noise_dbfs=-90)


def cancel(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    canceller = EchoCanceller(16000, factory=load_speex, track_delay=False)
    out = []
    for i in range(0, len(far) - 320 + 1, 320):
        canceller.far(far[i:i + 320].astype(np.int16))
        out.append(canceller.process(near[i:i + 320].astype(np.int16)))
    return np.concatenate(out).astype(np.float64)


def test_the_filter_removes_the_echo_and_leaves_a_talker_over_it_whole():
    """What AEC3 does not: on the same audio it removes 43 dB of the echo but takes 7 dB off the talker."""
    far = np.concatenate([speech(SENTENCES[i]) for i in (0, 2, 4, 6)]).astype(np.float64)
    echo = echo_of(far, ROOM)
    user = np.zeros_like(far)
    talk = speech(SENTENCES[5]).astype(np.float64)
    begin = len(far) - len(talk) - 1600
    user[begin:begin + len(talk)] = talk * rms(echo[begin:begin + len(talk)]) / rms(talk)  # as loud as the echo
    out = cancel(echo + user, far)
    alone = slice(len(far) // 3, begin)  # the reply alone, after the filter's first seconds
    assert 20 * np.log10(rms(echo[alone]) / rms(out[alone])) > 15
    over = slice(begin, begin + len(talk))
    kept_db = 20 * np.log10(rms(out[over]) / rms(user[over]))
    assert -3 < kept_db < 3, f"the talker came out {kept_db:.1f} dB changed"


def test_the_first_delay_holds_the_far_end_back_and_a_later_one_within_reach_restarts_nothing():
    echo = SpeexEcho(16000, 160, filter_ms=384, delay_ms=100)
    assert echo.stream_delay_ms == 100
    frame = speech(SENTENCES[0])[:160]
    echo.process(frame, frame)
    echo.stream_delay_ms = 250  # the echo still starts in the filter's first three quarters
    assert echo.restarts == 0 and echo.stream_delay_ms == 100
    echo.stream_delay_ms = 500  # beyond them: a new alignment, the filter starts again
    assert echo.restarts == 1 and echo.stream_delay_ms == 500
    echo.stream_delay_ms = 200  # sooner than the line holds it: also
    assert echo.restarts == 2 and echo.stream_delay_ms == 200
    with pytest.raises(ValueError, match="frames of 160"):
        echo.process(frame[:100], frame[:100])


def test_the_stage_gates_what_the_filter_leaves():
    stage = EchoStage("speex")
    assert stage.mode == "speex" and stage.canceller is not None and stage.gate is not None
    assert stage.gate.config.echo_margin_db == SPEEX_GATE_MARGIN_DB


def test_without_libspeexdsp_the_stage_falls_back_to_aec_and_says_how_to_install_it(monkeypatch, caplog):
    def missing(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    class Aec3:
        def __init__(self, rate: int, delay_ms: int) -> None:
            self.stream_delay_ms = delay_ms

    speex_echo._library.cache_clear()
    monkeypatch.setattr(speex_echo.ctypes, "CDLL", missing)
    try:
        with caplog.at_level(logging.WARNING):
            stage = EchoStage("speex", factory=Aec3)
    finally:
        monkeypatch.undo()
        speex_echo._library.cache_clear()
    assert stage.mode == "aec" and stage.canceller is not None and stage.gate is None
    assert any("apt install libspeexdsp1" in r.getMessage() for r in caplog.records)
