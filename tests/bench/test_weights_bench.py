"""`bench weights` on the project's tiny random GGUF: every format is made, timed and compared."""

from __future__ import annotations

import json

from voicechat.bench import llm_weights
from voicechat.models.tiny import tiny_gguf_path


def test_formats_are_converted_timed_and_scored_against_the_original(tmp_path):
    out = tmp_path / "weights.json"
    argv = ["--model", str(tiny_gguf_path()), "--formats", "q8_0,f16", "--repeat", "1", "--cache", str(tmp_path),
            "--json", str(out)]
    assert llm_weights.main(argv) == 0
    rows = json.loads(out.read_text())["formats"]
    assert list(rows) == ["original", "q8_0", "f16"]
    for row in rows.values():
        timing = row["threads_1"]
        assert 0 < timing["prefill_1_ms"] and 0 < timing["decode_ms_per_token"]
    # The tiny model is F32: F16 is nearly exact, Q8_0 close; both far from a different model's distribution.
    assert 0 <= rows["f16"]["kl_mean"] < rows["q8_0"]["kl_mean"] < 0.05
    assert rows["f16"]["top1_agree"] > 0.9 and rows["q8_0"]["ppl_reference"] == rows["f16"]["ppl_reference"]
