"""The TUI's view model: session events folded into conversation lines, state and latency figures."""

from __future__ import annotations

import pytest

from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
    ErrorEvent,
    FinalTranscript,
    FlushPlayback,
    PartialTranscript,
    ReplyDone,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.local.tui.model import TuiModel


def metrics(generation: int, stt: float, llm: float, sentence: float, tts: float, spoken: bool = True) -> TurnMetrics:
    """A TurnMetrics whose stage latencies (in ms) are the given ones."""
    stamps: dict[str, float] = {}
    t = 10.0
    if spoken:
        stamps["speech_end"] = t
    t += stt / 1000
    stamps["transcript_final"] = t
    t += llm / 1000
    stamps["first_token"] = t
    t += sentence / 1000
    stamps["first_sentence"] = t
    t += tts / 1000
    stamps["first_audio"] = t
    return TurnMetrics(generation, stamps)


def spoken_turn(model: TuiModel, heard: int, reply: int, said: str, answer: list[str]) -> None:
    model.apply(StateChanged(TurnState.USER_SPEAKING, heard, TurnState.LISTENING))
    model.apply(PartialTranscript(said[: len(said) // 2], heard))
    model.apply(StateChanged(TurnState.THINKING, heard, TurnState.USER_SPEAKING))
    model.apply(FinalTranscript(said, heard))
    for delta in answer:
        model.apply(AssistantTextDelta(delta, reply))
    model.apply(ReplyDone(reply, "".join(answer), 1000))


def test_a_spoken_turn_from_partials_to_latency() -> None:
    model = TuiModel()
    model.apply(StateChanged(TurnState.USER_SPEAKING, 0, TurnState.LISTENING))
    assert model.state is TurnState.USER_SPEAKING

    model.apply(PartialTranscript("what is", 0))
    model.apply(PartialTranscript("what is the whether", 0, stable="what is"))
    assert len(model.lines) == 1
    partial = model.lines[0]
    assert (partial.role, partial.text, partial.final) == ("user", "what is the whether", False)
    assert partial.stable == "what is"

    model.apply(StateChanged(TurnState.THINKING, 0, TurnState.USER_SPEAKING))
    model.apply(FinalTranscript("What is the weather?", 0))
    assert len(model.lines) == 1, "the final transcript replaces the partial line in place"
    assert (model.lines[0].text, model.lines[0].final, model.lines[0].stable) == ("What is the weather?", True, "")

    model.apply(AssistantTextDelta("It is ", 1))
    assert model.lines[1].role == "assistant" and not model.lines[1].final
    model.apply(AudioChunk(b"\0\0" * 160, 16000, 1, 0, 0))
    model.apply(StateChanged(TurnState.ASSISTANT_SPEAKING, 1, TurnState.THINKING))
    model.apply(AssistantTextDelta("sunny.", 1))
    model.apply(ReplyDone(1, "It is sunny.", 16000))
    model.apply(metrics(1, stt=200, llm=300, sentence=100, tts=50))

    assert len(model.lines) == 2
    reply = model.lines[1]
    assert (reply.text, reply.final, reply.interrupted, reply.generation) == ("It is sunny.", True, False, 1)
    assert reply.latency == pytest.approx(
        {"stt": 200, "llm_first_token": 300, "first_sentence": 100, "tts_first_audio": 50, "voice_to_voice": 650},
        abs=0.2,
    )
    assert model.last_latency() == reply.latency
    assert model.state is TurnState.ASSISTANT_SPEAKING


def test_a_stable_prefix_that_is_not_a_prefix_is_ignored() -> None:
    model = TuiModel()
    model.apply(PartialTranscript("hello there", 0, stable="goodbye"))
    assert model.lines[0].stable == ""


def test_barge_in_marks_the_interrupted_reply_and_starts_a_new_user_line() -> None:
    model = TuiModel()
    spoken_turn(model, 0, 1, "tell me a story", ["Once upon ", "a time"])
    model.apply(metrics(1, 100, 100, 100, 100))
    spoken_turn(model, 1, 2, "and another one", ["There was ", "a king"])
    # The user talks over reply 2: CancelReply bumps the generation to 3.
    model.apply(StateChanged(TurnState.USER_SPEAKING, 3, TurnState.ASSISTANT_SPEAKING))
    model.apply(FlushPlayback(3))
    model.apply(AssistantTextDelta(" who", 2))  # a late delta of the cancelled reply
    model.apply(PartialTranscript("stop", 3))

    first, second = model.lines[1], model.lines[3]
    assert not first.interrupted, "a fully played older reply stays as it was"
    assert second.interrupted and second.final
    assert second.text == "There was a king", "deltas of a flushed generation are dropped"
    assert (model.lines[4].role, model.lines[4].text, model.lines[4].final) == ("user", "stop", False)


def test_a_flush_before_any_reply_text_marks_nothing() -> None:
    model = TuiModel()
    spoken_turn(model, 0, 1, "hi", ["Hello!"])
    model.apply(FinalTranscript("what time is it", 1))
    model.apply(FlushPlayback(3))  # reply 2 was cancelled while still thinking
    assert not any(line.interrupted for line in model.lines)


def test_typed_input_is_echoed_as_a_user_line() -> None:
    model = TuiModel()
    model.apply(FinalTranscript("typed question", 0))
    model.apply(AssistantTextDelta("typed answer", 1))
    model.apply(ReplyDone(1, "typed answer", 100))
    model.apply(metrics(1, 0, 300, 100, 50, spoken=False))
    assert [(line.role, line.text) for line in model.lines] == [
        ("user", "typed question"),
        ("assistant", "typed answer"),
    ]
    assert set(model.last_latency()) == {"llm_first_token", "first_sentence", "tts_first_audio"}


def test_a_reply_without_deltas_is_shown_from_reply_done() -> None:
    model = TuiModel()
    model.apply(FinalTranscript("hi", 0))
    model.apply(ReplyDone(1, "Hello.", 100))
    assert (model.lines[-1].role, model.lines[-1].text, model.lines[-1].final) == ("assistant", "Hello.", True)


def test_an_empty_final_transcript_drops_the_partial_line() -> None:
    model = TuiModel()
    model.apply(StateChanged(TurnState.USER_SPEAKING, 0, TurnState.LISTENING))
    model.apply(PartialTranscript("uh", 0))
    model.apply(StateChanged(TurnState.THINKING, 0, TurnState.USER_SPEAKING))
    model.apply(StateChanged(TurnState.LISTENING, 0, TurnState.THINKING))  # final was empty: nothing to answer
    assert model.lines == []


def test_errors_and_info_become_lines() -> None:
    model = TuiModel()
    model.apply(ErrorEvent("tts_failed", "voice model missing", "tts", 2))
    model.add_info("voice: af_bella")
    assert [(line.role, line.text) for line in model.lines] == [
        ("error", "tts: voice model missing"),
        ("info", "voice: af_bella"),
    ]


def test_medians_over_several_turns_per_stage() -> None:
    model = TuiModel()
    assert model.last_latency() == {} and model.median_latency() == {}
    for generation, stt in ((1, 100), (3, 300), (5, 200)):
        spoken_turn(model, generation - 1, generation, "hello", ["hi"])
        model.apply(metrics(generation, stt=stt, llm=10 * generation, sentence=50, tts=20))
    model.apply(metrics(7, 0, llm=1000, sentence=50, tts=20, spoken=False))  # typed: no stt stage

    median = model.median_latency()
    assert median["stt"] == pytest.approx(200, abs=0.2)
    assert median["llm_first_token"] == pytest.approx((30 + 50) / 2, abs=0.2)
    # voice to voice: 180, 400 and 320 ms; the typed turn has none.
    assert median["voice_to_voice"] == pytest.approx(320, abs=0.5)
    assert model.turns() == 4
    assert model.last_latency()["llm_first_token"] == pytest.approx(1000, abs=0.2)


def test_metrics_without_stages_are_not_a_turn() -> None:
    model = TuiModel()
    model.apply(TurnMetrics(1, {}))
    assert model.turns() == 0


def test_lines_are_bounded_and_clear_keeps_the_medians() -> None:
    model = TuiModel(max_lines=5)
    for i in range(8):
        model.apply(FinalTranscript(f"message {i}", i))
    assert [line.text for line in model.lines] == [f"message {i}" for i in range(3, 8)]

    model.apply(AssistantTextDelta("reply", 9))
    model.apply(metrics(9, 100, 100, 100, 100))
    model.clear()
    assert model.lines == []
    assert model.turns() == 1


def test_level_and_owner_settings() -> None:
    model = TuiModel()
    model.set_level(-23.5)
    assert model.level_dbfs == -23.5
    model.set_level(3.0)
    assert model.level_dbfs == 0.0, "a level above full scale shows as full scale"
