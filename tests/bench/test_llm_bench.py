"""`run.py bench llm` runs end to end (on the tiny GGUF, tiny sizes: a smoke test, not a timing)."""

from __future__ import annotations

import json

from voicechat.bench import llm as bench
from voicechat.models.tiny import tiny_gguf_path


def test_bench_llm_reports_batching_and_kv_reuse(tmp_path, capsys):
    out = tmp_path / "llm.json"
    argv = ["--model", str(tiny_gguf_path()), "--sessions", "1,2", "--tokens", "4", "--repeat", "1",
            "--turns", "3", "--n-ctx", "2048", "--json", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert [row["sessions"] for row in result["concurrency"]] == [1, 2]
    for row in result["concurrency"]:
        for mode in ("batched", "one_at_a_time"):
            assert row[mode]["tokens_per_s"] > 0 and row[mode]["ttft_ms_p95"] >= row[mode]["ttft_ms_p50"] > 0
        assert row["raw_decode_tokens_per_s"] > 0
    kept, baseline = result["conversation"]["kv_kept"], result["conversation"]["baseline_reprefill"]
    # The kept conversation's prompts hold the replies' own tokens, so their lengths may differ slightly
    # from the baseline's fresh tokenization of the same text.
    assert len(kept) == len(baseline) == 3
    assert kept[0]["prefill_tokens"] == baseline[0]["prefill_tokens"] == kept[0]["prompt_tokens"]
    for prev, k, b in zip(kept, kept[1:], baseline[1:], strict=False):
        assert b["prefill_tokens"] == b["prompt_tokens"]  # the baseline re-prefills everything
        assert k["prefill_tokens"] <= k["prompt_tokens"] - prev["prompt_tokens"]  # the history came from KV
    assert kept[-1]["prefill_tokens"] < kept[-1]["prompt_tokens"] // 2
    assert result["raw_prefill_tokens_per_s"] > 0 and result["n_gpu_layers"] == 0
    out_text = capsys.readouterr().out
    assert "batched speedup" in out_text and "prefill" in out_text


def test_bench_llm_passes_n_gpu_layers_to_every_context(monkeypatch, tmp_path):
    """--n-gpu-layers reaches the engine's context and the bare-decode one (a GPU run measured the GPU)."""
    from voicechat.llm import llama_context, llama_engine

    seen: list[int] = []
    real = llama_context.LlamaContext

    class Recording(real):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["n_gpu_layers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(llama_engine, "LlamaContext", Recording)
    monkeypatch.setattr(bench, "LlamaContext", Recording)
    argv = ["--model", str(tiny_gguf_path()), "--sessions", "1", "--tokens", "2", "--repeat", "1",
            "--turns", "1", "--n-ctx", "1024", "--n-gpu-layers", "-1", "--json", str(tmp_path / "r.json")]
    assert bench.main(argv) == 0  # a CPU build of llama.cpp runs every layer on the CPU regardless
    assert seen == [-1, -1]
    assert json.loads((tmp_path / "r.json").read_text())["n_gpu_layers"] == -1
