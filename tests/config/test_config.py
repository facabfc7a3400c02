"""Tests for voicechat.config.loading: layering, provenance, error messages and config.toml.

Every test passes an explicit ``env`` dict (never os.environ) and works in tmp_path,
so the developer's own environment and config.toml cannot change the outcome.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.config.loading import (
    ConfigError,
    LoadedConfig,
    Settings,
    add_config_arguments,
    config_main,
    default_toml,
    format_config,
    load_config,
    load_from_args,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def all_keys() -> list[str]:
    """Every dotted key in the schema, from the models themselves."""
    return [
        f"{section}.{key}"
        for section, info in Settings.model_fields.items()
        for key in info.annotation.model_fields  # type: ignore[union-attr]
    ]


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    """Write a config file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def from_cli(argv: list[str], env: dict[str, str]) -> LoadedConfig:
    """Parse argv the way a subcommand would and load from it."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return load_from_args(parser.parse_args(argv), env=env)


def error_of(**kwargs: object) -> ConfigError:
    """The ConfigError load_config raises; also checks the message is one line."""
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    return info.value


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory so the repo's ./config.toml is never picked up by accident."""
    monkeypatch.chdir(tmp_path)


# --- defaults and layering -------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    loaded = load_config(env={})
    s = loaded.settings
    assert s == Settings()
    assert s.audio.stt_sample_rate == 16000
    assert s.llm.temperature == 0.7
    assert s.llm.system_prompt.startswith("You are a friendly voice assistant.")
    assert s.server.port == 8765
    assert s.server.allowed_origins == []
    assert s.logging.realtimestt_level == "WARNING"
    assert loaded.sources == {key: "default" for key in all_keys()}


def test_file_overrides_defaults(tmp_path: Path) -> None:
    text = '[llm]\ntemperature = 0.2\nbackend = "scripted"\n[server]\nallowed_origins = ["https://a"]\n'
    path = write(tmp_path, text)
    loaded = load_config(path, env={})
    assert loaded.settings.llm.temperature == 0.2
    assert loaded.settings.llm.backend == "scripted"
    assert loaded.settings.server.allowed_origins == ["https://a"]
    assert loaded.settings.llm.top_p == 0.95
    assert loaded.sources["llm.temperature"] == str(path)
    assert loaded.sources["server.allowed_origins"] == str(path)
    assert loaded.sources["llm.top_p"] == "default"


def test_config_file_from_env_var_and_from_cwd(tmp_path: Path) -> None:
    named = write(tmp_path, "[tts]\nworkers = 5\n", name="other.toml")
    assert load_config(env={"VOICECHAT_CONFIG": str(named)}).settings.tts.workers == 5
    write(tmp_path, "[tts]\nworkers = 7\n")  # ./config.toml, found because cwd is tmp_path
    loaded = load_config(env={})
    assert loaded.settings.tts.workers == 7
    assert loaded.sources["tts.workers"] == "config.toml"
    # An explicit path beats VOICECHAT_CONFIG, which beats ./config.toml.
    assert load_config(named, env={"VOICECHAT_CONFIG": "nope.toml"}).settings.tts.workers == 5


def test_env_beats_file_and_is_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path, "[llm]\ntemperature = 0.2\n")
    env = {
        "VOICECHAT_LLM__TEMPERATURE": "0.3",
        "voicechat_vad__barge_in": "false",
        "VOICECHAT_SERVER__ALLOWED_ORIGINS": '["https://x", "https://y"]',
        "VOICECHAT_AUDIO__STT_SAMPLE_RATE": "16000",
        "VOICECHAT_SKIP_BOOTSTRAP": "1",  # not a config variable: ignored
        "HOME": "/nowhere",
    }
    loaded = load_config(path, env=env)
    assert loaded.settings.llm.temperature == 0.3
    assert loaded.settings.vad.barge_in is False
    assert loaded.settings.server.allowed_origins == ["https://x", "https://y"]
    assert loaded.sources["llm.temperature"] == "env VOICECHAT_LLM__TEMPERATURE"
    assert loaded.sources["vad.barge_in"] == "env voicechat_vad__barge_in"


def test_set_beats_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[llm]\ntemperature = 0.2\n")
    env = {"VOICECHAT_LLM__TEMPERATURE": "0.3"}
    argv = ["--config", str(path), "--set", "llm.temperature=0.4", "--set", "llm.max_tokens=9"]
    loaded = from_cli(argv, env)
    assert loaded.settings.llm.temperature == 0.4
    assert loaded.settings.llm.max_tokens == 9
    assert loaded.sources["llm.temperature"] == "cli --set llm.temperature=0.4"
    assert loaded.sources["llm.max_tokens"] == "cli --set llm.max_tokens=9"


@pytest.mark.parametrize("layers", list(itertools.product([False, True], repeat=3)))
def test_precedence_every_combination(tmp_path: Path, layers: tuple[bool, bool, bool]) -> None:
    use_file, use_env, use_cli = layers
    path = write(tmp_path, "[sessions]\nmax_sessions = 2\n") if use_file else None
    env = {"VOICECHAT_SESSIONS__MAX_SESSIONS": "3"} if use_env else {}
    overrides = {"sessions.max_sessions": "4"} if use_cli else {}
    loaded = load_config(path, env=env, overrides=overrides)
    expected, source = 16, "default"
    if use_file:
        expected, source = 2, str(path)
    if use_env:
        expected, source = 3, "env VOICECHAT_SESSIONS__MAX_SESSIONS"
    if use_cli:
        expected, source = 4, "cli --set sessions.max_sessions=4"
    assert loaded.settings.sessions.max_sessions == expected
    assert loaded.sources["sessions.max_sessions"] == source


# --- errors ------------------------------------------------------------------------------


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[llm]\ntemprature = 0.2\n")
    err = error_of(config_path=path, env={})
    msg = str(err)
    assert "unknown key llm.temprature" in msg
    assert str(path) in msg
    assert "keys in [llm]: backend, model," in msg and "temperature" in msg
    assert "did you mean llm.temperature?" in msg
    assert err.key == "llm.temprature"


def test_unknown_section_in_file(tmp_path: Path) -> None:
    msg = str(error_of(config_path=write(tmp_path, "[lm]\ntemperature = 0.2\n"), env={}))
    assert "unknown section [lm]" in msg and "sections: audio, vad, stt, llm," in msg


def test_section_must_be_a_table(tmp_path: Path) -> None:
    msg = str(error_of(config_path=write(tmp_path, "llm = 3\n"), env={}))
    assert "[llm] must be a table" in msg


def test_unknown_key_in_env() -> None:
    err = error_of(env={"VOICECHAT_LLM__TEMPRATURE": "0.2"})
    assert "unknown key llm.temprature" in str(err)
    assert "(from env VOICECHAT_LLM__TEMPRATURE)" in str(err)
    assert err.source == "env VOICECHAT_LLM__TEMPRATURE"


def test_unknown_section_in_env() -> None:
    assert "unknown section [lm]" in str(error_of(env={"VOICECHAT_LM__TEMPERATURE": "0.2"}))


def test_single_underscore_env_var_for_a_real_key_is_flagged() -> None:
    msg = str(error_of(env={"VOICECHAT_LLM_TEMPERATURE": "0.2"}))
    assert "VOICECHAT_LLM__TEMPERATURE" in msg


def test_unknown_key_in_set() -> None:
    with pytest.raises(ConfigError) as info:
        from_cli(["--set", "llm.temprature=0.2"], env={})
    assert "unknown key llm.temprature" in str(info.value)
    assert "(from cli --set llm.temprature=0.2)" in str(info.value)


@pytest.mark.parametrize("item", ["llm.temperature", "=0.2", "temperature=0.2"])
def test_malformed_set(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_cli(["--set", item], env={})
    assert item in str(info.value)
    assert "SECTION.KEY" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("llm.temperature", "3", "allowed: a number from 0 to 2"),
        ("llm.temperature", "-0.1", "allowed: a number from 0 to 2"),
        ("audio.frame_ms", "5", "allowed: an integer from 10 to 100"),
        ("llm.n_ctx", "300.5", "allowed: an integer from 256 to 131072"),
        ("sessions.idle_timeout_s", "0", "allowed: a number > 0"),
        ("sessions.idle_timeout_s", "inf", "allowed: a number > 0"),
        ("llm.n_gpu_layers", "-2", "allowed: an integer >= -1"),
        ("vad.barge_in", "maybe", "allowed: true or false"),
        ("server.allowed_origins", "https://a", "allowed: a list of strings"),
        ("sessions.store", "mongo", "allowed: 'files', 'redis'"),
        ("sessions.redis_url", "http://127.0.0.1:6379", "must be a redis://, rediss:// or unix:// URL"),
        ("llm.example_turns", '["a question without its answer"]', "user and assistant turns in pairs"),
        ("llm.min_p", "1", "allowed: a number >= 0 and < 1"),
    ],
)
def test_bad_value_names_key_value_bounds_and_source(key: str, value: str, allowed: str) -> None:
    err = error_of(env={}, overrides={key: value})
    msg = str(err)
    assert msg.startswith(f"{key} = ")
    assert value in msg
    assert f"(from cli --set {key}={value})" in msg
    assert allowed in msg
    assert err.key == key


def test_bad_value_from_env_has_pydantic_reason() -> None:
    msg = str(error_of(env={"VOICECHAT_LLM__TEMPERATURE": "hot"}))
    assert msg.startswith("llm.temperature = 'hot' (from env VOICECHAT_LLM__TEMPERATURE) is invalid: ")
    assert "valid number" in msg
    assert msg.endswith("allowed: a number from 0 to 2")


def test_bad_value_from_file_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 70000\n")
    msg = str(error_of(config_path=path, env={}))
    assert f"server.port = 70000 (from {path})" in msg
    assert "an integer from 0 to 65535" in msg


def test_bad_literal_lists_choices() -> None:
    msg = str(error_of(env={}, overrides={"tts.engine": "festival"}))
    assert msg == (
        "tts.engine = 'festival' (from cli --set tts.engine=festival) is invalid; "
        "allowed: 'espeak', 'piper', 'kokoro', 'openai', 'wyoming', 'scripted'"
    )
    assert "allowed: 16000" in str(error_of(env={"VOICECHAT_AUDIO__STT_SAMPLE_RATE": "8000"}))


def test_several_bad_values_are_all_named() -> None:
    msg = str(error_of(env={}, overrides={"llm.temperature": "9", "llm.top_p": "9"}))
    assert msg.startswith("llm.temperature = 9") and "also invalid: llm.top_p" in msg


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm]\ntemperature = 0.2\nmodel = \n')
    msg = str(error_of(config_path=path, env={}))
    assert str(path) in msg and "line 3" in msg


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert str(missing) in str(error_of(config_path=missing, env={}))
    msg = str(error_of(env={"VOICECHAT_CONFIG": str(missing)}))
    assert str(missing) in msg and "VOICECHAT_CONFIG" in msg
    assert "is not a file" in str(error_of(config_path=tmp_path, env={}))


# --- the `config` command ----------------------------------------------------------------


def test_config_main_error_is_one_line_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[llm]\ntemperature = 5\n")
    assert config_main(["--config", str(path)], env={}) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("voicechat: config error: llm.temperature = 5")
    assert "Traceback" not in err
    assert config_main(["--set", "nonsense"], env={}) == 2
    assert capsys.readouterr().err.startswith("voicechat: config error: malformed --set")


def test_config_main_prints_every_key_with_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[llm]\ntemperature = 0.5\n")
    env = {"VOICECHAT_SERVER__PORT": "9000"}
    assert config_main(["--config", str(path), "--set", "tts.voice=en-gb"], env=env) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" = ")[0] for line in lines] == all_keys()
    by_key = {line.split(" = ")[0]: line for line in lines}
    assert by_key["llm.temperature"].split("#")[0].strip() == "llm.temperature = 0.5"
    assert f"# {path}" in by_key["llm.temperature"]
    assert "# env VOICECHAT_SERVER__PORT" in by_key["server.port"]
    assert 'tts.voice = "en-gb"' in by_key["tts.voice"]
    assert "# cli --set tts.voice=en-gb" in by_key["tts.voice"]
    assert "# default" in by_key["llm.top_p"]


def test_format_config_masks_secrets() -> None:
    env = {"VOICECHAT_LLM__API_KEY": "sk-secret"}
    loaded = load_config(env=env, overrides={"server.token": "tok-secret"})
    text = format_config(loaded)
    assert "sk-secret" not in text and "tok-secret" not in text
    assert 'llm.api_key = "***"' in text
    assert loaded.settings.llm.api_key == "sk-secret"  # only the printout is masked


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(st.characters(codec="utf-8"), max_size=40))
def test_format_config_values_are_valid_toml(prompt: str) -> None:
    loaded = load_config(env={}, overrides={"llm.system_prompt": prompt})
    line = next(line for line in format_config(loaded).splitlines() if line.startswith("llm.system_prompt"))
    value_text = line.split(" = ", 1)[1].rsplit("   # ", 1)[0]
    assert tomllib.loads(f"v = {value_text}")["v"] == prompt


@settings(max_examples=60, deadline=None)
@given(value=st.floats(min_value=-10, max_value=10, allow_nan=False))
def test_bounds_are_enforced_for_any_number(value: float) -> None:
    overrides = {"llm.temperature": repr(value)}
    if 0 <= value <= 2:
        assert load_config(env={}, overrides=overrides).settings.llm.temperature == value
    else:
        assert "allowed: a number from 0 to 2" in str(error_of(env={}, overrides=overrides))


# --- config.toml at the repo root --------------------------------------------------------


def test_repo_config_toml_equals_defaults_and_lists_every_field() -> None:
    text = REPO_CONFIG.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    listed = [f"{section}.{key}" for section, table in data.items() for key in table]
    assert sorted(listed) == sorted(all_keys()), "config.toml must list every setting exactly once"
    assert Settings.model_validate(data) == Settings(), "config.toml must hold the defaults"
    assert data == Settings().model_dump(), "config.toml values must equal the defaults exactly"
    loaded = load_config(REPO_CONFIG, env={})
    assert set(loaded.sources.values()) == {str(REPO_CONFIG)}


def test_repo_config_toml_comments_each_key_with_its_description() -> None:
    lines = REPO_CONFIG.read_text(encoding="utf-8").splitlines()
    for section, info in Settings.model_fields.items():
        for key, field in info.annotation.model_fields.items():  # type: ignore[union-attr]
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = ")
                         and section_of(lines, i) == section)
            assert lines[index - 1].startswith(f"# {field.description}"), f"{section}.{key}"


def section_of(lines: list[str], index: int) -> str:
    """The [section] a line of a TOML file belongs to."""
    header = next(line for line in reversed(lines[:index]) if line.startswith("["))
    return header.strip("[]")


def test_default_toml_renders_the_repo_file() -> None:
    assert tomllib.loads(default_toml()) == tomllib.loads(REPO_CONFIG.read_text(encoding="utf-8"))
