"""The barge-in floor: the audio Silero needs before it says "speech", on the benchmark's utterances."""

from __future__ import annotations

import numpy as np
import pytest

from voicechat.bench.load_client import utterance
from voicechat.bench.onset_floor import PHASES, onset_floor_ms
from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k


@pytest.mark.timeout(120)
def test_the_floor_is_whole_client_frames_and_grows_with_the_onset_threshold() -> None:
    speech = [utterance(text, speech_16k(text)) for text in SAMPLE_SENTENCES[:3]]
    eager, strict = onset_floor_ms(speech, 0.3, -55.0), onset_floor_ms(speech, 0.8, -55.0)
    assert len(eager) == len(strict) == 3 * PHASES
    assert all(ms >= 20 and ms % 20 == 0 for ms in eager + strict)  # at least the frame after the onset's
    assert all(s >= e for e, s in zip(eager, strict, strict=True))
    assert sum(strict) > sum(eager)


@pytest.mark.timeout(60)
def test_speech_the_detector_never_hears_gives_no_floor() -> None:
    hum = np.full(16000, 3000, np.int16)  # loud, but a constant is no speech to Silero
    said = utterance("hum", hum)
    assert onset_floor_ms([said], 0.6, -55.0) == []


@pytest.mark.timeout(120)
def test_probes_between_chunks_call_speech_no_later_and_sometimes_a_frame_sooner() -> None:
    speech = [utterance(text, speech_16k(text)) for text in SAMPLE_SENTENCES[:4]]
    chunks_only, probed = onset_floor_ms(speech, 0.6, -55.0, probes=False), onset_floor_ms(speech, 0.6, -55.0)
    assert len(chunks_only) == len(probed) == 4 * PHASES
    assert all(p <= c for c, p in zip(chunks_only, probed, strict=True))
    assert sum(probed) < sum(chunks_only)
