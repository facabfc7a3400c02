"""The espeak-ng engine: real espeak-ng processes, plausible audio, prompt stop, RealtimeTTS compatibility."""

from __future__ import annotations

import io
import struct
import threading

import pytest

from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.tts.espeak_engine import (
    ESPEAK_SAMPLE_RATE,
    MAX_WPM,
    MIN_WPM,
    EspeakEngine,
    check_voice_name,
    espeak_wpm,
    parse_voice_list,
    read_wav_header,
)

LONG = " ".join(["This sentence is long on purpose so that espeak has plenty of audio to stream."] * 6)


def seconds(chunks: list[bytes]) -> float:
    return sum(len(c) for c in chunks) / 2 / ESPEAK_SAMPLE_RATE


def speak(text: str, voice: VoiceSettings | None = None) -> list[bytes]:
    return list(EspeakEngine().stream(text, voice or VoiceSettings()))


def test_speed_maps_to_words_per_minute_within_espeaks_range() -> None:
    assert espeak_wpm(1.0) == 175
    assert espeak_wpm(2.0) == 350
    assert espeak_wpm(0.1) == MIN_WPM
    assert espeak_wpm(100) == MAX_WPM


@pytest.mark.parametrize("name", ["en-us", "en-gb+f3", "gmw/en-US", "de"])
def test_voice_names_pass(name: str) -> None:
    assert check_voice_name(name) == name


@pytest.mark.parametrize("name", ["", "../../etc/passwd", "-x", "en us", "a" * 80, "en;rm"])
def test_bad_voice_names_are_rejected_before_espeak_runs(name: str) -> None:
    with pytest.raises(EngineError, match="espeak-ng --voices"):
        check_voice_name(name)


def test_wav_header_parser_skips_unknown_chunks_and_rejects_non_wav() -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    wav = b"RIFF\xff\xff\xff\x7fWAVE" + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    wav += b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data\xff\xff\xff\x7f" + b"\x01\x02"
    stream = io.BytesIO(wav)
    header = read_wav_header(stream)
    assert header is not None and header.sample_rate == 16000
    assert stream.read() == b"\x01\x02"  # positioned at the samples
    assert read_wav_header(io.BytesIO(b"")) is None
    with pytest.raises(EngineError, match="not a WAV"):
        read_wav_header(io.BytesIO(b"ID3\x04" + b"\x00" * 20))


def test_audio_duration_is_plausible_for_the_text() -> None:
    short = "The weather is nice today."
    long = "The weather is nice today, and tomorrow it will rain in the north and snow in the mountains."
    s_short, s_long = seconds(speak(short)), seconds(speak(long))
    for text, secs in ((short, s_short), (long, s_long)):
        per_word = secs / len(text.split())
        assert 0.2 < per_word < 0.8, (text, secs)  # ~175 words per minute is ~0.34 s per word
    assert s_long > 2 * s_short
    fast = seconds(speak(long, VoiceSettings(speed=2.0)))
    assert fast < 0.65 * s_long


def test_chunks_are_pcm16_of_the_configured_length_and_output_is_deterministic() -> None:
    engine = EspeakEngine(chunk_ms=40)
    chunks = list(engine.stream("Deterministic speech, twice."))
    size = 2 * ESPEAK_SAMPLE_RATE * 40 // 1000
    assert all(len(c) == size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= size
    assert b"".join(chunks) == b"".join(engine.stream("Deterministic speech, twice."))
    assert b"".join(chunks) != b"".join(engine.stream("Different speech, twice."))


def test_voice_and_speed_are_per_call() -> None:
    engine = EspeakEngine()
    us = b"".join(engine.stream("Hello there.", VoiceSettings("en-us")))
    gb = b"".join(engine.stream("Hello there.", VoiceSettings("en-gb+f3")))
    assert us != gb
    assert b"".join(engine.stream("Hello there.", VoiceSettings("en-us"))) == us  # no state left behind


def test_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match=r"no voice 'xx-nonexistent'.*espeak-ng --voices"):
        list(EspeakEngine().stream("Hello.", VoiceSettings("xx-nonexistent")))


def test_missing_executable_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="apt-get install espeak-ng"):
        EspeakEngine(executable="espeak-ng-not-here")


def test_empty_text_makes_no_audio_and_no_process() -> None:
    assert list(EspeakEngine().stream("   \n")) == []


def test_stop_mid_sentence_ends_the_stream_within_one_chunk() -> None:
    engine = EspeakEngine()
    first, stopped, done = threading.Event(), threading.Event(), threading.Event()
    after: list[bytes] = []

    def consume() -> None:
        for i, chunk in enumerate(engine.stream(LONG)):
            if i == 0:
                first.set()
                stopped.wait(10)
            else:
                after.append(chunk)
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(10)
    engine.stop()
    stopped.set()
    assert done.wait(10)
    t.join(10)
    assert len(after) <= 1  # the whole text would be ~25 s = over 1000 chunks
    assert not engine._procs  # the process was killed and reaped


def test_closing_the_iterator_kills_the_process() -> None:
    engine = EspeakEngine()
    it = engine.stream(LONG)
    next(it)
    assert len(engine._procs) == 1
    proc = next(iter(engine._procs))
    it.close()  # type: ignore[attr-defined]
    assert proc.returncode is not None and not engine._procs


def test_threads_sharing_one_engine_get_their_own_audio() -> None:
    engine = EspeakEngine()
    texts = [f"Thread number {n} says its own sentence." for n in range(4)]
    solo = {t: b"".join(engine.stream(t)) for t in texts}
    got: dict[str, bytes] = {}

    def run(text: str) -> None:
        got[text] = b"".join(engine.stream(text))

    threads = [threading.Thread(target=run, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == solo


def test_voice_list_parses_espeak_output() -> None:
    voices = EspeakEngine().get_voices()
    assert "en-us" in {v.name for v in voices}
    sample = "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
    sample += " 5  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n"
    [voice] = parse_voice_list(sample)
    assert (voice.name, voice.display_name) == ("en-us", "English (America)")
    assert (voice.gender, voice.file) == ("M", "gmw/en-US")


def test_realtimetts_base_engine_interface() -> None:
    """The engine works where RealtimeTTS expects a BaseEngine: synthesize() fills its queue."""
    engine = EspeakEngine()
    assert engine.engine_name == "espeak-ng"
    assert engine.get_stream_info()[1:] == (1, ESPEAK_SAMPLE_RATE)
    engine.set_voice("en-gb")
    engine.set_voice_parameters(speed=1.5)
    assert engine.synthesize("Queued for RealtimeTTS.")
    queued = []
    while not engine.queue.empty():
        queued.append(engine.queue.get_nowait())
    assert b"".join(queued) == b"".join(EspeakEngine().stream("Queued for RealtimeTTS.", VoiceSettings("en-gb", 1.5)))
    assert engine.audio_duration == pytest.approx(len(b"".join(queued)) / 2 / ESPEAK_SAMPLE_RATE)
    with pytest.raises(TypeError, match="speed"):
        engine.set_voice_parameters(pitch=3)
    engine.set_voice("xx-nonexistent")
    assert engine.synthesize("Fails.") is False
