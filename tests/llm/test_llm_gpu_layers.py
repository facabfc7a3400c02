"""llm.n_gpu_layers on a llama-cpp-python built without GPU support (the PyPI sdist's default build)."""

from __future__ import annotations

import logging

import llama_cpp as ll
import pytest

from voicechat.llm.llama_context import LlamaContext
from voicechat.models.tiny import tiny_gguf_path


def load(n_gpu_layers: int) -> None:
    LlamaContext(tiny_gguf_path(), n_ctx=256, n_seq_max=1, n_batch=64, n_threads=1, n_gpu_layers=n_gpu_layers).close()


@pytest.mark.parametrize("layers", [-1, 12])
def test_asking_for_gpu_layers_on_a_cpu_build_says_so(monkeypatch, caplog, layers: int) -> None:
    monkeypatch.setattr(ll, "llama_supports_gpu_offload", lambda: False)
    with caplog.at_level(logging.WARNING, logger="voicechat.llm.llama_context"):
        load(layers)  # still loads: every layer on the CPU
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"llm.n_gpu_layers = {layers}" in message and "without GPU support" in message
    assert "GGML_CUDA=on" in message


def test_no_warning_with_zero_layers_or_a_gpu_build(monkeypatch, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="voicechat.llm.llama_context"):
        monkeypatch.setattr(ll, "llama_supports_gpu_offload", lambda: False)
        load(0)
        monkeypatch.setattr(ll, "llama_supports_gpu_offload", lambda: True)
        load(-1)  # a GPU build here would offload; this CPU build ignores the request quietly
    assert not [r for r in caplog.records if "n_gpu_layers" in r.getMessage()]
