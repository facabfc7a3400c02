"""The model registry, the startup check's messages and resolution (no network, no downloads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from voicechat.config.loading import Settings
from voicechat.models import registry as registry
from voicechat.models import store as store
from voicechat.models.cli import main as models_main
from voicechat.models.store import MissingModelError, check_models, require_models

TINY_GGUF = Path(__file__).resolve().parents[2] / "voicechat" / "models" / "tiny" / "assets" / "tiny-llama.gguf"
QWEN = registry.lookup("qwen2.5-1.5b-instruct")
WHISPER = registry.lookup("whisper-base.en")
assert QWEN is not None and WHISPER is not None


def settings(**dotted: str) -> Settings:
    """Settings from defaults plus ``section__key=value`` overrides."""
    data: dict[str, dict[str, str]] = {}
    for name, value in dotted.items():
        section, key = name.split("__")
        data.setdefault(section, {})[key] = value
    return Settings.model_validate(data)


ONLY_LLM = dict(stt__engine="scripted", tts__engine="scripted")
ONLY_STT = dict(llm__backend="scripted", tts__engine="scripted")
NO_STT_LLM = dict(stt__engine="scripted", llm__backend="scripted")
NONE = dict(tts__engine="scripted", **NO_STT_LLM)


def write(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def fake_whisper_dir(directory: Path) -> Path:
    write(directory / "model.bin", b"\0" * 64)
    write(directory / "config.json", b"{}")
    write(directory / "tokenizer.json", b"{}")
    write(directory / "vocabulary.txt", b"a\nb\n")
    return directory


def test_the_project_root_is_where_run_py_and_models_are():
    # Relative model paths and `models download` start here: not inside the package.
    assert (store.PROJECT_ROOT / "run.py").is_file()
    assert (store.models_dir(store.PROJECT_ROOT) / "README.md").is_file()


def test_registry_entries_are_consistent():
    names = [s.name for s in registry.RECOMMENDED]
    assert len(names) == len(set(names))
    assert {s.kind for s in registry.RECOMMENDED if s.default} == {"llm", "stt", "tts", "turn"}
    for spec in registry.RECOMMENDED:
        locals_ = [f.local_path for f in spec.files]
        assert len(locals_) == len(set(locals_)) and all(not p.startswith("/") for p in locals_)
        assert all(p == spec.target or p.startswith(spec.target + "/") for p in locals_) or spec.kind == "tts"
        assert registry.lookup(spec.name) == spec
    # the default config selects exactly the default LLM and Whisper entries
    defaults = Settings()
    assert [s.name for s in registry.RECOMMENDED if store.points_at(s, defaults)] == [
        QWEN.name, WHISPER.name, "smart-turn-v3.2-hub"]


def test_piper_and_kokoro_voices_get_entries_from_their_names():
    spec = registry.lookup("piper-en_GB-alan-low")
    assert spec is not None and spec.config_value == "en_GB-alan-low"
    assert [f.repo_path for f in spec.files] == ["en/en_GB/alan/low/en_GB-alan-low.onnx",
                                                 "en/en_GB/alan/low/en_GB-alan-low.onnx.json"]
    assert registry.piper_for("en_US-lessac-medium").size_bytes  # the listed entry, with its size
    assert registry.piper_for("en-us") is None
    assert [f.local_path for f in registry.kokoro_for("am_adam").files][-1] == "kokoro-82m/voices/am_adam.pt"
    assert registry.format_size(986_000_000) == "986 MB" and registry.format_size(None) == "?"


def test_default_config_on_an_empty_models_dir_names_each_file_key_and_command(tmp_path):
    problems = check_models(Settings(), tmp_path)
    assert [p.key for p in problems] == ["stt.model", "llm.model"]  # espeak needs no files
    stt, llm = (str(p) for p in problems)
    assert stt == ("stt.model = 'base.en': models/faster-whisper-base.en is missing; "
                   "download it with: python run.py models download whisper-base.en")
    assert llm == (f"llm.model = '{QWEN.config_value}': {QWEN.config_value} is missing; "
                   f"download it with: python run.py models download {QWEN.name}")


def test_scripted_engines_need_no_model_files(tmp_path):
    assert check_models(settings(**NONE), tmp_path) == []
    require_models(settings(**NONE), tmp_path)


def test_require_models_raises_with_one_problem_per_line_and_exit_code_2(tmp_path):
    with pytest.raises(MissingModelError) as caught:
        require_models(Settings(), tmp_path)
    err = caught.value
    assert err.exit_code == 2 and len(err.problems) == 2
    lines = str(err).splitlines()
    assert lines[0] == "voicechat: 2 model problems:"
    assert lines[1:] == [f"  {p}" for p in err.problems]


def test_gguf_path_outside_the_registry_suggests_the_recommended_download(tmp_path):
    problem, = check_models(settings(llm__model="weights/mine.gguf", **ONLY_LLM), tmp_path)
    assert problem.path == "weights/mine.gguf" and problem.reason == "is missing"
    assert f"models download {QWEN.name}" in problem.fix and f"llm.model = '{QWEN.config_value}'" in problem.fix


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[: len(data) // 2], "is truncated"),
    (lambda data: data[:100], "is truncated (header ends"),
    (lambda data: b"GGML" + data[4:], "is not a GGUF file"),
    (lambda data: b"", "is empty"),
])
def test_damaged_gguf_is_a_problem(tmp_path, damage, reason):
    write(tmp_path / "models" / "x.gguf", damage(TINY_GGUF.read_bytes()))
    problem, = check_models(settings(llm__model="models/x.gguf", **ONLY_LLM), tmp_path)
    assert problem.path == "models/x.gguf" and problem.reason.startswith(reason), problem


def test_a_model_linked_into_models_is_still_the_registry_entry(tmp_path):
    smollm2 = registry.lookup("smollm2-135m-instruct")
    assert smollm2 is not None
    elsewhere = write(tmp_path / "shared" / smollm2.target, TINY_GGUF.read_bytes()[:100])  # truncated
    (tmp_path / "project" / "models").mkdir(parents=True)
    (tmp_path / "project" / "models" / smollm2.target).symlink_to(elsewhere)
    config = settings(llm__model=smollm2.config_value, **ONLY_LLM)
    problem, = check_models(config, tmp_path / "project")
    assert problem.reason.startswith("is truncated") and f"models download {smollm2.name}" in problem.fix
    assert store.needed_specs(config, tmp_path / "project") == [smollm2]


def test_a_directory_where_the_gguf_should_be_is_a_problem(tmp_path):
    (tmp_path / "models" / "x.gguf").mkdir(parents=True)
    problem, = check_models(settings(llm__model="models/x.gguf", **ONLY_LLM), tmp_path)
    assert problem.reason == "is a directory, expected a file"


def test_a_good_gguf_resolves_to_its_absolute_path(tmp_path):
    shutil.copy(TINY_GGUF, write(tmp_path / "models" / "tiny.gguf"))
    config = settings(llm__model="models/tiny.gguf", **ONLY_LLM)
    assert check_models(config, tmp_path) == []
    assert store.resolve_llm_model(config, tmp_path) == str(tmp_path / "models" / "tiny.gguf")
    assert store.resolve_llm_model(settings(llm__model=str(TINY_GGUF)), tmp_path) == str(TINY_GGUF)


def test_gguf_shorter_than_the_download_recorded_is_reported(tmp_path):
    path = tmp_path / "models" / QWEN.target
    shutil.copy(TINY_GGUF, write(path))
    store.update_manifest(tmp_path / "models", QWEN.target, {"model": QWEN.name, "size": path.stat().st_size + 10,
                                                              "sha256": "0" * 64})
    problem, = check_models(settings(**ONLY_LLM), tmp_path)
    assert "truncated or changed" in problem.reason and f"download {QWEN.name}" in problem.fix


def test_whisper_dir_without_model_bin_names_that_file(tmp_path):
    directory = fake_whisper_dir(tmp_path / "models" / WHISPER.target)
    (directory / "model.bin").unlink()
    problem, = check_models(settings(**ONLY_STT), tmp_path)
    assert str(problem) == ("stt.model = 'base.en': models/faster-whisper-base.en/model.bin is missing; "
                            "download it with: python run.py models download whisper-base.en")
    with pytest.raises(MissingModelError, match="model.bin is missing"):
        store.resolve_stt_model(settings(**ONLY_STT), tmp_path)


def test_whisper_name_or_directory_resolves_to_the_local_directory(tmp_path):
    directory = fake_whisper_dir(tmp_path / "models" / WHISPER.target)
    assert store.resolve_stt_model(settings(**ONLY_STT), tmp_path) == str(directory)
    own = fake_whisper_dir(tmp_path / "elsewhere" / "my-whisper")
    assert store.resolve_stt_model(settings(stt__model=str(own), **ONLY_STT), tmp_path) == str(own)
    write(own / "config.json", b"{not json")
    problem, = check_models(settings(stt__model="elsewhere/my-whisper", **ONLY_STT), tmp_path)
    assert problem.path == "elsewhere/my-whisper/config.json" and problem.reason.startswith("is not valid JSON")
    assert "CTranslate2" in problem.fix


def test_unknown_whisper_name_lists_the_known_ones(tmp_path):
    problem, = check_models(settings(stt__model="huge.xx", **ONLY_STT), tmp_path)
    assert "neither a model directory nor a known Whisper model name" in problem.reason
    assert "base.en" in problem.fix and "small.en" in problem.fix


def test_piper_voice_name_resolves_and_problems_point_at_the_download(tmp_path):
    piper = dict(tts__engine="piper", **NO_STT_LLM)
    first, _ = check_models(settings(**piper), tmp_path)  # the espeak default "en-us" is no Piper voice
    assert first.key == "tts.voice" and first.path == "models/piper/en-us.onnx" and first.reason == "is missing"
    assert "set tts.voice = 'en_US-lessac-medium'" in first.fix
    assert "models download piper-en_US-lessac-medium" in first.fix

    config = settings(tts__voice="en_US-lessac-medium", **piper)
    assert [p.path for p in check_models(config, tmp_path)] == ["models/piper/en_US-lessac-medium.onnx",
                                                                "models/piper/en_US-lessac-medium.onnx.json"]
    onnx = write(tmp_path / "models" / "piper" / "en_US-lessac-medium.onnx", b"onnx")
    write(tmp_path / "models" / "piper" / "en_US-lessac-medium.onnx.json", json.dumps({"audio": {}}).encode())
    assert store.resolve_piper_voice(config, tmp_path) == (str(onnx), str(onnx) + ".json")


def test_voice_directories_follow_the_tts_settings(tmp_path):
    write(tmp_path / "voices" / "tiny.onnx", b"onnx")
    write(tmp_path / "voices" / "tiny.onnx.json", b"{}")
    config = settings(tts__engine="piper", tts__voice="tiny", tts__piper_voice_dir="voices", **NO_STT_LLM)
    assert store.resolve_piper_voice(config, tmp_path)[0] == str(tmp_path / "voices" / "tiny.onnx")
    config = settings(tts__engine="kokoro", tts__voice="am_adam", tts__kokoro_dir="/elsewhere/kokoro", **NO_STT_LLM)
    problem = check_models(config, tmp_path)[0]
    assert problem.path == "/elsewhere/kokoro/config.json"
    assert "tts.kokoro_dir = 'models/kokoro-82m'" in problem.fix and "download kokoro-82m-am_adam" in problem.fix


def test_kokoro_needs_weights_config_and_the_voice(tmp_path):
    config = settings(tts__engine="kokoro", tts__voice="af_heart", **NO_STT_LLM)
    problems = check_models(config, tmp_path)
    assert [p.path for p in problems] == ["models/kokoro-82m/config.json", "models/kokoro-82m/kokoro-v1_0.pth",
                                          "models/kokoro-82m/voices/af_heart.pt"]
    assert all("models download kokoro-82m" in p.fix for p in problems)
    write(tmp_path / "models" / "kokoro-82m" / "config.json", b"{}")
    write(tmp_path / "models" / "kokoro-82m" / "kokoro-v1_0.pth", b"PK\x03\x04weights")
    write(tmp_path / "models" / "kokoro-82m" / "voices" / "af_heart.pt", b"not a zip")
    problem, = check_models(config, tmp_path)
    assert problem.path.endswith("af_heart.pt") and "not a PyTorch (zip) file" in problem.reason
    write(tmp_path / "models" / "kokoro-82m" / "voices" / "af_heart.pt", b"PK\x03\x04voice")
    assert store.resolve_kokoro(config, tmp_path).voice.endswith("voices/af_heart.pt")


def test_models_list_shows_present_missing_corrupt_and_what_the_config_uses(tmp_path, capsys):
    fake_whisper_dir(tmp_path / "models" / WHISPER.target)
    write(tmp_path / "models" / QWEN.target, TINY_GGUF.read_bytes()[:1000])  # truncated
    assert models_main(["list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "present" in rows[WHISPER.name] and rows[WHISPER.name].rstrip(" │").endswith("yes")
    assert "corrupt" in rows[QWEN.name] and "yes" in rows[QWEN.name]
    assert "missing" in rows["whisper-small.en"] and not rows["whisper-small.en"].rstrip(" │").endswith("yes")
    assert f"{QWEN.target} is truncated" in out  # the startup problem is shown below the table


def test_unknown_model_name_is_a_usage_error(tmp_path, capsys):
    assert models_main(["download", "no-such-model", "--root", str(tmp_path)]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
