"""Smart Turn v3.2: our log-mel features, the missing-model error, and batched rows equal rows alone."""

import numpy as np
import pytest
from support.helpers import speech
from support.turn_models import smart_turn_or_skip

from voicechat.stt.smart_turn import (
    N_FRAMES,
    N_MELS,
    WINDOW_SAMPLES,
    SmartTurnModel,
    SmartTurnUnavailable,
    fit_window,
    log_mel,
    mel_filters,
)


def audio(text: str) -> np.ndarray:
    return speech(text).astype(np.float32) / 32768.0


def test_features_have_the_models_shape_and_range():
    x = log_mel(audio("What is the capital of France?"))
    assert x.shape == (N_MELS, N_FRAMES) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.max() - x.min() <= 2.0 + 1e-6  # floored at 8 (log10) below the peak, scaled by 1/4


def test_short_audio_is_padded_at_the_start_and_long_audio_keeps_its_last_8_s():
    short = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    fitted = fit_window(short)
    assert fitted.shape == (WINDOW_SAMPLES,) and not fitted[:-1000].any()
    np.testing.assert_array_equal(fitted[-1000:], short)
    long = np.random.default_rng(1).standard_normal(WINDOW_SAMPLES + 5000).astype(np.float32)
    np.testing.assert_array_equal(fit_window(long), long[-WINDOW_SAMPLES:])
    np.testing.assert_array_equal(log_mel(long), log_mel(long[5000:]))


def test_mel_filters_are_slaney_triangles():
    f = mel_filters()
    assert f.shape == (N_MELS, 201) and (f >= 0).all()
    assert (f.max(axis=1) > 0).all()  # every band sees some FFT bin
    peaks = f.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()  # bands go up in frequency


def test_a_missing_model_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(SmartTurnUnavailable) as err:
        SmartTurnModel(tmp_path / "smart-turn-v3.2-cpu.onnx")
    assert "smart-turn-v3.2-cpu.onnx" in str(err.value)
    assert "python3 run.py models download --set starter" in str(err.value)


def test_a_damaged_model_says_so(tmp_path):
    bad = tmp_path / "smart-turn-v3.2-cpu.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(SmartTurnUnavailable, match="cannot be loaded"):
        SmartTurnModel(bad)


@pytest.mark.slow
def test_batched_rows_equal_each_row_alone():
    model = smart_turn_or_skip()
    clips = [audio("How many legs does a spider have?"), audio("I would like to order a"),
             np.zeros(8000, np.float32), audio("Set a timer for twelve minutes.")[:20000]]
    alone = [model.predict([c])[0] for c in clips]
    together = model.predict(clips)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert all(0.0 <= p <= 1.0 for p in together)
    assert model.predict([]) == []
