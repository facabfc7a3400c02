"""Kokoro: a clear error when its package or weights are missing; a real run only where both exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from voicechat.engines.protocols import EngineError
from voicechat.tts.kokoro_engine import DEFAULT_KOKORO_DIR, KokoroEngine, kokoro_missing


def test_missing_weights_name_every_file_the_key_and_the_commands(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        KokoroEngine("am_adam", model_dir=tmp_path)
    message = str(err.value)
    for path in (tmp_path / "config.json", tmp_path / "kokoro-v1_0.pth", tmp_path / "voices" / "am_adam.pt"):
        assert str(path) in message
    assert "tts.engine = 'kokoro'" in message and "tts.kokoro_dir" in message and "tts.voice = 'am_adam'" in message
    assert "python run.py models download kokoro-82m-am_adam" in message
    assert "pip install 'voicechat[kokoro]'" in message


@pytest.mark.skipif(importlib.util.find_spec("kokoro") is not None, reason="the kokoro package is installed here")
def test_missing_package_is_named(tmp_path: Path) -> None:
    missing = kokoro_missing(tmp_path, "af_heart")
    assert "the Python package 'kokoro'" in missing
    with pytest.raises(EngineError, match=r"missing the Python package 'kokoro'.*models download kokoro-82m\b"):
        KokoroEngine(model_dir=tmp_path)


def test_real_kokoro_speaks() -> None:
    missing = kokoro_missing(DEFAULT_KOKORO_DIR, "af_heart")
    if missing:
        pytest.skip("Kokoro is not available here: missing " + ", ".join(missing))
    engine = KokoroEngine(model_dir=DEFAULT_KOKORO_DIR)
    chunks = list(engine.stream("Hello from Kokoro."))
    secs = sum(len(c) for c in chunks) / 2 / engine.sample_rate
    assert 0.5 < secs < 5
