"""`run.py bench stt` (tiny random Whisper, tiny sizes: a smoke test, not a timing)."""

from __future__ import annotations

import json

from voicechat.bench import stt as bench


def test_bench_stt_runs_on_the_device_and_compute_type_asked_for(tmp_path, capsys):
    out = tmp_path / "stt.json"
    argv = ["--sessions", "2", "--rounds", "1", "--beam-size", "1", "--max-tokens", "4",
            "--device", "cpu", "--compute-type", "float32", "--json", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert (result["device"], result["compute_type"]) == ("cpu", "float32")  # as loaded by CTranslate2
    assert result["results"][0]["sessions"] == 2 and result["results"][0]["same_texts"] is True
    assert "2 sessions: batched" in capsys.readouterr().out
