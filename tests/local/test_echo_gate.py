"""Echo gate: the assistant's own voice from the speaker is gated, a user talking over it is not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.helpers import SENTENCES, speech

from voicechat.local.echo_gate import EchoGate, EchoGateConfig

RATE = 16000
BLOCK = 320  # 20 ms
ADAPTED = 25  # blocks: 0.5 s to learn the echo path
DELAY = 640  # 40 ms speaker-to-microphone


def rms(x: np.ndarray) -> float:
    f = x.astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(f * f))) if len(f) else 0.0


def echo_of(playback: np.ndarray, gain: float = 0.3, delay: int = DELAY, noise_dbfs: float = -70.0,
            seed: int = 0) -> np.ndarray:
    """What the microphone hears of the speaker: delayed, attenuated, plus a little noise."""
    rng = np.random.default_rng(seed)
    echo = np.zeros(len(playback))
    echo[delay:] = playback[:len(playback) - delay] * gain
    echo += rng.normal(0.0, 32768.0 * 10 ** (noise_dbfs / 20), len(playback))
    return echo


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def run_gate(gate: EchoGate, mic: np.ndarray, playback: np.ndarray) -> list[bool]:
    """Feed 20 ms blocks with the reference the caller would hand over; True where the block passed."""
    window = BLOCK + gate.config.max_delay_ms * RATE // 1000
    passed = []
    for end in range(BLOCK, len(mic) + 1, BLOCK):
        block = mic[end - BLOCK:end]
        out = gate.process(block, playback[max(0, end - window):end])
        assert out.shape == block.shape and out.dtype == block.dtype
        assert np.array_equal(out, block) or not out.any()
        passed.append(bool(np.array_equal(out, block)) and bool(block.any()))
    return passed


def reference_active(playback: np.ndarray, gate: EchoGate) -> np.ndarray:
    """Blocks whose reference window holds sound (elsewhere the gate passes by design)."""
    window = BLOCK + gate.config.max_delay_ms * RATE // 1000
    floor = 10 ** (gate.config.floor_dbfs / 20)
    return np.array([rms(playback[max(0, end - window):end]) > floor for end in range(BLOCK, len(playback) + 1, BLOCK)])


@pytest.fixture(scope="module")
def assistant() -> np.ndarray:
    """Three sentences of the assistant talking (about 8 s)."""
    return np.concatenate([speech(s) for s in SENTENCES[:3]])


def test_own_voice_is_gated_once_adapted(assistant: np.ndarray) -> None:
    gate = EchoGate(RATE)
    mic = to_int16(echo_of(assistant))
    passed = np.array(run_gate(gate, mic, assistant))
    active = reference_active(assistant, gate)[ADAPTED:]
    after = passed[ADAPTED:][active]
    assert len(after) > 200
    assert after.mean() <= 0.05, f"{after.mean():.1%} of echo blocks passed"
    assert gate.echo_delay_ms == pytest.approx(40, abs=5)
    assert gate.echo_gain == pytest.approx(0.3, rel=0.2)
    assert gate.gated_blocks + gate.passed_blocks == len(passed)


def test_user_talking_over_the_assistant_passes(assistant: np.ndarray) -> None:
    gate = EchoGate(RATE)
    user = speech(SENTENCES[5])
    start = RATE  # the user barges in one second into the reply
    mic = echo_of(assistant)
    mic[start:start + len(user)] += user
    passed = np.array(run_gate(gate, to_int16(mic), assistant))
    user_blocks = np.array([rms(user[max(0, e - BLOCK - start):max(0, e - start)]) > 10 ** (-40 / 20)
                            for e in range(BLOCK, len(mic) + 1, BLOCK)])
    assert user_blocks.sum() > 50
    assert passed[user_blocks].mean() >= 0.9, f"only {passed[user_blocks].mean():.1%} of the user's blocks passed"
    # Once the user is done, the assistant's echo is gated again.
    tail = np.zeros(len(passed), bool)
    tail[(start + len(user)) // BLOCK + 20:] = True
    tail &= reference_active(assistant, gate)
    assert tail.sum() > 50 and passed[tail].mean() <= 0.05


def test_no_reference_passes_everything() -> None:
    gate = EchoGate(RATE)
    mic = speech(SENTENCES[1])
    for end in range(BLOCK, len(mic) + 1, BLOCK):
        block = mic[end - BLOCK:end]
        assert np.array_equal(gate.process(block, np.zeros(0, np.int16)), block)
        assert np.array_equal(gate.process(block, np.zeros(4320, np.int16)), block)
    assert gate.gated_blocks == 0 and gate.passed_blocks > 0


def steady_talk(seconds: float, seed: int = 1) -> np.ndarray:
    """A stationary 'assistant' (noise at -20 dBFS), so every echo block is alike."""
    rng = np.random.default_rng(seed)
    return to_int16(rng.normal(0.0, 3277.0, int(seconds * RATE)))


@pytest.mark.parametrize("hold_ms", [0, 60, 150])
def test_hold_keeps_passing_after_speech(hold_ms: int) -> None:
    gate = EchoGate(RATE, EchoGateConfig(hold_ms=hold_ms))
    playback = steady_talk(3.0)
    mic = echo_of(playback)
    loud = slice(RATE, RATE + 3 * BLOCK)  # 60 ms of the user, far above the echo
    mic[loud] += np.random.default_rng(2).normal(0.0, 16000.0, 3 * BLOCK)
    passed = run_gate(gate, to_int16(mic), playback)
    first_user = RATE // BLOCK
    assert not any(passed[ADAPTED:first_user])
    assert all(passed[first_user:first_user + 3])
    after = passed[first_user + 3:]
    held = next(i for i, p in enumerate(after) if not p)
    assert held == math.ceil(hold_ms / 20)
    assert not any(after[held:])


def test_silent_microphone_during_playback_is_gated_and_counted() -> None:
    gate = EchoGate(RATE)
    playback = steady_talk(1.0)
    silent = np.zeros(BLOCK, np.int16)
    for end in range(BLOCK, len(playback) + 1, BLOCK):
        gate.process(silent, playback[:end])
    assert gate.passed_blocks == 0 and gate.gated_blocks == len(playback) // BLOCK
    assert gate.process(np.zeros(0, np.int16), playback).shape == (0,)
