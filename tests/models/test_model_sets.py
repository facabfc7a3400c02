"""Model sets: which keys a set fills, and the first start (fetch the set, or run the starter set).

No network: the Hub is a local fake or a closed port, PyPI a directory of fake wheels.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from support.fake_hf_hub import running_hub
from support.fake_pypi import build_wheel, clear_pip_env, local_pip

from voicechat.assembly import server_config
from voicechat.config.loading import load_config
from voicechat.models import ensure as ensure
from voicechat.models import registry as registry
from voicechat.models import sets as sets
from voicechat.models.registry import ModelFile, ModelSpec, Wheel, WheelPart
from voicechat.models.startup import prepare_models
from voicechat.models.store import MissingModelError

TINY_GGUF = Path(__file__).resolve().parents[2] / "voicechat" / "models" / "tiny" / "assets" / "tiny-llama.gguf"
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
FAKE_WHEEL = Wheel("fake-tiny-llm", "0.1.0")
FAKE_LLM = ModelSpec(
    name="fake-tiny-llm", kind="llm", repo_id="", revision="", target="tiny-llama.gguf", size_bytes=None,
    config_key="llm.model", config_value="models/tiny-llama.gguf", engine=("llm.backend", "llama_cpp"),
    files=(ModelFile("", "tiny-llama.gguf", (WheelPart(FAKE_WHEEL, "fake_tiny_llm/tiny-llama.gguf"),),
                     hashlib.sha256(TINY_GGUF.read_bytes()).hexdigest()),),
)
ONLY_LLM = {"stt.engine": "scripted", "tts.engine": "scripted"}


def console() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=400, highlight=False, soft_wrap=True), text


def closed_port_url() -> str:
    """An http URL nothing listens on: connecting fails at once (the Hub 'cannot be reached')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def fake_starter(tmp_path, monkeypatch) -> Path:
    """The starter set replaced by one small LLM in a fake wheel; returns the wheel directory."""
    clear_pip_env(monkeypatch)
    wheels = tmp_path / "wheels"
    build_wheel(wheels, FAKE_WHEEL, {"fake_tiny_llm/tiny-llama.gguf": TINY_GGUF.read_bytes()})
    monkeypatch.setattr(registry, "RECOMMENDED", (*registry.RECOMMENDED, FAKE_LLM))
    monkeypatch.setitem(sets.SETS, sets.STARTER, sets.ModelSet(
        sets.STARTER, "fake", ("fake-tiny-llm",), (("llm.model", "models/tiny-llama.gguf"),)))
    return wheels


def test_starter_fills_the_model_keys_at_their_defaults_and_records_why():
    loaded = load_config(REPO_CONFIG, env={"VOICECHAT_MODELS__SET": "starter"})
    s = loaded.settings
    assert (s.stt.model, s.llm.model, s.tts.engine, s.tts.voice) == (
        "tiny.en", f"models/{registry.SMOLLM2_FILE}", "piper", "en_US-joe-medium")
    assert loaded.sources["tts.voice"] == "models.set = 'starter'"  # config.toml's default value counts as unset
    assert loaded.sources["models.set"] == "env VOICECHAT_MODELS__SET"


def test_values_the_user_chose_win_over_the_set(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text('[models]\nset = "starter"\n[stt]\nmodel = "small.en"\n')
    loaded = load_config(own, env={"VOICECHAT_TTS__ENGINE": "espeak"}, overrides={"llm.model": "models/x.gguf"})
    s = loaded.settings
    assert (s.stt.model, s.llm.model, s.tts.engine, s.tts.voice) == ("small.en", "models/x.gguf", "espeak",
                                                                     "en_US-joe-medium")
    assert loaded.sources["stt.model"] == str(own) and loaded.sources["tts.engine"] == "env VOICECHAT_TTS__ENGINE"


def test_standard_changes_nothing_and_a_bad_set_names_the_key_and_the_choices():
    from voicechat.config.loading import ConfigError

    assert load_config(REPO_CONFIG, env={}).settings == load_config(None, env={}).settings
    with pytest.raises(ConfigError, match=r"models\.set = 'big' .* allowed: 'standard', 'starter'"):
        load_config(None, env={}, overrides={"models.set": "big"})


def test_nothing_missing_means_no_download_and_no_output(tmp_path):
    out, text = console()
    prepared = prepare_models(load_config(None, env={}, overrides={**ONLY_LLM, "llm.backend": "scripted"}),
                              tmp_path, err=out, endpoint=closed_port_url())
    assert prepared.active.as_dict() == {"name": "standard", "configured": "standard",
                                         "reason": "its models are here", "substituted": False}
    assert text.getvalue() == ""


def test_unreachable_hub_runs_the_starter_set_and_says_so_in_one_line(fake_starter, tmp_path):
    out, text = console()
    hub = closed_port_url()
    prepared = prepare_models(load_config(REPO_CONFIG, env={}, overrides=ONLY_LLM), tmp_path / "p", err=out,
                              endpoint=hub, pip=local_pip(fake_starter))
    assert prepared.settings.llm.model == "models/tiny-llama.gguf" and prepared.settings.models.set == "starter"
    assert (tmp_path / "p" / "models" / "tiny-llama.gguf").read_bytes() == TINY_GGUF.read_bytes()
    assert prepared.active.summary() == ("starter (the Hugging Face Hub cannot be reached; "
                                         "models.set = standard)")
    said = [line for line in text.getvalue().splitlines() if "cannot be reached" in line]
    assert len(said) == 1 and said[0].startswith(f"voicechat: the Hugging Face Hub cannot be reached ({hub}: ")
    assert "running the starter set" in said[0]
    assert server_config(prepared.settings, prepared.active).models["set"] == prepared.active.summary()


def test_an_explicit_standard_set_is_never_replaced(fake_starter, tmp_path):
    out, text = console()
    loaded = load_config(None, env={}, overrides={**ONLY_LLM, "models.set": "standard"})
    with pytest.raises(MissingModelError) as err:
        prepare_models(loaded, tmp_path, err=out, endpoint=closed_port_url(), pip=local_pip(fake_starter))
    assert "was chosen explicitly" in text.getvalue()
    assert [p.key for p in err.value.problems] == ["llm.model"]
    assert not (tmp_path / "models" / "tiny-llama.gguf").exists()


def test_a_file_no_download_provides_stops_before_any_fetch(fake_starter, tmp_path):
    out, text = console()
    loaded = load_config(None, env={}, overrides={**ONLY_LLM, "llm.model": str(tmp_path / "mine.gguf")})
    with pytest.raises(MissingModelError, match="mine.gguf is missing"):
        prepare_models(loaded, tmp_path, err=out, endpoint=closed_port_url(), pip=local_pip(fake_starter))
    assert text.getvalue() == ""


def test_first_start_fetches_the_standard_set_from_the_hub(tmp_path):
    """Every file of the standard set served by a fake Hub; the GGUF is a real (tiny) one."""
    out, text = console()
    with running_hub() as hub:
        for spec in sets.SETS[sets.STANDARD].specs():
            for f in spec.files:
                content = TINY_GGUF.read_bytes() if f.local_path.endswith(".gguf") else (
                    b"{}" if f.local_path.endswith(".json") else f"{f.local_path}\n".encode())
                hub.add(spec.repo_id, f.repo_path, content)
        loaded = load_config(REPO_CONFIG, env={})
        prepared = prepare_models(loaded, tmp_path, err=out, endpoint=hub.url)
    assert prepared.active.summary() == "standard (fetched on first start)"
    assert prepared.settings == loaded.settings
    assert "fetching the standard set (models.set)" in text.getvalue()
    assert (tmp_path / "models" / "piper" / "en_US-lessac-medium.onnx").is_file()  # the whole set, not only needs


# -- the test bootstrap: `python3 run.py test` makes sure the starter set is here ---------------------


def test_the_test_bootstrap_fetches_a_missing_set_once_and_checks_its_hashes(fake_starter, tmp_path):
    out, text = console()
    assert ensure.ensure_set(root=tmp_path, console=out, pip=local_pip(fake_starter)) == []
    assert (tmp_path / "models" / "tiny-llama.gguf").read_bytes() == TINY_GGUF.read_bytes()
    assert "fetching the starter model set for the tests: fake-tiny-llm" in text.getvalue()
    assert "fetched  models/tiny-llama.gguf" in text.getvalue()
    again, said = console()
    assert ensure.ensure_set(root=tmp_path, console=again, pip=local_pip(tmp_path / "no-wheels")) == []
    assert said.getvalue() == ""  # all here: no pip run, nothing printed


def test_the_test_bootstrap_fetches_a_damaged_file_again(fake_starter, tmp_path):
    assert ensure.ensure_set(root=tmp_path, console=console()[0], pip=local_pip(fake_starter)) == []
    gguf = tmp_path / "models" / "tiny-llama.gguf"
    damaged = bytearray(gguf.read_bytes())
    damaged[-10:] = bytes(10)  # same size: only the hash tells
    gguf.write_bytes(bytes(damaged))
    assert ensure.set_problems([FAKE_LLM], tmp_path)[0].startswith("CORRUPT models/tiny-llama.gguf")
    assert ensure.ensure_set(root=tmp_path, console=console()[0], pip=local_pip(fake_starter)) == []
    assert gguf.read_bytes() == TINY_GGUF.read_bytes()


def test_a_failed_fetch_leaves_problems_that_name_the_file_and_the_fix(fake_starter, tmp_path):
    out, text = console()
    problems = ensure.ensure_set(root=tmp_path, console=out, pip=local_pip(tmp_path / "no-wheels"))
    assert len(problems) == 1 and problems[0].startswith("MISSING models/tiny-llama.gguf")
    assert "pip could not download fake-tiny-llm==0.1.0" in text.getvalue()
    message = ensure.problems_message(problems)
    assert "models/tiny-llama.gguf" in message
    assert message.splitlines()[-1].startswith("fix: python3 run.py models download --set starter")


@pytest.mark.parametrize("env, wanted", [
    ({}, True), ({"VOICECHAT_REAL_MODELS": "0"}, False), ({"CI": "true", "VOICECHAT_REAL_MODELS": "0"}, True),
    ({"CI": "false", "VOICECHAT_REAL_MODELS": "0"}, False), ({"VOICECHAT_REAL_MODELS": "1"}, True),
])
def test_real_model_tests_may_be_skipped_only_outside_ci(env, wanted):
    assert ensure.real_models_wanted(env) is wanted


@pytest.mark.parametrize("real_models, checked", [("1", True), ("0", False)])
def test_run_py_test_ensures_the_set_before_pytest_and_runs_pytest_anyway(monkeypatch, capsys, real_models, checked):
    from voicechat import cli

    calls: list[str] = []
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("VOICECHAT_REAL_MODELS", real_models)
    monkeypatch.setattr(ensure, "ensure_set", lambda **_: calls.append("ensure") or ["MISSING models/x.gguf"])
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, **_: calls.append(" ".join(cmd[1:])) or 0)
    assert cli.main(["test", "-k", "nothing"]) == 0
    assert calls == (["ensure"] if checked else []) + ["-m pytest -k nothing"]
    err = capsys.readouterr().err
    assert ("MISSING models/x.gguf" in err and "python3 run.py models download --set starter" in err) is checked


@pytest.mark.timeout(120)
@pytest.mark.parametrize("env, damage, outcome", [
    ({"CI": "true", "VOICECHAT_REAL_MODELS": "0"}, "corrupt", "error"),  # pytest.fail in the fixture: an error
    ({"VOICECHAT_REAL_MODELS": "0"}, "missing", "skipped"),
])
def test_real_model_tests_fail_in_ci_naming_the_file_and_the_fix(tmp_path, env, damage, outcome):
    """tests/real run against a project root whose models/ lacks the starter set (or holds a damaged file)."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    shutil.copy(REPO_CONFIG, root / "config.toml")
    if damage == "corrupt":
        (root / "models" / registry.SMOLLM2_FILE).write_bytes(b"GGUF" + bytes(100))
    (tmp_path / "elsewhere.py").write_text(  # a plugin loaded before the conftest: models/ lives elsewhere
        f"from pathlib import Path\nimport voicechat.models.store as store\nstore.PROJECT_ROOT = Path({str(root)!r})\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "VOICECHAT_REAL_MODELS")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "elsewhere", "tests/real/test_real_tui.py"],
        cwd=REPO_CONFIG.parent, capture_output=True, text=True, timeout=100,
        env={**clean, **env, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_CONFIG.parent)])},
    )
    out = result.stdout + result.stderr
    assert f"1 {outcome}" in out and result.returncode == (0 if outcome == "skipped" else 1), out[-3000:]
    if outcome == "error":
        assert "the real-model tests need the starter model set" in out
        assert f"models/{registry.SMOLLM2_FILE}" in out
        assert "python3 run.py models download --set starter" in out
