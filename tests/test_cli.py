"""The command line: run (text console), config errors, missing models, selftest, bench."""

import io
import os
import subprocess
import sys

import pytest

from voicechat.bench.sessions import run as bench_sessions
from voicechat.cli import main
from voicechat.config.loading import load_config
from voicechat.engines.scripted.llm import scripted_reply
from voicechat.local.console import run_console


@pytest.mark.timeout(60)
def test_console_answers_each_line_in_its_own_turn(make_manager):
    from voicechat.assembly import pipeline_options

    settings = load_config(None, env={}).settings
    manager = make_manager()
    out = io.StringIO()
    assert run_console(manager, pipeline_options(settings), io.StringIO("hello there\nwhat is up\n"), out) == 0
    text = out.getvalue()
    assert scripted_reply("hello there", 24) in text
    assert scripted_reply("what is up", 24) in text  # not merged with the first question
    assert len(manager) == 0


def test_missing_models_stop_start_up_with_exit_2_and_the_fix(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("VOICECHAT_CONFIG", raising=False)
    missing = tmp_path / "absent.gguf"
    assert main(["--config", "config.toml", "--set", f"llm.model={missing}"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "llm.model" in err
    assert "stt.model" in err and "python run.py models download whisper-base.en" in err


@pytest.mark.timeout(90)
def test_selftest_runs_every_real_engine_on_the_tiny_models():
    """What a new user runs after set-up: a real spoken turn, a timing table, exit 0."""
    result = subprocess.run(
        [sys.executable, "run.py", "selftest", "--tiny"], capture_output=True, text=True, timeout=80,
        env={**os.environ, "VOICECHAT_SKIP_BOOTSTRAP": "1", "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "selftest passed" in result.stdout
    for stage in ("end of speech -> final transcript", "final transcript -> first LLM token", "voice to voice"):
        assert stage in result.stdout


def test_selftest_takes_the_starter_set_only_where_its_files_are(tmp_path):
    import argparse

    from voicechat.selftest import choose_models, tiny_overrides

    def args(tiny: bool = False) -> argparse.Namespace:
        return argparse.Namespace(config=None, set=[], tiny=tiny)

    settings, models = choose_models(args(), [], root=tmp_path)  # an empty checkout: no models/
    assert models == "tiny" and settings.stt.model == tiny_overrides()["stt.model"]
    assert choose_models(args(tiny=True), [])[1] == "tiny"
    settings, models = choose_models(args(), ["llm.max_tokens=7"], root=tmp_path)
    assert settings.llm.max_tokens == 7  # the user's own settings still apply


def test_bad_override_exits_2_with_one_line(capsys):
    assert main(["run", "--scripted", "--set", "sessions.max_sessions=0"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "sessions.max_sessions" in line and "0" in line


def test_unknown_bench_is_refused(capsys):
    assert main(["bench", "nope"]) == 2
    assert "bench" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_bench_sessions_measures_and_leaves_no_threads():
    result = bench_sessions(sessions=3, seconds=0.2, partials=True)
    assert result["threads_per_session"] == 3  # STT, LLM and TTS workers (the listening front end is shared)
    assert result["threads_left_after_close"] == 0
    assert result["create_ms_p50"] > 0 and result["close_ms_p50"] > 0
