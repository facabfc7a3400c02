"""The remote TTS backends against real servers on loopback (tests/support/remote_tts_servers.py):
wyoming-piper for tts.engine = "wyoming", local-tts-studio's OpenAI-compatible API for "openai", both with
the starter Piper voice (joe). Pools are built as assembly builds them; speech is checked by ear through the
starter Whisper (tiny.en). Waits are on events or on conditions with deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import psutil
import pytest
from support.helpers import wait_until
from support.real import same_words, starter_settings
from support.remote_servers import openai_server, wyoming_server  # noqa: F401 - fixtures

from voicechat.assembly import _build_tts
from voicechat.audio import StreamResampler
from voicechat.config.loading import Settings
from voicechat.deploy.engine_servers import EngineServer
from voicechat.engines.call_guard import CallGuard, error_code
from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.models.store import resolve_stt_model
from voicechat.tts.pool import TTSPool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Not "Set a timer...": tiny.en hears a sentence-initial "Set" as "at" in about one Piper draw in fifty (49 of 50
# here; this sentence: 130 of 130).
SENTENCE = "Please set a timer for twelve minutes."
LONG = ("Once upon a time there was a lighthouse keeper who lived alone on a rocky island. "
        "Every night he climbed the stairs to light the great lamp for the ships at sea. "
        "One winter a storm broke the glass and he had to mend it with his own two hands. "
        "The sailors never knew how close they came to the rocks that night.")
VOICE = VoiceSettings("", 1.0)


def endpoint_of(kind: str, server: EngineServer) -> str:
    return server.endpoint


@pytest.fixture(params=["wyoming", "openai"])
def remote(request: pytest.FixtureRequest) -> tuple[str, EngineServer]:
    kind = request.param
    return kind, request.getfixturevalue(f"{kind}_server")


@pytest.fixture
def pool(remote: tuple[str, EngineServer]) -> Iterator[TTSPool]:
    kind, server = remote
    built = _build_tts(starter_settings(**{"tts.engine": kind, "tts.endpoint": endpoint_of(kind, server),
                                           "tts.workers": "2", "tts.read_timeout_s": "20"}))
    assert isinstance(built, TTSPool)
    yield built
    assert built.close()


@pytest.fixture(scope="module")
def whisper(settings: Settings) -> Callable[[np.ndarray, int], str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(resolve_stt_model(settings), device="cpu", compute_type="int8", cpu_threads=2)

    def transcribe(pcm: np.ndarray, rate: int) -> str:
        audio = np.frombuffer(StreamResampler(rate, 16000).process(pcm.tobytes(), last=True), np.int16)
        segments, _ = model.transcribe(audio.astype(np.float32) / 32768, language="en", beam_size=5)
        return " ".join(s.text.strip() for s in segments)

    return transcribe


def connections_to(port: int) -> int:
    return sum(1 for c in psutil.Process().net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_sentence_is_spoken_at_the_products_rate_and_heard_back(pool: TTSPool, whisper) -> None:
    started = time.monotonic()
    pcm = np.frombuffer(b"".join(pool.synthesize("s1", SENTENCE, VOICE, first_in_reply=True)), np.int16)
    took = time.monotonic() - started
    seconds = len(pcm) / pool.sample_rate
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    heard = whisper(pcm, pool.sample_rate)
    print(f"{pool.remote.kind}: {seconds:.2f} s of audio in {took:.2f} s, rms {rms:.0f}, heard {heard!r}")
    assert pool.sample_rate == 24000 and 1.0 < seconds < 6.0 and rms > 300
    assert same_words(heard, SENTENCE)


def test_wyoming_audio_starts_before_the_whole_text_is_synthesized(wyoming_server: EngineServer) -> None:  # noqa: F811
    t = starter_settings(**{"tts.engine": "wyoming", "tts.endpoint": endpoint_of("wyoming", wyoming_server)})
    built = _build_tts(t)
    try:
        list(built.synthesize("warm", "Hello.", VOICE))  # the server loads its voice on the first request
        started = time.monotonic()
        first = None
        for _ in built.synthesize("s1", LONG, VOICE, first_in_reply=True):
            first = first or time.monotonic() - started
        total = time.monotonic() - started
        print(f"wyoming: first chunk after {first:.3f} s, last after {total:.3f} s")
        assert first is not None and first < 0.6 * total
    finally:
        built.close()


def test_abort_mid_reply_ends_the_stream_at_once_and_closes_the_connection(
    pool: TTSPool, remote: tuple[str, EngineServer]
) -> None:
    kind, server = remote
    list(pool.synthesize("warm", "Hello.", VOICE))
    chunks = pool.synthesize("s1", LONG, VOICE, first_in_reply=True)
    if kind == "wyoming":
        assert next(chunks)  # mid-reply: the server is making the next sentence
    else:  # local-tts-studio answers once the whole text is made: abort while it works on it
        wait_until(lambda: connections_to(server.port) > 0, 10, "a connection to the server")
    aborted = time.monotonic()
    pool.abort("s1")
    # at once: well before the rest of the long text could be made (seconds here), whatever the machine's load
    assert list(chunks) == [] and time.monotonic() - aborted < 1.0
    wait_until(lambda: connections_to(server.port) == 0, 10 if kind == "openai" else 2, "closing the connection")
    wait_until(lambda: pool.stats().cancelled >= 1, 10, "the worker counting the job cancelled")
    assert list(pool.synthesize("s2", "Hello.", VOICE))  # the workers are free again


def guarded(pool: TTSPool, session: str, text: str) -> Iterator[bytes]:
    guard = CallGuard("tts", session, pool, label="speech synthesizer", timeout_s=30,
                      abort=lambda: pool.abort(session))
    return guard.open(1, lambda: pool.synthesize(session, text, VOICE, first_in_reply=True))


def test_a_server_killed_mid_reply_fails_that_reply_and_later_replies_work_once_it_is_back(
    pool: TTSPool, remote: tuple[str, EngineServer]
) -> None:
    kind, server = remote
    list(pool.synthesize("warm", "Hello.", VOICE))
    reply = guarded(pool, "a", LONG)
    if kind == "wyoming":
        assert next(reply)
    else:
        wait_until(lambda: connections_to(server.port) > 0, 10, "a connection to the server")
    server.kill()
    with pytest.raises(EngineError) as caught:
        list(reply)
    print(f"{kind}: killed mid-reply -> {error_code('tts', caught.value)}: {caught.value}")
    assert error_code("tts", caught.value) == "tts_failed"

    started = time.monotonic()  # another session while the server is down: an error at once, no hang
    with pytest.raises(EngineError) as down:
        list(guarded(pool, "b", SENTENCE))
    assert error_code("tts", down.value) in ("tts_failed", "tts_unavailable") and time.monotonic() - started < 5

    server.start()
    for session in ("a", "b"):
        assert len(b"".join(guarded(pool, session, SENTENCE))) > pool.sample_rate  # over half a second
    stats = pool.stats()
    assert stats.workers == 2 and stats.replaced == 0 and pool.breaker.stats().state.value == "closed"
