"""End of turn with the real models, through a session: Silero, Whisper tiny.en, and SmolLM2's own
probability that the user's message ends there, read from the prefill of the reply prepared in the pause.

Speech streams in at real time, as from a microphone, because the decision depends on when the
signals arrive against the audio. A finished question ends the turn well before the longest pause a
turn may hold (``vad.max_silence_s``), with its reply prepared inside the silence; a sentence with a
pause cut into its middle (the evidence set's way: a whole sentence synthesized, then silence inserted
between two words) is one turn, and the reply prepared in the pause is dropped: none of it reaches the
client, the history, or the next prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.helpers import EventCollector, Feeder, count

from voicechat.bench.turn_evidence import NOISE_RMS, paused, synthesize
from voicechat.core.events import AssistantTextDelta, FinalTranscript, ReplyDone, TurnMetrics
from voicechat.models.store import PROJECT_ROOT

pytestmark = pytest.mark.slow


def room(audio: np.ndarray, after_s: float) -> np.ndarray:
    rng = np.random.default_rng(5)
    out = np.concatenate([np.zeros(8000, np.int16), audio, np.zeros(round(after_s * 16000), np.int16)])
    noisy = out.astype(np.float32) + rng.normal(0, NOISE_RMS, out.size)
    return np.clip(noisy, -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    texts = ["How many legs does a spider have?", "I would like to order a large pizza with mushrooms."]
    question, sentence = synthesize(texts, "joe", PROJECT_ROOT / "models" / "piper")
    with_pause, _, _ = paused(sentence, "I would like to order a | large pizza with mushrooms.", 0.9)
    return {"question": question, "paused": with_pause}


def one_turn(make_real_manager, settings, audio: np.ndarray):
    manager = make_real_manager()
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    Feeder(session.pipeline).play(room(audio, after_s=settings.vad.max_silence_s + 0.3))
    events = collector.wait_for(count(TurnMetrics), timeout=60)
    return session, events


@pytest.mark.timeout(150)
def test_a_finished_question_ends_the_turn_well_before_the_longest_pause(make_real_manager, settings, speech):
    _, events = one_turn(make_real_manager, settings, speech["question"])
    finals = [e.text for e in events if isinstance(e, FinalTranscript)]
    assert len(finals) == 1 and "spider" in finals[0].lower(), finals
    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    waited = metrics.stamps["speech_end"] - metrics.stamps["voice_end"]
    assert waited < settings.vad.max_silence_s - 0.3, f"the turn ended {waited:.2f} s after the last voiced sample"
    assert metrics.prepared  # the reply was made inside the silence


@pytest.mark.timeout(150)
def test_a_pause_in_the_middle_of_a_sentence_does_not_end_the_turn(make_real_manager, settings, speech):
    session, events = one_turn(make_real_manager, settings, speech["paused"])
    finals = [e.text for e in events if isinstance(e, FinalTranscript)]
    assert len(finals) == 1 and "mushrooms" in finals[0].lower() and "order" in finals[0].lower(), finals
    final_at = next(i for i, e in enumerate(events) if isinstance(e, FinalTranscript))
    assert not any(isinstance(e, AssistantTextDelta | ReplyDone) for e in events[:final_at])
    done = next(e for e in events if isinstance(e, ReplyDone))
    deltas = "".join(e.text for e in events if isinstance(e, AssistantTextDelta))
    assert deltas.strip() == done.text.strip()  # one reply's text, nothing of a dropped one
    users = [m.content for m in session.pipeline.history.turns if m.role == "user"]
    assert users == [finals[0]]
