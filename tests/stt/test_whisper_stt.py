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
from voicechat.stt.whisper_model import FasterWhisperModel


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


def test_short_windows_keep_batched_and_one_by_one_texts_equal() -> None:
    model = FasterWhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="float32", window="utterance")
    long = SpeechInput("long", np.concatenate([inputs(SENTENCES[:1])[0].audio, np.zeros(16000 * 8, np.float32)]),
                       True, "en")  # over 8 s: a window of its own
    batch = [*inputs(SENTENCES[:3]), long]
    together = model.transcribe_batch(batch)
    assert together == [model.transcribe_batch([item])[0] for item in batch]


def test_the_encoder_window_is_whole_buckets_of_the_utterance_and_loops_are_cut() -> None:
    from voicechat.stt.whisper_window import trim_repetition, window_frames

    assert [window_frames(n, "utterance") for n in (120, 800, 801, 2900, 4000)] == [800, 800, 1600, 3000, 3000]
    assert window_frames(120, "full") == 3000
    assert trim_repetition([5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5]) == [5, 6, 7, 8, 9]  # the text starts again
    assert trim_repetition([5, 6, 7, 1, 2, 1, 2, 1, 2]) == [5, 6, 7, 1, 2]  # its end loops
    assert trim_repetition([5, 6, 7, 5, 6, 8, 8]) == [5, 6, 7, 5, 6, 8, 8]  # no repetition to cut


def test_a_window_is_padded_with_the_log_mel_of_silence_as_whisper_pads_its_own() -> None:
    """Whisper computes its log-mel over the audio followed by zeros: the frames after the speech sit at the
    floor, 8 log10 units (2 normalised) under the loudest bin. ``fit_window`` pads the utterance's own
    features to the same values (faster-whisper's zero padding reads as faint sound)."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from voicechat.stt.whisper_window import fit_window

    extract = FeatureExtractor(feature_size=80)
    audio = speech(SENTENCES[0]).astype(np.float32) / 32768
    own = extract(audio)[..., :-1]
    whisper = extract(np.pad(audio, (0, 16000 * 6)))[..., :-1][..., :800]  # as Whisper pads: zeros, then log-mel
    padded = fit_window(own, 800)
    assert padded.shape == (80, 800) and own.shape[-1] < 800
    tail = own.shape[-1] + 2  # the frames that straddle the end of the audio see part of it
    assert np.allclose(padded[:, tail:], whisper[:, tail:], atol=1e-5)
    assert np.allclose(padded[:, tail:], own.max() - 2.0)
    assert np.array_equal(fit_window(own, 100), own[:, :100])  # a longer utterance is cut, not padded


def test_decoding_stops_at_a_token_budget_that_follows_the_longest_audio() -> None:
    from voicechat.stt.whisper_model import token_budget

    model = FasterWhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="float32", cpu_threads=1)
    ct2 = model.model.model  # (one thread: the model decodes too, no second copy)
    asked: list[int] = []

    class Recording:  # the CTranslate2 model, with generate's max_length noted
        def __getattr__(self, name: str) -> object:
            return getattr(ct2, name)

        def generate(self, *args: object, **kwargs: object) -> object:
            asked.append(int(kwargs["max_length"]))  # type: ignore[call-overload]
            return ct2.generate(*args, **kwargs)

    model.model.model = Recording()
    short, long = np.zeros(16000, np.float32), np.zeros(16000 * 4, np.float32)
    model.transcribe_batch([SpeechInput("a", short + 0.01, True, "en"), SpeechInput("b", long + 0.01, True, "en")])
    prompt = len(model.model.get_prompt(model._tokenizer("en"), [], without_timestamps=True))
    assert asked == [prompt + token_budget(4.0)]
    assert token_budget(1.0) < token_budget(4.0) < 448  # a loop never runs to Whisper's own limit


def test_partials_decode_greedily_and_silence_gives_no_words(whisper) -> None:
    item = inputs(SENTENCES[:1], final=False)
    assert whisper.transcribe_batch(item) == whisper.transcribe_batch(item)  # deterministic
    empty = SpeechInput("s", np.zeros(0, np.float32), True, "en")
    assert whisper.transcribe_batch([empty]) == [""]


def test_finals_decode_greedily_on_a_cpu_unless_a_beam_size_is_set(whisper) -> None:
    """stt.beam_size = 0 (the default): beams on a GPU only, where they cost little."""
    from voicechat.stt.whisper_model import automatic_beam_size

    automatic = FasterWhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="float32")
    assert automatic.beam_size == 1 and whisper.beam_size == 2  # set: kept
    assert automatic_beam_size("cuda") == 5 and automatic_beam_size("cpu") == 1


def test_the_decoder_runs_on_its_own_threads_on_a_cpu_and_says_the_same() -> None:
    """stt.decode_threads = 0: one thread for the token-by-token decoder on a CPU (a second copy of a
    small model), the encoder's threads elsewhere; the copy decodes the model's own encoding."""
    from voicechat.stt.whisper_model import automatic_decode_threads

    assert automatic_decode_threads(0, "cpu", 2, 75 << 20) == 1
    assert automatic_decode_threads(0, "cpu", 4, 1500 << 20) == 4  # large: no second copy
    assert automatic_decode_threads(0, "cuda", 4, 75 << 20) == 4
    assert automatic_decode_threads(3, "cpu", 2, 75 << 20) == 3  # set: kept
    split = FasterWhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="float32", cpu_threads=2,
                               window="utterance")
    one = FasterWhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="float32", cpu_threads=1,
                             window="utterance")
    assert split.decode_threads == 1 and one.decode_threads is None
    batch = inputs(SENTENCES[:4])
    assert split.transcribe_batch(batch) == one.transcribe_batch(batch)


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
