"""Remote TTS backends without sockets: body decoding, Wyoming event sequences, request building, config
checks, the pool engine's resampling and abort (over a fake client), reachability caching, the health hook."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator

import httpx2
import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import read_event

from voicechat.config.loading import ConfigError, load_config
from voicechat.engines.endpoints import api_url, remote_status_of, tcp_address
from voicechat.engines.protocols import EngineError
from voicechat.tts.openai_tts import header_rate, speech_body
from voicechat.tts.remote import PcmDecoder, Reachability, RemoteTtsEngine, parse_wav_header
from voicechat.tts.wyoming_tts import WyomingReply, synthesize_bytes


def wav(pcm: bytes, rate: int = 22050, *, data_size: int | None = None, extra: bytes = b"", bits: int = 16,
        channels: int = 1) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, bits)
    size = len(pcm) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", size) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM = np.arange(-500, 500, dtype=np.int16).tobytes()


def decode_in_pieces(decoder: PcmDecoder, body: bytes, step: int) -> bytes:
    out = b"".join(decoder.feed(body[i : i + step]) for i in range(0, len(body), step))
    decoder.finish()
    return out


# -- body decoding -------------------------------------------------------------------------
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_a_wav_body_fed_in_any_pieces_gives_its_samples_and_rate(step: int) -> None:
    decoder = PcmDecoder("wav")
    assert decode_in_pieces(decoder, wav(PCM, 22050, extra=b"LIST" + struct.pack("<I", 4) + b"INFO"), step) == PCM
    assert decoder.rate == 22050


def test_a_streamed_wav_with_unknown_size_passes_everything_and_a_declared_size_cuts_trailers() -> None:
    assert decode_in_pieces(PcmDecoder("wav"), wav(PCM, data_size=0xFFFFFFFF), 100) == PCM
    assert decode_in_pieces(PcmDecoder("wav"), wav(PCM, data_size=len(PCM)) + b"junk", 100) == PCM


def test_auto_takes_raw_pcm_at_the_given_rate_and_recognises_wav() -> None:
    raw = PcmDecoder("auto", pcm_rate=24000)
    assert decode_in_pieces(raw, PCM, 3) == PCM and raw.rate == 24000
    riff = PcmDecoder("auto", pcm_rate=24000)
    assert decode_in_pieces(riff, wav(PCM, 16000), 3) == PCM and riff.rate == 16000


@pytest.mark.parametrize("body, message", [
    (wav(PCM, bits=8), "not PCM16 mono"),
    (wav(PCM, channels=2), "not PCM16 mono"),
    (b"RIFX" + b"\0" * 40, "not a WAV stream"),
])
def test_a_body_that_is_not_pcm16_mono_wav_is_an_engine_error(body: bytes, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        PcmDecoder("wav").feed(body)


def test_a_body_ending_inside_its_wav_header_is_an_error_and_a_partial_header_waits() -> None:
    decoder = PcmDecoder("wav")
    assert decoder.feed(wav(PCM)[:30]) == b"" and parse_wav_header(wav(PCM)[:30]) is None
    with pytest.raises(EngineError, match="inside its header"):
        decoder.finish()


# -- requests --------------------------------------------------------------------------------
def test_speech_body_defaults_the_voice_and_sends_speed_only_when_changed() -> None:
    assert speech_body("tts-1", "", "Hi.", "pcm", 1.0) == {
        "model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"}
    assert speech_body("m", "nova", "Hi.", "wav", 1.5)["speed"] == 1.5


def test_the_pcm_rate_comes_from_x_sample_rate_when_the_server_sends_it() -> None:
    assert header_rate(httpx2.Headers({"X-Sample-Rate": "22050"}), 24000) == 22050
    assert header_rate(httpx2.Headers({"X-Sample-Rate": "nope"}), 24000) == 24000
    assert header_rate(httpx2.Headers({}), 24000) == 24000


@pytest.mark.parametrize("endpoint", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/audio/speech"])
def test_the_speech_url_is_found_with_or_without_v1(endpoint: str) -> None:
    assert api_url(endpoint, "audio/speech", "tts.endpoint") == "http://h:1/v1/audio/speech"


@pytest.mark.parametrize("endpoint", ["h:1", "tcp://h", "tcp://h:99999", "http://h:1", "tcp://h:1/path"])
def test_a_malformed_wyoming_endpoint_names_the_key(endpoint: str) -> None:
    with pytest.raises(ValueError, match="tts.endpoint must be a tcp URL such as tcp://"):
        tcp_address(endpoint, "tts.endpoint")


@pytest.mark.parametrize("engine, endpoint, expected", [
    ("openai", "", "must be an http"), ("openai", "ftp://x", "must be an http"), ("openai", "http://:80", "http"),
    ("wyoming", "http://h:10200", "tcp://"), ("wyoming", "", "tcp://"),
])
def test_config_refuses_an_endpoint_that_does_not_fit_the_engine(engine: str, endpoint: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(None, env={}, overrides={"tts.engine": engine, "tts.endpoint": endpoint})
    assert caught.value.key == "tts.endpoint" and f"tts.engine = '{engine}'" in str(caught.value)


def test_config_names_the_allowed_engines_and_formats() -> None:
    with pytest.raises(ConfigError, match="'openai'.*'wyoming'"):
        load_config(None, env={}, overrides={"tts.engine": "grpc"})
    with pytest.raises(ConfigError, match="tts.remote_format.*'pcm'.*'wav'"):
        load_config(None, env={}, overrides={"tts.remote_format": "mp3"})


# -- Wyoming events ------------------------------------------------------------------------------
def test_synthesize_bytes_is_one_synthesize_event_with_its_voice() -> None:
    event = read_event(io.BytesIO(synthesize_bytes("Hello there.", "en_US-joe-medium")))
    assert event is not None and event.type == "synthesize"
    assert event.data["text"] == "Hello there." and event.data["voice"]["name"] == "en_US-joe-medium"
    assert "voice" not in read_event(io.BytesIO(synthesize_bytes("Hi."))).data  # type: ignore[union-attr]


def test_a_wyoming_reply_yields_its_chunks_and_ends_at_audio_stop() -> None:
    reply = WyomingReply()
    events = [AudioStart(22050, 2, 1).event(), AudioChunk(22050, 2, 1, PCM[:100]).event(),
              AudioChunk(22050, 2, 1, PCM[100:]).event()]
    assert b"".join(reply.feed(e) for e in events) == PCM and reply.rate == 22050 and not reply.done
    assert reply.feed(AudioStop().event()) == b"" and reply.done


@pytest.mark.parametrize("event, message", [
    (Error(text="voice not found", code="VoiceNotFoundError").event(), "voice not found"),
    (AudioStart(22050, 4, 1).event(), "not PCM16 mono"),
    (AudioChunk(22050, 2, 2, b"\0" * 8).event(), "not PCM16 mono"),
])
def test_a_wyoming_error_or_unusable_audio_is_an_engine_error(event, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        WyomingReply().feed(event)


def test_a_wyoming_rate_change_within_a_reply_is_an_error() -> None:
    reply = WyomingReply()
    reply.feed(AudioStart(22050, 2, 1).event())
    with pytest.raises(EngineError, match="changed its rate"):
        reply.feed(AudioChunk(16000, 2, 1, b"\0\0").event())


# -- the pool engine over a fake client ------------------------------------------------------------
class FakeStream:
    def __init__(self, pieces: list[tuple[bytes, int]], block: bool = False, fail: bool = False) -> None:
        self._pieces, self._block, self._fail = pieces, block, fail
        self.aborted = threading.Event()
        self.reading = threading.Event()

    def pieces(self) -> Iterator[tuple[bytes, int]]:
        yield from self._pieces
        self.reading.set()
        if self._block:
            self.aborted.wait(10)  # a read that only an abort wakes, as a socket shutdown does
            raise EngineError("connection reset")
        if self._fail:
            raise EngineError("the server went away")

    def abort(self) -> None:
        self.aborted.set()


class FakeClient:
    kind, endpoint = "fake", "fake://"

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.opened: list[tuple[str, str, float]] = []

    def open(self, text: str, voice: str, speed: float) -> FakeStream:
        self.opened.append((text, voice, speed))
        return self.stream

    def remote_status(self) -> dict[str, object]:
        return {"kind": self.kind, "reachable": True}

    def close(self) -> None:
        pass


def test_the_engine_resamples_the_servers_rate_to_its_own_in_even_chunks() -> None:
    tone = (np.sin(np.arange(22050) / 22050 * 2 * np.pi * 440) * 8000).astype(np.int16).tobytes()
    client = FakeClient(FakeStream([(tone[:1001], 22050), (tone[1001:], 22050)]))  # split inside a sample
    engine = RemoteTtsEngine(client, 24000, chunk_ms=20, voice="joe")
    chunks = list(engine.stream("One second."))
    assert all(len(c) == 960 for c in chunks[:-1])
    assert abs(sum(map(len, chunks)) / 2 - 24000) < 50
    assert client.opened == [("One second.", "joe", 1.0)]


def test_stop_aborts_a_blocked_read_and_the_stream_ends_quietly() -> None:
    stream = FakeStream([(PCM, 24000)], block=True)
    engine = RemoteTtsEngine(FakeClient(stream), 24000)
    chunks = engine.stream("Long text.")
    first = next(chunks)
    assert first
    ended = threading.Event()

    def drain() -> None:
        for _ in chunks:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    assert stream.reading.wait(5)
    engine.stop()
    assert ended.wait(5) and stream.aborted.is_set()


def test_a_failure_nobody_stopped_reaches_the_caller_and_the_connection_is_closed() -> None:
    stream = FakeStream([(PCM, 24000)], fail=True)
    with pytest.raises(EngineError, match="went away"):
        list(RemoteTtsEngine(FakeClient(stream), 24000).stream("Hi."))
    assert stream.aborted.is_set()


def test_blank_text_opens_no_request() -> None:
    client = FakeClient(FakeStream([]))
    assert list(RemoteTtsEngine(client, 24000).stream("  ")) == [] and client.opened == []


# -- health ---------------------------------------------------------------------------------------
def test_reachability_is_cached_for_its_ttl() -> None:
    now, calls = [0.0], []

    def connect(address: tuple[str, int], timeout: float):
        calls.append(address)
        raise ConnectionRefusedError("refused")

    reach = Reachability("h", 1, ttl_s=5, clock=lambda: now[0], connect=connect)
    assert reach.check() == (False, "ConnectionRefusedError: refused") and reach.check()[0] is False
    now[0] = 6.0
    reach.check()
    assert calls == [("h", 1), ("h", 1)]


def test_health_shows_a_remote_engine_and_nothing_for_in_process_ones() -> None:
    class Pool:
        remote = FakeClient(FakeStream([]))

    assert remote_status_of(Pool()) == {"kind": "fake", "reachable": True}
    assert remote_status_of(object()) is None


def test_a_server_down_at_start_warns_once_and_each_call_fails_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    from voicechat.assembly import _build_tts
    from voicechat.deploy.processes import free_port
    from voicechat.engines.protocols import VoiceSettings

    port = free_port()  # nothing listens there
    settings = load_config(None, env={}, overrides={"tts.engine": "wyoming", "tts.endpoint": f"tcp://127.0.0.1:{port}"})
    with caplog.at_level("WARNING"):
        pool = _build_tts(settings.settings)
    try:
        assert [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()] != []
        with pytest.raises(EngineError, match="cannot connect"):
            list(pool.synthesize("s1", "Hello.", VoiceSettings("", 1.0)))
        health = remote_status_of(pool)
        assert health is not None and health["endpoint"] == f"tcp://127.0.0.1:{port}"
        assert health["reachable"] is False and "Connection" in str(health["error"])
    finally:
        pool.close()  # type: ignore[attr-defined]
