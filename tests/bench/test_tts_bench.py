"""`run.py bench tts` runs end to end on real espeak-ng and reports sane numbers."""

from __future__ import annotations

import json
from pathlib import Path

from voicechat.cli import bench_main


def test_bench_tts_reports_first_chunk_latency_and_real_time_factor(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tts.json"
    assert bench_main(["tts", "--engine", "espeak", "--workers", "2", "--jobs", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for run in ("single", "parallel"):
        r = result[run]
        assert r["jobs"] == 4
        assert 0 < r["first_chunk_ms_p50"] <= r["first_chunk_ms_p95"] < 5000
        assert 0 < r["rtf_aggregate"] < 1  # espeak-ng is far faster than real time
        assert r["audio_s"] > 4 * 1.0  # four sentences of about 1-5 s each
    assert "TTFC p50 ms" in capsys.readouterr().out


def test_bench_tts_runs_piper_on_the_tiny_voice(tmp_path: Path) -> None:
    out = tmp_path / "piper.json"
    assert bench_main(["tts", "--engine", "piper", "--workers", "2", "--jobs", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["parallel"]["jobs"] == 2
