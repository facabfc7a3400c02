"""Every recorder's Silero shares one ONNX session but keeps its own recurrent state."""

from __future__ import annotations

import numpy as np
from RealtimeSTT.core.silero_vad import create_silero_vad_model

from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k
from voicechat.stt.silero_share import SharedSilero

ARGS = dict(backend="auto", silero_use_onnx=None, onnx_model_path=None, onnx_threads=1, sample_rate=16000,
            chunk_samples=512)


def probabilities(model, audio: np.ndarray) -> list[float]:
    return [model(audio[i : i + 512], 16000) for i in range(0, len(audio) - 512, 512)]


def test_one_session_many_states() -> None:
    share = SharedSilero()
    a, b = share.model(create_silero_vad_model, **ARGS), share.model(create_silero_vad_model, **ARGS)
    assert a.session is b.session and (share.created, share.shared) == (1, 1)
    assert a.state is not b.state and a.input_buffer is not b.input_buffer

    speech = speech_16k(SAMPLE_SENTENCES[0]).astype(np.float32) / 32768
    alone = create_silero_vad_model(**ARGS)  # its own session: the reference
    expected = probabilities(alone, speech)
    # Interleave the two sharers: each must give what a model of its own gives.
    got_a, got_b = [], []
    for i in range(0, len(speech) - 512, 512):
        got_a.append(a(speech[i : i + 512], 16000))
        got_b.append(b(np.zeros(512, np.float32), 16000))
    assert np.allclose(got_a, expected, atol=1e-5)
    assert max(expected) > 0.8 and max(got_b) < 0.2  # speech is speech, silence is silence


def test_other_settings_get_their_own_session() -> None:
    share = SharedSilero()
    a = share.model(create_silero_vad_model, **ARGS)
    b = share.model(create_silero_vad_model, **{**ARGS, "onnx_threads": 2})
    assert a.session is not b.session and share.created == 2
