"""stt.device on a machine whose GPU CTranslate2 sees but cannot use (no CUDA 12 cuBLAS).

Seen on an H200 with only CUDA 13 installed: CTranslate2 4.8.5 counts the GPU, "auto" picks it, the
model loads, and every transcription then fails with "Library libcublas.so.12 is not found or cannot
be loaded" (docs/benchmarks.md, "GPU (one H200)"). These tests stand in for faster-whisper's model
with a fake that fails the same way, so they run on any machine.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from voicechat.engines.protocols import EngineError
from voicechat.stt.whisper_model import FasterWhisperModel

CUBLAS_MISSING = "Library libcublas.so.12 is not found or cannot be loaded"


class FakeWhisper:
    """faster_whisper.WhisperModel as far as loading goes: "auto" resolves to CUDA, as with a driver."""

    loads: list[tuple[str, str]] = []
    gpu_works = False

    def __init__(self, model: str, *, device: str, compute_type: str, **_: object) -> None:
        FakeWhisper.loads.append((device, compute_type))
        self.model = SimpleNamespace(device="cpu" if device == "cpu" else "cuda", n_mels=80, is_multilingual=False)
        self.encoded: list[tuple[int, ...]] = []

    def encode(self, features: np.ndarray) -> object:
        self.encoded.append(features.shape)
        if self.model.device == "cuda" and not FakeWhisper.gpu_works:
            raise RuntimeError(CUBLAS_MISSING)
        return object()


@pytest.fixture
def fake_whisper(monkeypatch):
    import ctranslate2
    import faster_whisper

    FakeWhisper.loads = []
    FakeWhisper.gpu_works = False
    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisper)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)  # a driver answers
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float16", "int8_float16"})
    return FakeWhisper


def test_auto_falls_back_to_the_cpu_when_the_gpu_cannot_run_whisper(fake_whisper, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="voicechat.stt.whisper_model"):
        model = FasterWhisperModel("tiny.en", device="auto", compute_type="auto")
    assert fake_whisper.loads == [("auto", "float16"), ("cpu", "auto")]  # the CPU's "auto" is int8
    assert model.model.model.device == "cpu"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "stt.device = auto" in warning and CUBLAS_MISSING in warning and "runs on the CPU" in warning
    assert "libcublas.so.12" in warning and "nvidia-cublas-cu12" in warning  # what to install


def test_an_explicit_cuda_device_fails_at_load_naming_the_library_and_the_setting(fake_whisper) -> None:
    with pytest.raises(EngineError) as err:
        FasterWhisperModel("tiny.en", device="cuda", compute_type="float16")
    message = str(err.value)
    assert "stt.device = cuda" in message and CUBLAS_MISSING in message and "stt.device = cpu" in message
    assert fake_whisper.loads == [("cuda", "float16")]  # no silent CPU run when CUDA was asked for


def test_a_working_gpu_keeps_the_model_there_after_one_short_encode(fake_whisper) -> None:
    fake_whisper.gpu_works = True
    model = FasterWhisperModel("tiny.en", device="auto", compute_type="auto")
    assert fake_whisper.loads == [("auto", "float16")]
    assert model.model.model.device == "cuda"
    assert model.model.encoded == [(1, 80, 500)]  # the utterance window's smallest: 5 s


def test_a_cpu_model_is_not_probed(fake_whisper) -> None:
    model = FasterWhisperModel("tiny.en", device="cpu", compute_type="int8")
    assert model.model.encoded == [] and fake_whisper.loads == [("cpu", "int8")]


def test_auto_compute_type_is_float16_on_a_gpu_and_left_alone_otherwise(monkeypatch) -> None:
    import ctranslate2

    from voicechat.stt.whisper_model import gpu_compute_type

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float16", "int8_float16"})
    assert [gpu_compute_type("auto", d) for d in ("auto", "cuda", "cpu")] == ["float16", "float16", "auto"]
    assert gpu_compute_type("int8_float16", "cuda") == "int8_float16"  # an explicit choice stands
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"int8", "float32"})
    assert gpu_compute_type("auto", "cuda") == "auto"  # a GPU without float16: CTranslate2's own choice
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    assert gpu_compute_type("auto", "auto") == "auto"
