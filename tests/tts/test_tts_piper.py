"""Piper through the real piper-tts code path (phonemizer + onnxruntime) on a tiny self-made voice."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.models.tiny import make_piper
from voicechat.tts.piper_engine import PiperEngine, PiperVoices, voice_files
from voicechat.tts.pool import TTSPool

SHIPPED = make_piper.DEFAULT_DIR / f"{make_piper.TINY_VOICE}.onnx"
TEXT = "Hello there. How are you doing today?"


def seconds(chunks: list[bytes], rate: int) -> float:
    return sum(len(c) for c in chunks) / 2 / rate


@pytest.fixture(scope="module")
def voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/piper-like directory: the shipped 16 kHz voice and a 22.05 kHz one."""
    d = tmp_path_factory.mktemp("piper")
    shutil.copy(SHIPPED, d / SHIPPED.name)
    shutil.copy(f"{SHIPPED}.json", d / f"{SHIPPED.name}.json")
    make_piper.write_voice(d, 22050, name="tiny-22k")
    return d


def test_shipped_voice_is_small_and_equals_what_the_maker_writes(tmp_path: Path) -> None:
    assert SHIPPED.stat().st_size + Path(f"{SHIPPED}.json").stat().st_size < 100_000
    fresh = make_piper.write_voice(tmp_path)
    assert fresh.read_bytes() == SHIPPED.read_bytes()
    assert Path(f"{fresh}.json").read_text() == Path(f"{SHIPPED}.json").read_text()


def test_names_resolve_under_the_voice_dir_and_paths_are_kept() -> None:
    assert voice_files("en_US-lessac-medium", "models/piper") == (
        Path("models/piper/en_US-lessac-medium.onnx"), Path("models/piper/en_US-lessac-medium.onnx.json"))
    assert voice_files("/x/v.onnx", "models/piper")[0] == Path("/x/v.onnx")


def test_tiny_voice_speaks_through_piper_tts(voice_dir: Path) -> None:
    engine = PiperEngine(make_piper.TINY_VOICE, voice_dir, chunk_ms=20)
    assert engine.sample_rate == 16000
    chunks = list(engine.stream(TEXT))
    assert all(len(c) == 640 for c in chunks[:-1])  # 20 ms of PCM16 at 16 kHz
    one = seconds(chunks, 16000)
    # The graph makes 40 ms per phoneme id, and piper puts a pad after every phoneme:
    # about 25 ids per second of speech, so ~2-4 s for these seven words.
    assert 1.5 < one < 5
    assert seconds(list(engine.stream(TEXT + " " + TEXT)), 16000) == pytest.approx(2 * one, rel=0.05)
    fast = seconds(list(engine.stream(TEXT, VoiceSettings(make_piper.TINY_VOICE, 2.0))), 16000)
    assert fast == pytest.approx(one / 2, rel=0.05)  # speed 2 -> length_scale / 2
    assert b"".join(engine.stream(TEXT)) == b"".join(chunks)
    assert b"".join(engine.stream("Something else entirely.")) != b"".join(chunks)


def test_voices_at_other_rates_are_resampled_to_the_engine_rate(voice_dir: Path) -> None:
    engine = PiperEngine(make_piper.TINY_VOICE, voice_dir)
    native = seconds(list(PiperEngine("tiny-22k", voice_dir).stream(TEXT)), 22050)
    resampled = seconds(list(engine.stream(TEXT, VoiceSettings("tiny-22k"))), engine.sample_rate)
    assert resampled == pytest.approx(native, abs=0.01)
    up = PiperEngine(make_piper.TINY_VOICE, voice_dir, sample_rate=24000)
    assert seconds(list(up.stream(TEXT)), 24000) == pytest.approx(seconds(list(engine.stream(TEXT)), 16000), abs=0.01)


def test_missing_voice_names_the_file_the_key_and_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        PiperEngine("en_US-lessac-medium", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "en_US-lessac-medium.onnx") in message
    assert "tts.voice" in message and "python run.py models download piper-en_US-lessac-medium" in message
    (tmp_path / "v.onnx").write_bytes(SHIPPED.read_bytes())  # config JSON missing
    with pytest.raises(EngineError, match=r"v\.onnx\.json not found"):
        PiperEngine(str(tmp_path / "v.onnx"))


def test_a_corrupt_voice_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    shutil.copy(f"{SHIPPED}.json", tmp_path / "bad.onnx.json")
    with pytest.raises(EngineError, match=r"could not be loaded.*models download piper-bad"):
        PiperEngine("bad", tmp_path)


def test_stop_ends_a_stream_within_one_chunk(voice_dir: Path) -> None:
    engine = PiperEngine(make_piper.TINY_VOICE, voice_dir)
    it = engine.stream(TEXT * 3)
    next(it)
    engine.stop()
    assert list(it) == []


def test_pool_of_piper_engines_shares_loaded_voices_and_keeps_sessions_apart(voice_dir: Path) -> None:
    voices = PiperVoices(voice_dir)
    pool = TTSPool(lambda: PiperEngine(make_piper.TINY_VOICE, voice_dir, voices=voices), workers=2)
    texts = {"a": "Alice speaks first.", "b": "Bob answers with a longer sentence than Alice."}
    solo = {sid: b"".join(PiperEngine(make_piper.TINY_VOICE, voice_dir).stream(t)) for sid, t in texts.items()}
    got: dict[str, bytes] = {}

    def run(sid: str) -> None:
        got[sid] = b"".join(pool.synthesize(sid, texts[sid], VoiceSettings(make_piper.TINY_VOICE), first_in_reply=True))

    threads = [threading.Thread(target=run, args=(sid,)) for sid in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == solo
    assert len(voices._loaded) == 1  # one ONNX session for both workers
    assert pool.close()


def test_a_voices_threads_sleep_between_operators_instead_of_spinning(voice_dir: Path) -> None:
    """Synthesis runs beside the language model on the same cores: spinning threads would take them."""
    voice = PiperVoices(voice_dir).get(make_piper.TINY_VOICE)
    assert voice.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
