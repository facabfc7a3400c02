"""Real faster-whisper (the tiny random model) behind the shared STT scheduler."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from support.helpers import SENTENCES, EventCollector, Feeder, count, speech, utterance

from voicechat.core.events import PartialTranscript
from voicechat.engines.protocols import EngineError, Engines, RecognizerCallbacks, SpeechInput
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.models.tiny import tiny_whisper_path
from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer
from voicechat.stt.scheduler import SttScheduler
from voicechat.stt.whisper_model import FasterWhisperModel, compute_type_for


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperModel:
    return FasterWhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="float32", beam_size=2)


def inputs(texts: Sequence[str], final: bool = True) -> list[SpeechInput]:
    return [SpeechInput(f"s{i}", speech(t).astype(np.float32) / 32768, final, "en") for i, t in enumerate(texts)]


def test_batched_finals_give_the_same_texts_as_one_by_one(whisper) -> None:
    batch = inputs(SENTENCES[:6])
    together = whisper.transcribe_batch(batch)
    alone = [whisper.transcribe_batch([item])[0] for item in batch]
    assert together == alone
    assert len(set(together)) > 1, "different audio should not all decode to the same text"


def test_partials_decode_greedily_and_silence_gives_no_words(whisper) -> None:
    item = inputs(SENTENCES[:1], final=False)
    assert whisper.transcribe_batch(item) == whisper.transcribe_batch(item)  # deterministic
    empty = SpeechInput("s", np.zeros(0, np.float32), True, "en")
    assert whisper.transcribe_batch([empty]) == [""]


def test_audio_longer_than_one_window_still_transcribes(whisper) -> None:
    long = np.tile(speech(SENTENCES[0]).astype(np.float32) / 32768, 12)[: 31 * 16000]
    [text] = whisper.transcribe_batch([SpeechInput("s", long, True, "en")])
    assert isinstance(text, str)


def test_a_missing_model_directory_names_the_key(tmp_path) -> None:
    with pytest.raises(EngineError, match=r"stt\.model"):
        FasterWhisperModel(str(tmp_path / "nope"), device="cpu")


class Recording:
    """Wraps the model to record which session's audio produced which final text."""

    def __init__(self, model: FasterWhisperModel, sessions: int) -> None:
        self.model = model
        self.finals: dict[str, tuple[np.ndarray, str]] = {}
        self.all_in = threading.Event()
        self._sessions = sessions
        self._lock = threading.Lock()

    def transcribe_batch(self, batch: Sequence[SpeechInput]) -> list[str]:
        texts = self.model.transcribe_batch(batch)
        with self._lock:
            for item, text in zip(batch, texts, strict=True):
                if item.final:
                    self.finals[item.session_id] = (item.audio, text)
            if len(self.finals) >= self._sessions:
                self.all_in.set()
        return texts


def test_four_concurrent_sessions_transcribe_through_the_scheduler(whisper, make_manager) -> None:
    model = Recording(whisper, sessions=4)
    stt = SttScheduler(model, max_batch=8)

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> RealtimeSTTRecognizer:
        return RealtimeSTTRecognizer(session_id, stt, callbacks, post_speech_silence_s=0.5)

    manager = make_manager(Engines(stt, recognizer, ScriptedLLM(), ScriptedTTS(sample_rate=16000)))
    sessions = [manager.create("test") for _ in range(4)]
    partials = {s.id: EventCollector(s.pipeline) for s in sessions}
    threads = [Feeder(s.pipeline).play_in_background(utterance(SENTENCES[i])) for i, s in enumerate(sessions)]
    for t in threads:
        t.join(60)
    assert model.all_in.wait(60), f"finals only from {sorted(model.finals)}"
    # Each session's final came from its own audio (decoding that audio alone gives the same text)
    # and every session saw interim transcripts on the way.
    for s in sessions:
        audio, text = model.finals[s.id]
        assert len(audio) > 16000
        assert whisper.transcribe_batch([SpeechInput(s.id, audio, True, "en")]) == [text]
        partials[s.id].wait_for(count(PartialTranscript), timeout=10)
    assert stt.stats.finals == 4


@pytest.mark.parametrize(("device", "asked", "cuda", "used"), [
    ("auto", "default", 0, "int8"), ("cpu", "default", 2, "int8"), ("auto", "default", 1, "default"),
    ("cuda", "default", 1, "default"), ("auto", "float32", 0, "float32"),
])
def test_default_compute_type_is_int8_on_a_cpu(device, asked, cuda, used):
    assert compute_type_for(device, asked, cuda_devices=cuda) == used
