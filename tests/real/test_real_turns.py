"""End of turn with the real models (Smart Turn v3.2, Whisper tiny.en, Silero), through the product's recognizer.

Speech streams in at real time, as from a microphone, because the decision depends on when the
signals arrive against the audio. A finished question ends the turn well before the longest pause
a turn may hold (``vad.max_silence_s``); a sentence with a pause cut into its middle (the evidence
set's way: a whole sentence synthesized, then silence inserted between two words) is one turn, and
what was transcribed and judged in the pause is dropped when the speech goes on.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support.real import starter_settings

from voicechat.assembly import recognizer_factory
from voicechat.bench.turn_evidence import NOISE_RMS, paused, synthesize
from voicechat.engines.protocols import Engines, RecognizerCallbacks
from voicechat.models.store import PROJECT_ROOT

pytestmark = pytest.mark.slow

FRAME = 320  # 20 ms at 16 kHz


class Recorder:
    """The recognizer's callbacks, each with the monotonic time it came."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, float]] = []
        self.cond = threading.Condition()

    def add(self, kind: str, value: object = None) -> None:
        with self.cond:
            self.events.append((kind, value, time.monotonic()))
            self.cond.notify_all()

    def callbacks(self) -> RecognizerCallbacks:
        return RecognizerCallbacks(
            on_speech_start=lambda: self.add("start"),
            on_speech_end=lambda voice_end: self.add("end", voice_end),
            on_transcript_early=lambda text: self.add("early", text),
            on_speech_resumed=lambda: self.add("resumed"),
        )

    def kinds(self) -> list[str]:
        with self.cond:
            return [k for k, _, _ in self.events]


def room(audio: np.ndarray, after_s: float) -> np.ndarray:
    rng = np.random.default_rng(5)
    out = np.concatenate([np.zeros(8000, np.int16), audio, np.zeros(round(after_s * 16000), np.int16)])
    noisy = out.astype(np.float32) + rng.normal(0, NOISE_RMS, out.size)
    return np.clip(noisy, -32768, 32767).astype(np.int16)


def stream(recognizer, audio: np.ndarray) -> None:
    """Feed ``audio`` in 20 ms frames at real time."""
    start = time.monotonic()
    for i in range(0, audio.size, FRAME):
        delay = start + i / 16000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing a simulated microphone, not waiting for a result
        recognizer.feed(audio[i : i + FRAME].tobytes())


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    texts = ["How many legs does a spider have?", "I would like to order a large pizza with mushrooms."]
    question, sentence = synthesize(texts, "joe", PROJECT_ROOT / "models" / "piper")
    with_pause, _, _ = paused(sentence, "I would like to order a | large pizza with mushrooms.", 0.9)
    return {"question": question, "paused": with_pause}


@pytest.fixture
def listen(engines: Engines):
    settings = starter_settings(**{"stt.partials": "false"})
    factory = recognizer_factory(settings, engines.transcriber)
    made = []

    def run(audio: np.ndarray, after_s: float) -> tuple[Recorder, str | None]:
        recorder = Recorder()
        recognizer = factory(f"turns-{len(made)}", recorder.callbacks())
        made.append(recognizer)
        finals: list[str | None] = []
        worker = threading.Thread(target=lambda: finals.append(recognizer.next_final()), name="test-final")
        worker.start()
        stream(recognizer, room(audio, after_s))
        worker.join(30)
        return recorder, finals[0] if finals else None

    yield run, settings
    for recognizer in made:
        recognizer.close()
    factory.close()


@pytest.mark.timeout(120)
def test_a_finished_question_ends_the_turn_well_before_the_longest_pause(listen, speech):
    run, settings = listen
    recorder, final = run(speech["question"], after_s=settings.vad.max_silence_s + 0.5)
    assert final is not None and "spider" in final.lower()
    kinds = recorder.kinds()
    assert kinds.count("end") == 1 and "resumed" not in kinds, kinds
    (_, voice_end, decided), = [e for e in recorder.events if e[0] == "end"]
    waited = decided - voice_end
    assert waited < settings.vad.max_silence_s - 0.3, f"the turn ended {waited:.2f} s after the last voiced sample"
    early = [v for k, v, _ in recorder.events if k == "early"]
    assert early and early[-1] == final  # transcribed inside the silence, and used as the final


@pytest.mark.timeout(120)
def test_a_pause_in_the_middle_of_a_sentence_does_not_end_the_turn(listen, speech):
    run, settings = listen
    recorder, final = run(speech["paused"], after_s=settings.vad.max_silence_s + 0.5)
    kinds = recorder.kinds()
    assert kinds.count("start") == 1 and kinds.count("end") == 1, kinds
    assert "early" in kinds and "resumed" in kinds  # judged in the pause, dropped when the speech went on
    assert kinds.index("resumed") < kinds.index("end")
    assert final is not None and "mushrooms" in final.lower() and "order" in final.lower()
