"""Model downloads against a local fake of the Hugging Face Hub (never the network).

In-process calls pass the fake's URL as ``endpoint``; the subprocess tests set
``HF_ENDPOINT``/``HF_HUB_OFFLINE`` the way a user would, because huggingface_hub reads
them once at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants
from support.fake_hf_hub import FakeHub, running_hub

from voicechat.models import registry as registry
from voicechat.models.cli import main as models_main
from voicechat.models.download import DownloadError, download_model

ROOT = Path(__file__).resolve().parents[2]
PIPER = registry.lookup("piper-en_US-lessac-medium")
assert PIPER is not None
ONNX, CONFIG = PIPER.files
CONFIG_BYTES = b'{"audio": {"sample_rate": 22050}}'
CHUNK = hub_constants.DOWNLOAD_CHUNK_SIZE  # http_get writes (and can resume) in chunks of this size
PIPER_SETTINGS = ["--set", "tts.engine=piper", "--set", f"tts.voice={PIPER.config_value}",
                  "--set", "stt.engine=scripted", "--set", "llm.backend=scripted"]  # only the voice is needed


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (a shifted range would hide offset bugs)."""
    block = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def hub():
    with running_hub() as h:
        yield h


def serve_piper(hub: FakeHub, onnx: bytes, **options: object) -> None:
    hub.add(PIPER.repo_id, ONNX.repo_path, onnx, **options)
    hub.add(PIPER.repo_id, CONFIG.repo_path, CONFIG_BYTES, lfs=False)


def manifest(root: Path) -> dict:
    return json.loads((root / "models" / ".manifest.json").read_text())["files"]


def partials(root: Path) -> list[Path]:
    return list((root / "models").rglob("*.incomplete"))


def test_download_checks_both_kinds_of_checksum_records_them_and_skips_next_time(hub, tmp_path):
    onnx = pattern(300_000)
    serve_piper(hub, onnx)
    outcomes = download_model(PIPER, tmp_path, endpoint=hub.url)
    assert [o.checked for o in outcomes] == ["sha256 matches the Hub (LFS)", "git blob sha1 matches the Hub"]
    assert (tmp_path / "models" / ONNX.local_path).read_bytes() == onnx
    assert (tmp_path / "models" / CONFIG.local_path).read_bytes() == CONFIG_BYTES
    recorded = manifest(tmp_path)
    assert recorded[ONNX.local_path]["sha256"] == hashlib.sha256(onnx).hexdigest()
    assert recorded[ONNX.local_path]["size"] == len(onnx)
    assert recorded[CONFIG.local_path]["sha256"] == hashlib.sha256(CONFIG_BYTES).hexdigest()
    assert partials(tmp_path) == []

    before = len(hub.all_requests())
    again = download_model(PIPER, tmp_path, endpoint=hub.url)
    assert all(o.skipped for o in again)
    assert len(hub.all_requests()) == before  # recorded and same size: no request at all


def test_connection_dropped_mid_file_is_resumed_with_a_range_request(hub, tmp_path):
    onnx = pattern(CHUNK + 200_000)
    serve_piper(hub, onnx, faults=[("drop", CHUNK + 50_000)])
    download_model(PIPER, tmp_path, endpoint=hub.url)
    assert [g.range for g in hub.gets(ONNX.repo_path)] == [None, f"bytes={CHUNK}-"]
    assert (tmp_path / "models" / ONNX.local_path).read_bytes() == onnx


def test_interrupted_run_keeps_its_partial_file_and_the_next_run_resumes_it(hub, tmp_path):
    onnx = pattern(CHUNK + 200_000)
    serve_piper(hub, onnx, faults=[("drop", CHUNK + 50_000), ("status", 500)])
    with pytest.raises(DownloadError, match="again to resume"):
        download_model(PIPER, tmp_path, endpoint=hub.url)
    (partial,) = partials(tmp_path)
    assert partial.stat().st_size == CHUNK
    assert not (tmp_path / "models" / ONNX.local_path).exists()

    download_model(PIPER, tmp_path, endpoint=hub.url)  # a new run: the server works again
    assert hub.gets(ONNX.repo_path)[-1].range == f"bytes={CHUNK}-"
    assert (tmp_path / "models" / ONNX.local_path).read_bytes() == onnx
    assert partials(tmp_path) == []


def test_checksum_mismatch_fails_the_download_and_keeps_nothing(hub, tmp_path, capsys):
    serve_piper(hub, pattern(50_000), advertised_sha256="ab" * 32)
    rc = models_main(["download", PIPER.name, "--root", str(tmp_path)], endpoint=hub.url)
    assert rc == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and ONNX.local_path in err and "abab" in err
    assert not (tmp_path / "models" / ONNX.local_path).exists()
    assert partials(tmp_path) == []
    assert not (tmp_path / "models" / ".manifest.json").exists()  # nothing recorded


def test_file_already_in_place_is_hashed_against_the_hub_not_fetched(hub, tmp_path):
    onnx = pattern(40_000)
    serve_piper(hub, onnx)
    for f, content in ((ONNX, onnx), (CONFIG, CONFIG_BYTES)):
        path = tmp_path / "models" / f.local_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    outcomes = download_model(PIPER, tmp_path, endpoint=hub.url)
    assert all(o.skipped for o in outcomes)
    assert {r.method for r in hub.all_requests()} == {"HEAD"}
    assert manifest(tmp_path)[ONNX.local_path]["sha256"] == hashlib.sha256(onnx).hexdigest()


def run_cli(*args: str, hub: FakeHub, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VOICECHAT_"))}
    environ.update(VOICECHAT_SKIP_BOOTSTRAP="1", HF_ENDPOINT=hub.url, **env)
    return subprocess.run([sys.executable, "run.py", "models", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)


def test_hf_hub_offline_refuses_with_a_clear_message_and_no_request(hub, tmp_path):
    serve_piper(hub, pattern(1000))
    done = run_cli("download", PIPER.name, "--root", str(tmp_path), hub=hub, HF_HUB_OFFLINE="1",
                   HF_HOME=str(tmp_path / "hf"))
    assert done.returncode == 1, done.stderr
    assert "HF_HUB_OFFLINE=1" in done.stderr and "no network request" in done.stderr
    assert hub.all_requests() == []
    assert not (tmp_path / "models" / ONNX.local_path).exists()


def test_cli_downloads_through_hf_endpoint_then_list_and_verify_report_the_state(hub, tmp_path, capsys):
    onnx = pattern(120_000)
    serve_piper(hub, onnx)
    done = run_cli("download", PIPER.name, "--root", str(tmp_path), hub=hub, HF_HOME=str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    assert f"models/{ONNX.local_path}" in done.stdout and "sha256 matches the Hub" in done.stdout
    assert hub.gets(ONNX.repo_path), "the download went to HF_ENDPOINT"

    root = ["--root", str(tmp_path)]
    assert models_main(["list", *root, *PIPER_SETTINGS]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("│")}
    assert "present" in rows[PIPER.name] and "yes" in rows[PIPER.name]
    assert "missing" in rows["whisper-base.en"]

    assert models_main(["verify", *root, *PIPER_SETTINGS, PIPER.name]) == 0
    assert f"OK models/{ONNX.local_path}" in capsys.readouterr().out

    path = tmp_path / "models" / ONNX.local_path
    path.write_bytes(b"X" + onnx[1:])  # same size: only the hash can tell
    (tmp_path / "models" / CONFIG.local_path).unlink()
    assert models_main(["verify", *root, *PIPER_SETTINGS]) == 1
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"CORRUPT models/{ONNX.local_path}") and "--force" in line for line in err)
    assert any(line.startswith(f"MISSING models/{CONFIG.local_path}") for line in err)
    assert len(err) == 2  # one line per problem
