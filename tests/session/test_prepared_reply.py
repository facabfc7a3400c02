"""A reply prepared inside the user's pause: held until the turn ends, dropped without a trace if they go on."""

import queue

import pytest
from support.helpers import EventCollector, count

from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
    EndOfTurn,
    ErrorEvent,
    FinalTranscript,
    ReplyDone,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.engines.protocols import Engines, RecognizerCallbacks
from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.engines.scripted.stt import ScriptedTranscriber
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.session.pipeline import PipelineOptions, SpeechPipelineManager
from voicechat.stt.partial_stabilizer import PartialStabilizer


class ManualRecognizer:
    """The test plays the recognizer: it calls the pipeline's callbacks and hands out finals."""

    def __init__(self, session_id: str, callbacks: RecognizerCallbacks) -> None:
        self.cb = callbacks
        self.finals: queue.Queue[str | None] = queue.Queue()

    def feed(self, pcm16: bytes) -> None:
        pass

    def next_final(self) -> str | None:
        return self.finals.get()

    def close(self) -> None:
        self.finals.put(None)


def manual_session(**options):
    """A started pipeline whose recognizer the test plays; yields (pipeline, recognizer, collector, llm)."""
    recognizers: list[ManualRecognizer] = []

    def factory(session_id, callbacks):
        recognizers.append(ManualRecognizer(session_id, callbacks))
        return recognizers[-1]

    llm = ScriptedLLM(reply_words=12)
    engines = Engines(ScriptedTranscriber({}), factory, llm, ScriptedTTS(sample_rate=16000, chunk_s=0.05))
    pipeline = SpeechPipelineManager("s1", engines, PipelineOptions(output_sample_rate=16000, **options))
    pipeline.start()
    collector = EventCollector(pipeline)
    yield pipeline, recognizers[0], collector, llm
    pipeline.stop()
    engines.close()


@pytest.fixture
def session():
    yield from manual_session()


@pytest.fixture
def reading_session():
    yield from manual_session(prefill_while_speaking=True)


def prepare(rec: ManualRecognizer, collector: EventCollector, llm: ScriptedLLM, text: str) -> None:
    """The user speaks, pauses, and the words so far are transcribed: wait until the LLM is asked."""
    rec.cb.on_speech_start()
    rec.cb.on_transcript_early(text, None)
    with collector._cond:
        assert collector._cond.wait_for(lambda: llm.prompts.get("s1"), 10)


def reply_events(events):
    return [e for e in events if isinstance(e, AssistantTextDelta | AudioChunk | ReplyDone | TurnMetrics)]


@pytest.mark.timeout(30)
def test_a_confirmed_reply_was_made_before_the_turn_ended_and_went_out_after_it(session):
    pipeline, rec, collector, llm = session
    prepare(rec, collector, llm, "What time is it?")  # the reply is made while the user is silent...
    assert reply_events(collector.events) == []  # ...but nothing of it reaches the client
    assert pipeline.state is TurnState.USER_SPEAKING
    assert len(pipeline.history.messages()) == 1  # the system prompt only
    rec.cb.on_speech_end(None, EndOfTurn(231.5, audio=None, words=0.9))
    rec.finals.put("What time is it?")
    events = collector.wait_for(count(TurnMetrics))
    final_at = next(i for i, e in enumerate(events) if isinstance(e, FinalTranscript))
    first_reply_at = next(i for i, e in enumerate(events) if isinstance(e, AssistantTextDelta))
    assert final_at < first_reply_at
    speaking = next(i for i, e in enumerate(events) if isinstance(e, StateChanged)
                    and e.state is TurnState.ASSISTANT_SPEAKING)
    assert speaking < next(i for i, e in enumerate(events) if isinstance(e, AudioChunk))
    done = next(e for e in events if isinstance(e, ReplyDone))
    assert done.generation == 1 and done.text == scripted_reply("What time is it?", 12)
    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    assert metrics.prepared and metrics.stamps["prepared"] <= metrics.stamps["speech_end"]
    assert metrics.end_of_turn == EndOfTurn(231.5, audio=None, words=0.9)  # how the recognizer decided
    assert len(llm.prompts["s1"]) == 1  # the prepared reply was used, not made again
    collector.wait_for(lambda ev: [m.role for m in pipeline.history.messages()] == ["system", "user", "assistant"])


@pytest.mark.timeout(30)
def test_speech_after_the_pause_drops_the_prepared_reply_without_a_trace(session):
    pipeline, rec, collector, llm = session
    prepare(rec, collector, llm, "I would like to")
    rec.cb.on_speech_resumed()
    assert "s1" in llm.discard_calls
    rec.cb.on_speech_end(None, EndOfTurn(1500.0, audio=0.2, words=0.05))
    rec.finals.put("I would like to order a pizza.")
    events = collector.wait_for(count(ReplyDone))
    texts = [e.text for e in events if isinstance(e, ReplyDone)]
    assert texts == [scripted_reply("I would like to order a pizza.", 12)]
    deltas = "".join(e.text for e in events if isinstance(e, AssistantTextDelta))
    assert deltas == texts[0]  # not one word of the dropped reply
    assert {e.generation for e in reply_events(events)} == {1}
    second_prompt = llm.prompts["s1"][1]
    assert [m.content for m in second_prompt if m.role == "user"] == ["I would like to order a pizza."]
    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    assert not metrics.prepared and metrics.end_of_turn == EndOfTurn(1500.0, audio=0.2, words=0.05)


@pytest.mark.timeout(30)
def test_a_different_final_replaces_the_prepared_reply(session):
    pipeline, rec, collector, llm = session
    prepare(rec, collector, llm, "Tell me")
    rec.cb.on_speech_end(None)
    rec.finals.put("Tell me a joke.")
    events = collector.wait_for(count(ReplyDone))
    assert [e.text for e in events if isinstance(e, ReplyDone)] == [scripted_reply("Tell me a joke.", 12)]
    assert "s1" in llm.discard_calls
    collector.wait_for(lambda ev: [m.content for m in pipeline.history.messages() if m.role == "user"]
                       == ["Tell me a joke."])


@pytest.mark.timeout(30)
def test_an_error_of_the_turn_is_not_held_with_the_prepared_reply(session):
    pipeline, rec, collector, llm = session
    prepare(rec, collector, llm, "Tell me")
    pipeline.report_error("stt", RuntimeError("the recognizer failed"))
    events = collector.wait_for(count(ErrorEvent))
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.stage == "stt" and error.generation == 1
    assert reply_events(events) == []  # the prepared reply itself stays held


def test_a_started_session_has_the_model_warm_its_system_prompt(session):
    pipeline, rec, collector, llm = session
    assert llm.warm_calls == ["s1"]  # in start(): before any turn (the engine decides whether it can)


@pytest.mark.timeout(30)
def test_the_model_reads_the_words_the_partials_agree_on_while_the_user_speaks(reading_session):
    pipeline, rec, collector, llm = reading_session
    rec.cb.on_speech_start()
    hypotheses = ("What is", "What is the", "What is the capital of", "What is the capital of",
                  "What is the capital of")
    stabilizer, agreed = PartialStabilizer(), []
    for hypothesis in hypotheses:
        rec.cb.on_partial(hypothesis)
        stable = stabilizer.update(hypothesis).stable
        if stable and stable not in agreed:
            agreed.append(stable)
    read = [messages for session, messages in llm.warmed if session == "s1"][1:]  # [0]: start()'s system prompt
    # Each time the agreed words grew, once: the history and the user's words so far.
    assert len(agreed) >= 3  # (the stabilizer keeps the last word back)
    assert [m[-1].content for m in read] == agreed
    assert all(m[-1].role == "user" and m[:-1] == pipeline.history.messages() for m in read)

    prepare(rec, collector, llm, "What is the capital of France?")  # a reply is live now (prepared)...
    rec.cb.on_partial("What is the capital of France")
    rec.cb.on_partial("What is the capital of France")
    assert len([s for s, _ in llm.warmed if s == "s1"]) == 1 + len(agreed)  # ...so nothing more is read ahead


def test_the_same_words_in_a_new_utterance_are_read_again(reading_session):
    pipeline, rec, collector, llm = reading_session
    for _ in range(2):  # e.g. the user said "Yes please" twice; the KV of the first may be gone
        rec.cb.on_speech_start()
        for hypothesis in ("Yes please do", "Yes please do"):
            rec.cb.on_partial(hypothesis)
    read = [m[-1].content for s, m in llm.warmed if s == "s1"][1:]
    assert len(read) == 2 and read[0] == read[1]


def test_without_prefill_while_speaking_partials_only_reach_the_client(session):
    pipeline, rec, collector, llm = session
    rec.cb.on_speech_start()
    for hypothesis in ("What is", "What is the", "What is the"):
        rec.cb.on_partial(hypothesis)
    assert llm.warm_calls == ["s1"]  # start()'s only


@pytest.mark.timeout(30)
def test_a_reply_prepared_after_an_unanswered_question_asks_what_the_history_will_hold(session):
    """The words join the unanswered question as one message on confirm; the prepared prompt said so already,
    so the next turn's prompt continues the one the model's KV was computed for."""
    pipeline, rec, collector, llm = session
    pipeline.history.add_user("What time is it?")  # its reply was cut before a word of it was heard
    prepare(rec, collector, llm, "And the date?")
    prepared = [(m.role, m.content) for m in llm.prompts["s1"][0]]
    assert prepared[1:] == [("user", "What time is it? And the date?")]
    rec.cb.on_speech_end(None, EndOfTurn(240.0, audio=None, words=0.9))
    rec.finals.put("And the date?")
    collector.wait_for(count(ReplyDone))
    assert len(llm.prompts["s1"]) == 1  # the prepared reply was used
    assert [(m.role, m.content) for m in pipeline.history.messages()][:2] == prepared
