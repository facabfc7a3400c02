"""Real remote engine servers on loopback for the remote backends' tests (``voicechat.deploy.engine_servers``).

Speech to text: faster-whisper-server (the OpenAI audio API) and wyoming-faster-whisper (Wyoming), serving
the starter Whisper (models/faster-whisper-tiny.en) offline. Text to speech: wyoming-piper (its
``--data-dir`` holds the voice files, so it loads them offline) and local-tts-studio (an OpenAI-compatible
``/v1/audio/speech`` that answers when the whole text is made, ``pcm`` at the voice's rate given in
``X-Sample-Rate``), with the starter Piper voice (joe).

loudness-tts 0.1.1 cannot serve here: ``loudness-tts serve --offline -v .../en_US-joe-medium.onnx`` starts
and loads the file, but every request resolves its voice through the package's catalogue first
(``server.py``: ``find_voice(options["voice"] or "auto")``), which lacks joe: no voice field gives
503 OFFLINE (the catalogue's best en-US voice is not downloaded), any other 400 VOICE_NOT_FOUND.

Each server listens on a random free port; ``kill()`` ends it as a crash would and ``start()`` brings it
back on the same port. The fixtures are module-scoped; a test module imports them by name. A server
package that is not importable skips; a missing starter model fails, naming the command that fetches it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from voicechat.deploy.engine_servers import VOICE, VOICE_DIR, WHISPER_DIR, EngineServer, stt_server, tts_server

FETCH = "run `python3 run.py models download --set starter`"


def _running(package: str, model: Path, make: Callable[[], EngineServer]) -> Iterator[EngineServer]:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (a test extra: pip install -e '.[test]')")
    if not model.exists():
        pytest.fail(f"{model} is missing: {FETCH}", pytrace=False)
    server = make().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def openai_stt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("openai-stt")
    yield from _running("faster_whisper_server", WHISPER_DIR / "model.bin", lambda: stt_server("openai", work))


@pytest.fixture(scope="module")
def wyoming_stt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("wyoming-stt")
    yield from _running("wyoming_faster_whisper", WHISPER_DIR / "model.bin", lambda: stt_server("wyoming", work))


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("wyoming")
    yield from _running("wyoming_piper", VOICE_DIR / f"{VOICE}.onnx", lambda: tts_server("wyoming", work))


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("openai-tts")
    yield from _running("local_tts", VOICE_DIR / f"{VOICE}.onnx", lambda: tts_server("openai", work))
