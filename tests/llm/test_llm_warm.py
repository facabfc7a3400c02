"""Warming a new session: its system prompt is prefilled while the model is idle, and the first turn
prefills only the user's words, with the same reply a cold session gives.

Run on the shipped tiny random GGUF and on the starter SmolLM2-135M Instruct (skipped where that file
is missing, outside CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.llm import Events, model_path

from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_engine import LlamaCppEngine

REPLY = GenerationParams(temperature=0.0, max_tokens=16, seed=3)
LONG = GenerationParams(temperature=0.0, max_tokens=400, seed=3, ignore_eos=True)
SYSTEM = [ChatMessage("system", "You are a friendly voice assistant. Answer in one short sentence.")]
TURN = [*SYSTEM, ChatMessage("user", "How many legs does a spider have?")]


@pytest.fixture(params=["tiny", "smollm2"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[LlamaCppEngine, Events]]:
    events = Events()
    engine = LlamaCppEngine(model_path(request.param), n_ctx=2048, n_seq_max=2, n_batch=128, n_threads=1,
                            on_event=events)
    yield engine, events
    engine.close()


def test_a_warmed_session_prefills_only_the_users_words_and_answers_as_a_cold_one(engine):
    llm, events = engine
    cold = "".join(llm.stream("cold", TURN, REPLY))
    cold_prefill = llm.last_prefill_tokens("cold")
    assert cold_prefill == len(llm.prompt_tokens("cold", TURN, REPLY))  # nothing to reuse: the whole prompt

    assert llm.warm("warm", SYSTEM)
    events.finished("warm")
    warm = "".join(llm.stream("warm", TURN, REPLY))
    assert warm == cold
    assert events.reused("warm") >= 10 and llm.last_prefill_tokens("warm") == cold_prefill - events.reused("warm")


def test_warming_waits_for_nobody_and_never_twice(engine):
    llm, events = engine
    busy = llm.stream("talking", TURN, LONG)
    next(busy)  # another session's reply is being generated
    assert not llm.warm("newcomer", SYSTEM)  # the model is busy: no warm-up to delay that reply
    busy.close()
    events.finished("talking")
    "".join(llm.stream("talking", TURN, REPLY))
    assert not llm.warm("talking", SYSTEM)  # a session that has had a turn keeps its own KV
    assert llm.warm("newcomer", SYSTEM)


def test_a_turn_submitted_during_the_warm_up_takes_over(engine):
    llm, events = engine
    cold = "".join(llm.stream("cold", TURN, REPLY))
    assert llm.warm("eager", SYSTEM)
    eager = "".join(llm.stream("eager", TURN, REPLY))  # at once: the warm-up may not have run yet
    assert eager == cold


@pytest.mark.parametrize("heard_so_far", ["How many legs does", "How many arms do"])
def test_the_users_words_so_far_are_prefilled_and_the_turn_answers_as_a_cold_one(engine, heard_so_far):
    llm, events = engine
    first = [*SYSTEM, ChatMessage("user", "Hello there.")]
    said = "".join(llm.stream("talk", first, REPLY))
    assert "".join(llm.stream("cold", first, REPLY)) == said
    turn = [*first, ChatMessage("assistant", said), ChatMessage("user", "How many legs does a spider have?")]
    cold = "".join(llm.stream("cold", turn, REPLY))
    cold_prefill = llm.last_prefill_tokens("cold")

    assert llm.warm("talk", [*turn[:-1], ChatMessage("user", heard_so_far)])  # while the user speaks
    events.wait(lambda: len(events.of("talk", "finished")) == 2, "the warm-up")
    assert "".join(llm.stream("talk", turn, REPLY)) == cold  # whatever the words so far were
    prefilled = llm.last_prefill_tokens("talk")
    assert prefilled is not None and cold_prefill is not None
    if turn[-1].content.startswith(heard_so_far):
        assert prefilled <= cold_prefill - 6  # the turn's header and its first words were read already
    assert prefilled < cold_prefill


def test_the_model_counts_replies_in_its_hands_but_not_warm_ups(engine):
    """``stats().replies``: what a session's first piece asks before it ends early (``LlmWorker``)."""
    llm, events = engine
    release = events.pause_at("warm", 1)  # hold the scheduler right after the warm-up's one token
    assert llm.warm("warm", SYSTEM)
    events.wait(lambda: len(events.tokens("warm")) == 1, "the warm-up's token")
    assert llm.stats().replies == 0
    release.set()
    events.finished("warm")
    release = events.pause_at("talking", 2)
    busy = llm.stream("talking", TURN, LONG)
    events.wait(lambda: len(events.tokens("talking")) == 2, "two tokens of the reply")
    assert llm.stats().replies == 1
    release.set()
    busy.close()
    events.finished("talking")
    assert llm.stats().replies == 0
