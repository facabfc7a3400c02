"""A whole turn from real espeak-ng speech through real RealtimeSTT endpointing."""

import numpy as np
import pytest
from support.engines import DEFAULT_FRONTEND
from support.helpers import SENTENCES, EventCollector, Feeder, back_to_listening, count, utterance

from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
    FinalTranscript,
    PartialTranscript,
    ReplyDone,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.engines.scripted.llm import scripted_reply

STAGES = ["speech_end", "transcript_final", "llm_request", "first_token", "first_sentence", "first_audio"]


def first_index(events, kind):
    return next(i for i, e in enumerate(events) if isinstance(e, kind))


@pytest.mark.timeout(60)
def test_spoken_turn_emits_every_event_in_order(make_manager):
    manager = make_manager(output_sample_rate=24000)
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    text = SENTENCES[1]
    Feeder(session.pipeline).play(utterance(text))
    events = collector.wait_for(back_to_listening, timeout=30)

    partials = [e for e in events if isinstance(e, PartialTranscript)]
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert partials, "no partial transcripts"
    assert [f.text for f in finals] == [text]
    assert all(text.startswith(p.text.rstrip(".")) for p in partials), [p.text for p in partials]

    reply = "".join(e.text for e in events if isinstance(e, AssistantTextDelta))
    assert reply == scripted_reply(text, 24)

    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert audio and all(a.sample_rate == 24000 for a in audio)
    gen = audio[0].generation
    assert all(a.generation == gen for a in audio)
    pcm = np.frombuffer(b"".join(a.pcm for a in audio), dtype=np.int16)
    assert np.abs(pcm).max() > 1000, "reply audio is silent"
    done = next(e for e in events if isinstance(e, ReplyDone))
    assert done.total_samples == len(pcm)
    assert [a.start_sample for a in audio] == list(np.cumsum([0] + [a.samples for a in audio])[:-1])

    kinds = (PartialTranscript, FinalTranscript, AssistantTextDelta, AudioChunk, ReplyDone, TurnMetrics)
    order = [first_index(events, k) for k in kinds]
    assert order == sorted(order)

    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    stages = (["voice_end"] if DEFAULT_FRONTEND == "batched" else []) + STAGES  # the batched one dates the voice
    if metrics.prepared:  # made from the transcript of the pause that ended the turn, held until it ended
        assert set(metrics.stamps) == {*stages, "prepared"}
        made = ["voice_end", "prepared", "llm_request", "first_token", "first_sentence"]
        sent = ["voice_end", "speech_end", "transcript_final", "first_audio"]
        for order in (made, sent):
            assert [metrics.stamps[s] for s in order] == sorted(metrics.stamps[s] for s in order)
    else:
        assert list(metrics.stamps) and set(metrics.stamps) == set(stages)
        assert [metrics.stamps[s] for s in stages] == sorted(metrics.stamps[s] for s in stages)
    if "voice_end" in stages:  # the turn ends the configured silence (0.5 s) after the last voiced sample
        assert 0.45 <= metrics.stamps["speech_end"] - metrics.stamps["voice_end"] < 1.0

    states = [(e.state, e.generation) for e in events if isinstance(e, StateChanged)]
    assert states == [(TurnState.USER_SPEAKING, 1), (TurnState.THINKING, 1), (TurnState.ASSISTANT_SPEAKING, 1),
                      (TurnState.LISTENING, 2)], "the user's events and the reply are turn 1; listening starts turn 2"
    assert {e.generation for e in events if isinstance(e, kinds)} == {1}

    history = [(m.role, m.content) for m in session.pipeline.history.messages()[1:]]
    assert history == [("user", text), ("assistant", reply)]


@pytest.mark.timeout(30)
def test_typed_input_gets_a_spoken_reply(make_manager):
    manager = make_manager()
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.send_text("hello from the keyboard")
    events = collector.wait_for(back_to_listening)
    reply = "".join(e.text for e in events if isinstance(e, AssistantTextDelta))
    assert reply == scripted_reply("hello from the keyboard", 24)
    assert any(isinstance(e, AudioChunk) for e in events)
    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    assert "speech_end" not in metrics.stamps and "first_audio" in metrics.stamps


@pytest.mark.timeout(60)
def test_capture_at_44_1_khz_is_resampled_for_the_recognizer(make_manager):
    """Browsers and sound cards often run at 44.1 kHz; the capture stage resamples."""
    import soxr

    manager = make_manager()
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    text = SENTENCES[6]
    audio_44k = soxr.resample(utterance(text), 16000, 44100).astype(np.int16)
    Feeder(session.pipeline, rate=44100).play(audio_44k)
    events = collector.wait_for(count(FinalTranscript), timeout=30)
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == [text]
