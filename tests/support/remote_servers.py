"""Real speech-to-text servers on loopback for the remote engines' tests (``voicechat.deploy.engine_servers``).

faster-whisper-server (the OpenAI audio API) and wyoming-faster-whisper (Wyoming) serve the starter
Whisper (models/faster-whisper-tiny.en) offline on a random free port. ``kill()`` ends one as a crash
would; ``start()`` brings it back on the same port. The fixtures are module-scoped; a test module
imports them by name. A server package that is not importable skips.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicechat.deploy.engine_servers import WHISPER_DIR, EngineServer, Kind, stt_server

PACKAGES = {"openai": "faster_whisper_server", "wyoming": "wyoming_faster_whisper"}


def started(kind: Kind, work_dir: Path) -> Iterator[EngineServer]:
    if importlib.util.find_spec(PACKAGES[kind]) is None:
        pytest.skip(f"{PACKAGES[kind]} is not installed (the remote STT server for these tests)")
    if not (WHISPER_DIR / "model.bin").is_file():
        pytest.fail(f"{WHISPER_DIR} has no model.bin: run `python3 run.py models download --set starter`",
                    pytrace=False)
    server = stt_server(kind, work_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def openai_stt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    yield from started("openai", tmp_path_factory.mktemp("openai-stt"))


@pytest.fixture(scope="module")
def wyoming_stt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    yield from started("wyoming", tmp_path_factory.mktemp("wyoming-stt"))
