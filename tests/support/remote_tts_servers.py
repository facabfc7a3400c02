"""Real remote TTS servers for tests (``voicechat.deploy.engine_servers``), with the starter Piper voice (joe).

- wyoming-piper 2.5: ``--data-dir`` holds the voice files, so it loads them offline.
- local-tts-studio 1.0: an OpenAI-compatible ``/v1/audio/speech``; it answers when the whole text
  is made (no streaming), ``pcm`` at the voice's rate given in ``X-Sample-Rate``.

loudness-tts 0.1.1 cannot serve here: ``loudness-tts serve --offline -v .../en_US-joe-medium.onnx`` starts
and loads the file, but every request resolves its voice through the package's catalogue first
(``server.py``: ``find_voice(options["voice"] or "auto")``), which lacks joe: no voice field gives
503 OFFLINE (the catalogue's best en-US voice is not downloaded), any other 400 VOICE_NOT_FOUND.

``kill()`` ends a server at once (SIGKILL: a server dying mid-reply) and ``start()`` brings it back on
the same port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voicechat.deploy.engine_servers import VOICE, VOICE_DIR, EngineServer, Kind, tts_server


def started(kind: Kind, work_dir: Path) -> Iterator[EngineServer]:
    if not (VOICE_DIR / f"{VOICE}.onnx").is_file():
        pytest.fail(f"{VOICE_DIR / VOICE}.onnx is missing: `python3 run.py models download --set starter`",
                    pytrace=False)
    if kind == "openai":
        pytest.importorskip("local_tts", reason="local-tts-studio is a test extra (pip install -e '.[test]')")
    server = tts_server(kind, work_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    yield from started("wyoming", tmp_path_factory.mktemp("wyoming"))


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    yield from started("openai", tmp_path_factory.mktemp("openai-tts"))
