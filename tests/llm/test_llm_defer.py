"""A reply far ahead of its listener waits out the steps another session needs (``llm.defer_ahead_s``),
on the shipped tiny random GGUF: who decodes when, and that waiting changes no reply."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from support.llm import Events

from voicechat.core.history import ChatMessage
from voicechat.engines.first_audio import FirstAudio
from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_engine import LlamaCppEngine
from voicechat.models.tiny import tiny_gguf_path

LONG = GenerationParams(temperature=0.0, max_tokens=60, ignore_eos=True)
SHORT = GenerationParams(temperature=0.0, max_tokens=12, ignore_eos=True)
AHEAD = [ChatMessage("system", "You are a helpful voice assistant."), ChatMessage("user", "tell me a long story")]
FRESH = [ChatMessage("system", "Be short."), ChatMessage("user", "what time is it?")]


@pytest.fixture
def make_engine() -> Iterator[Callable[..., tuple[LlamaCppEngine, Events]]]:
    engines: list[LlamaCppEngine] = []

    def make(defer_ahead_s: float = 1.0, first_audio: FirstAudio | None = None) -> tuple[LlamaCppEngine, Events]:
        events = Events()
        engine = LlamaCppEngine(tiny_gguf_path(), on_event=events, n_ctx=2048, n_seq_max=4, n_batch=128,
                                prefill_chunk=32, n_threads=1, defer_ahead_s=defer_ahead_s, first_audio=first_audio)
        engines.append(engine)
        return engine, events

    yield make
    for engine in engines:
        engine.close()


def tokens_while(events: Events, session: str, during: str) -> list[int]:
    """``session``'s tokens generated between ``during``'s admission and its finish."""
    kinds = [(e.kind, e.session_id) for e in events.items]
    start = kinds.index(("admitted", during))
    end = kinds.index(("finished", during))
    return [i for i in range(start, end) if kinds[i] == ("token", session)]


def run_side_by_side(engine: LlamaCppEngine, events: Events, lead: Callable[[], float]) -> str:
    """``ahead`` starts a long reply with ``lead``; once it is under way ``fresh`` asks a short question."""
    release = events.pause_at("ahead", 3)
    ahead = engine.stream("ahead", AHEAD, LONG, lead=lead)
    events.wait(lambda: len(events.tokens("ahead")) >= 3, "ahead's first tokens")
    fresh = engine.stream("fresh", FRESH, SHORT)  # queued before ahead's next step
    release.set()
    assert "".join(fresh)
    return "".join(ahead)


def test_a_reply_far_ahead_waits_while_another_is_read_and_started_then_finishes_unchanged(make_engine):
    engine, events = make_engine()
    solo = "".join(engine.stream("solo", AHEAD, LONG))
    calls = []

    def lead() -> float:
        calls.append(1)
        return 5.0  # seconds of speech written ahead: well past defer_ahead_s

    text = run_side_by_side(engine, events, lead)
    assert tokens_while(events, "ahead", during="fresh") == []  # not one step shared with the fresh reply
    finishes = [e.session_id for e in events.items if e.kind == "finished"]
    assert finishes.index("fresh") < finishes.index("ahead")  # it was still going: it waited, then went on
    assert events.finished("ahead").detail == "length" and len(events.tokens("ahead")) == LONG.max_tokens
    assert text == solo  # waiting changes no token
    assert calls and engine.stats().deferred >= SHORT.max_tokens


def test_a_reply_close_to_its_listener_keeps_decoding_beside_others(make_engine):
    engine, events = make_engine()
    run_side_by_side(engine, events, lambda: 0.5)  # under defer_ahead_s: the listener needs it soon
    assert len(tokens_while(events, "ahead", during="fresh")) >= SHORT.max_tokens - 1
    assert engine.stats().deferred == 0


def test_with_defer_ahead_s_zero_the_lead_is_never_asked(make_engine):
    engine, events = make_engine(defer_ahead_s=0.0)

    def lead() -> float:
        raise AssertionError("asked")

    run_side_by_side(engine, events, lead)
    assert len(tokens_while(events, "ahead", during="fresh")) >= SHORT.max_tokens - 1


def test_a_lead_that_fails_never_holds_its_reply_back(make_engine, caplog):
    engine, events = make_engine()

    def lead() -> float:
        raise RuntimeError("bookkeeping broke")

    text = run_side_by_side(engine, events, lead)
    assert len(tokens_while(events, "ahead", during="fresh")) >= SHORT.max_tokens - 1
    assert text and len(events.tokens("ahead")) == LONG.max_tokens
    assert "lead could not be read" in caplog.text


def test_a_reply_whose_listener_caught_up_decodes_again_while_others_still_need_the_model(make_engine):
    engine, events = make_engine()
    caught_up = threading.Event()
    release = events.pause_at("ahead", 3)
    ahead = engine.stream("ahead", AHEAD, LONG, lead=lambda: 0.5 if caught_up.is_set() else 5.0)
    events.wait(lambda: len(events.tokens("ahead")) >= 3, "ahead's first tokens")
    fresh = engine.stream("fresh", FRESH, LONG)  # long too: it needs the model throughout
    release.set()
    events.wait(lambda: len(events.tokens("fresh")) >= 5, "fresh under way")
    held = len(events.tokens("ahead"))
    caught_up.set()  # the listener has heard most of what was written
    events.wait(lambda: len(events.tokens("ahead")) >= held + 5, "ahead decoding again")
    assert not events.of("fresh", "finished")  # beside fresh, not after it
    assert "".join(ahead) and "".join(fresh)


def test_a_reply_far_ahead_makes_way_while_a_first_audio_is_synthesized_then_finishes_unchanged(make_engine):
    first_audio = FirstAudio(max_age_s=60.0)
    engine, events = make_engine(first_audio=first_audio)
    solo = "".join(engine.stream("solo", AHEAD, LONG))
    release = events.pause_at("ahead", 3)
    ahead = engine.stream("ahead", AHEAD, LONG, lead=lambda: 5.0)
    events.wait(lambda: len(events.tokens("ahead")) >= 3, "ahead's first tokens")  # alone, it decodes
    token = first_audio.begin()  # another reply's first piece is being synthesized: the cores are its
    release.set()
    events.wait(lambda: engine.stats().deferred >= 1, "ahead making way")
    held = len(events.tokens("ahead"))
    events.wait(lambda: engine.stats().deferred >= 3, "two more waits")  # each wait lasts until a wake
    assert len(events.tokens("ahead")) == held  # not a token meanwhile
    first_audio.end(token)
    assert "".join(ahead) == solo  # making way changes no token
    assert len(events.tokens("ahead")) == LONG.max_tokens


def test_a_reply_close_to_its_listener_does_not_make_way_and_a_stuck_synthesis_holds_nobody(make_engine):
    now = [0.0]
    first_audio = FirstAudio(max_age_s=1.0, clock=lambda: now[0])
    engine, events = make_engine(first_audio=first_audio)
    first_audio.begin()  # never ended
    assert "".join(engine.stream("close", AHEAD, SHORT, lead=lambda: 0.5))  # the listener needs it soon
    assert engine.stats().deferred == 0
    now[0] = 5.0  # the synthesis has been going for 5 s: stuck, it no longer counts
    assert "".join(engine.stream("ahead", AHEAD, SHORT, lead=lambda: 5.0))
    assert engine.stats().deferred == 0
