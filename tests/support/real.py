"""Real models in the loop (tests/real): the starter set's settings, Piper-spoken speech, reply checks."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from support.helpers import speech as espeak_speech
from support.wer import normalise
from voicechat.config.loading import Settings, load_config
from voicechat.core.sentences import SentenceSplitter
from voicechat.engines.protocols import RecognizerCallbacks, RecognizerFactory
from voicechat.models.store import PROJECT_ROOT
from voicechat.speech_samples import with_silence

if TYPE_CHECKING:
    from voicechat.tts.piper_engine import PiperEngine  # imported when used: it loads onnxruntime

# The shipped config with the starter set. A fixed seed makes each reply reproducible. On a shared
# 2-core machine one Whisper pass took 0.7 s typically but up to 9.5 s (another process had the cores):
# a slow final is not a hung one here, so the recogniser gets longer than its 10 s default.
REAL_OVERRIDES = {"models.set": "starter", "stt.device": "cpu", "llm.n_gpu_layers": "0", "llm.seed": "7",
                  "stt.call_timeout_s": "60"}


def starter_settings(**overrides: str) -> Settings:
    """config.toml with the starter set, as `python3 run.py` with models.set = 'starter' runs it."""
    return load_config(PROJECT_ROOT / "config.toml", env={}, overrides={**REAL_OVERRIDES, **overrides}).settings


@lru_cache(maxsize=2)
def piper_voice(varied: bool = False) -> PiperEngine:
    """The project's Piper engine on the starter set's voice (joe), at 16 kHz."""
    from voicechat.tts.piper_engine import PiperEngine

    tts = starter_settings().tts
    return PiperEngine(tts.voice, PROJECT_ROOT / tts.piper_voice_dir, sample_rate=16000, varied=varied)


@lru_cache(maxsize=None)
def piper_speech(text: str) -> np.ndarray:
    """``text`` spoken by the starter set's Piper voice (joe) through the project's Piper engine, 16 kHz.

    Without the voice's random variation: with it, a rendition now and then turned one word into
    another for Whisper tiny.en ("moon" -> "man"), so a test passed or failed by chance.
    """
    return np.frombuffer(b"".join(piper_voice().stream(text)), np.int16)


VOICES: dict[str, Callable[[str], np.ndarray]] = {"piper": piper_speech, "espeak": espeak_speech}


def spoken(text: str, voice: str = "piper", before_s: float = 0.3, after_s: float = 1.0) -> np.ndarray:
    """An utterance as a microphone hears it: speech with silence around it."""
    return with_silence(VOICES[voice](text), before_s, after_s)


def same_words(transcript: str, text: str) -> bool:
    """The transcript says ``text`` word for word (case, punctuation and digits aside)."""
    return normalise(transcript) == normalise(text)


def sentences_of(text: str) -> list[str]:
    splitter = SentenceSplitter()
    return [s.strip() for s in splitter.feed(text) + splitter.flush() if s.strip()]


def assert_reply_does_not_loop(reply: str, max_sentences: int) -> None:
    """Non-empty, no sentence said twice, no more sentences than the reply guard lets through."""
    print(f"reply: {reply!r}")
    said = [" ".join(normalise(s)) for s in sentences_of(reply)]
    assert said and any(said), f"empty reply {reply!r}"
    repeated = sorted({s for s in said if said.count(s) > 1})
    assert not repeated, f"the reply repeats {repeated}: {reply!r}"
    assert len(said) <= max_sentences, f"{len(said)} sentences, more than {max_sentences}: {reply!r}"


def transcribe_one_by_one(factory: RecognizerFactory, name: str, utterances: Sequence[np.ndarray], *,
                          pace: float, final_timeout_s: float = 30.0) -> tuple[list[str], int]:
    """Feed each utterance to one recognizer in 20 ms frames at ``pace`` x real time, waiting for its
    final transcript before the next; returns the finals and the audio chunks the backlog evicted."""
    finals: queue.Queue[str | BaseException] = queue.Queue()
    recognizer = factory(name, RecognizerCallbacks())

    def listen() -> None:
        try:
            while (text := recognizer.next_final()) is not None:
                finals.put(text)
        except BaseException as error:  # noqa: BLE001 - handed to the feeding thread
            finals.put(error)

    listener = threading.Thread(target=listen, name=f"test-finals-{name}", daemon=True)
    listener.start()
    tick, out = threading.Event(), []
    try:
        for audio in utterances:
            for start in range(0, len(audio), 320):
                recognizer.feed(audio[start : start + 320].tobytes())
                tick.wait(0.02 / pace)
            try:
                final = finals.get(timeout=final_timeout_s)
            except queue.Empty:
                raise AssertionError(f"{name}: no final transcript within {final_timeout_s} s "
                                     f"(utterance {len(out) + 1}, finals so far {out})") from None
            if isinstance(final, BaseException):
                raise final
            out.append(final)
        return out, recognizer.backlog.evicted
    finally:
        recognizer.close()
        listener.join(10)
