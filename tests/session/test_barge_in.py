"""Barge-in: the user talks over the assistant."""

import pytest
from support.engines import scripted_engines
from support.helpers import SENTENCES, EventCollector, Feeder, count, utterance

from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
    FinalTranscript,
    FlushPlayback,
    ReplyDone,
    TurnMetrics,
)
from voicechat.core.sentences import SentenceSplitter
from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.engines.scripted.tts import ScriptedTTS


def sentence_word_counts(text: str) -> list[int]:
    s = SentenceSplitter()
    return [len(p.split()) for p in s.feed(text) + s.flush()]


@pytest.mark.timeout(90)
def test_barge_in_flushes_aborts_and_keeps_only_what_was_played(make_manager):
    # A slow model (20 tokens/s, 80 words) keeps the first reply going while
    # the user speaks again.
    llm = ScriptedLLM(token_s=0.05, reply_words=80)
    tts = ScriptedTTS(sample_rate=16000, chunk_s=0.01)
    manager = make_manager(scripted_engines(llm=llm, tts=tts), playback_reports=True)
    session = manager.create("test")
    pipeline = session.pipeline
    collector = EventCollector(pipeline)

    played: dict[int, int] = {}

    def player(event) -> None:
        # This "player" plays each chunk as soon as it arrives and says so.
        if isinstance(event, AudioChunk):
            played[event.generation] = event.start_sample + event.samples
            pipeline.report_playback(event.generation, played[event.generation])
        elif isinstance(event, ReplyDone):
            pipeline.report_playback(event.generation, event.total_samples, finished=True)

    collector.on_event = player
    feeder = Feeder(pipeline)
    first, second = SENTENCES[0], SENTENCES[2]
    feeder.play(utterance(first, after_s=0.8))
    collector.wait_for(count(AudioChunk), timeout=30)

    feeder.play(utterance(second))  # barge-in: speech onset during the reply
    events = collector.wait_for(
        lambda ev: any(isinstance(e, ReplyDone) and scripted_reply(second, 80).startswith(e.text[:30]) for e in ev),
        timeout=60,
    )

    flush_at = next(i for i, e in enumerate(events) if isinstance(e, FlushPlayback))
    flush = events[flush_at]
    old_gen = next(e for e in events if isinstance(e, AudioChunk)).generation
    assert flush.generation > old_gen
    stale_after_flush = [e for e in events[flush_at:] if isinstance(e, AudioChunk) and e.generation < flush.generation]
    assert stale_after_flush == []

    assert session.id in llm.abort_calls
    assert session.id in tts.abort_calls

    # The first reply was cut short: nothing after the flush finished it.
    assert not any(isinstance(e, ReplyDone) and e.generation == old_gen for e in events)
    # What its listener waited for it is reported all the same, once, marked as cut, just before the flush.
    cut = [(i, e) for i, e in enumerate(events) if isinstance(e, TurnMetrics) and e.generation == old_gen]
    assert len(cut) == 1 and cut[0][0] == flush_at - 1 and cut[0][1].interrupted
    assert "first_audio" in cut[0][1].stamps and "voice_end" in cut[0][1].stamps
    second_metrics = collector.wait_for(lambda ev: any(isinstance(e, TurnMetrics) and e.generation == flush.generation
                                                        for e in ev), timeout=30)
    assert not next(e for e in second_metrics if isinstance(e, TurnMetrics)
                    and e.generation == flush.generation).interrupted
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == [first, second]

    history = [(m.role, m.content) for m in pipeline.history.messages()[1:]]
    assert [role for role, _ in history] == ["user", "assistant", "user", "assistant"]
    assert history[0][1] == first and history[2][1] == second
    heard = history[1][1].split()
    full = scripted_reply(first, 80).split()
    assert 0 < len(heard) < len(full)
    assert heard == full[: len(heard)]
    # Never more than the sentences that had audio played before the flush.
    old_chunks = [e for e in events[:flush_at] if isinstance(e, AudioChunk) and e.generation == old_gen]
    last_sentence = max(c.sentence_index for c in old_chunks)
    assert len(heard) <= sum(sentence_word_counts(" ".join(full))[: last_sentence + 1])
    assert history[3][1] == scripted_reply(second, 80)


@pytest.mark.timeout(60)
def test_half_duplex_does_not_interrupt(make_manager):
    llm = ScriptedLLM(token_s=0.03, reply_words=40)
    manager = make_manager(scripted_engines(llm=llm), barge_in=False)
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    feeder = Feeder(session.pipeline)
    feeder.play(utterance(SENTENCES[0], after_s=0.8))
    collector.wait_for(count(AudioChunk), timeout=30)
    feeder.play(utterance(SENTENCES[3]))
    events = collector.wait_for(count(ReplyDone), timeout=30)
    assert not any(isinstance(e, FlushPlayback) for e in events)
    assert llm.abort_calls == []
    done = next(e for e in events if isinstance(e, ReplyDone))
    assert done.text == scripted_reply(SENTENCES[0], 40)


@pytest.mark.timeout(60)
def test_typed_input_during_a_reply_is_one_turn_with_its_reply(make_manager):
    """The interrupting text's echo carries its reply's generation (the flush's), and follows the flush."""
    manager = make_manager(scripted_engines(llm=ScriptedLLM(token_s=0.05, reply_words=80)))
    pipeline = manager.create("test").pipeline
    collector = EventCollector(pipeline)
    pipeline.send_text("tell me a long story")
    collector.wait_for(count(AssistantTextDelta))
    pipeline.send_text("stop")
    events = collector.wait_for(lambda ev: any(isinstance(e, ReplyDone) and e.generation == 2 for e in ev), 30)

    finals = [(i, e) for i, e in enumerate(events) if isinstance(e, FinalTranscript)]
    assert [(e.text, e.generation) for _i, e in finals] == [("tell me a long story", 1), ("stop", 2)]
    flush_at, flush = next((i, e) for i, e in enumerate(events) if isinstance(e, FlushPlayback))
    assert flush.generation == 2 and flush_at < finals[1][0]
    assert {e.generation for e in events[finals[1][0]:] if isinstance(e, (AssistantTextDelta, ReplyDone))} == {2}
