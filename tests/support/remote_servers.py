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
package that is not importable skips; a missing starter model fails with the model store's message (the
file, and the command that fetches it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import pytest

from voicechat.deploy.engine_servers import EngineServer, stt_server, tts_server
from voicechat.models.store import MissingModelError


def _running(package: str, make: Callable[[], EngineServer]) -> Iterator[EngineServer]:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (a test extra: pip install -e '.[test]')")
    try:
        server = make().start()
    except MissingModelError as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def openai_stt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("openai-stt")
    yield from _running("faster_whisper_server", lambda: stt_server("openai", work))


@pytest.fixture(scope="module")
def wyoming_stt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("wyoming-stt")
    yield from _running("wyoming_faster_whisper", lambda: stt_server("wyoming", work))


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("wyoming")
    yield from _running("wyoming_piper", lambda: tts_server("wyoming", work))


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    work = tmp_path_factory.mktemp("openai-tts")
    yield from _running("local_tts", lambda: tts_server("openai", work))
