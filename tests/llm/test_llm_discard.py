"""Discarding a reply prepared early: nothing of it stays in the session's KV or continuation.

Run on the shipped tiny random GGUF and on the starter set's SmolLM2-135M Instruct (skipped where
that file is missing, outside CI). Each check compares the session that had a discarded turn with
a fresh engine that never saw it: same prompt tokens, same KV reuse, same greedy reply.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import pytest
from support.llm import WAIT_S, Events, model_path

from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_context import LlamaContext
from voicechat.llm.llama_engine import LlamaCppEngine
from voicechat.llm.scheduler import BatchScheduler, GenRequest, StreamEnd
from voicechat.models.tiny import tiny_gguf_path

REPLY = GenerationParams(temperature=0.0, max_tokens=24, seed=7)
LONG = GenerationParams(temperature=0.0, max_tokens=400, seed=7, ignore_eos=True)  # still running when discarded
TURN1 = [ChatMessage("system", "You are a helpful voice assistant."),
         ChatMessage("user", "What is the capital of France?")]
TENTATIVE = "And what is the capital"  # the transcript inside a mid-sentence pause
FINAL = "And what is the capital of Spain?"  # what the user then said in full


@pytest.fixture(params=["tiny", "smollm2"])
def make_engine(request: pytest.FixtureRequest) -> Iterator[Callable[[], tuple[LlamaCppEngine, Events]]]:
    path = model_path(request.param)
    engines: list[LlamaCppEngine] = []

    def make() -> tuple[LlamaCppEngine, Events]:
        events = Events()
        engine = LlamaCppEngine(path, n_ctx=2048, n_seq_max=2, n_batch=128, prefill_chunk=64, n_threads=1,
                                on_event=events)
        engines.append(engine)
        return engine, events

    yield make
    for engine in engines:
        engine.close()


def then(reply: str, user: str) -> list[ChatMessage]:
    return [*TURN1, ChatMessage("assistant", reply.strip() or "ok"), ChatMessage("user", user)]


def wait_discarded(events: Events, session_id: str, n: int = 1) -> int:
    """The KV tokens the session kept, once its ``n``-th discard has been applied."""
    events.wait(lambda: len(events.of(session_id, "discarded")) >= n, f"{session_id}'s discard")
    return events.of(session_id, "discarded")[-1].value


def fresh_final_turn(make_engine: Callable[[], tuple[LlamaCppEngine, Events]]) -> tuple[list[int], str, int, int]:
    """Turn 1 then the final turn on an engine that never saw the tentative turn."""
    engine, events = make_engine()
    reply1 = "".join(engine.stream("alice", TURN1, REPLY))
    final = then(reply1, FINAL)
    prompt = engine.prompt_tokens("alice", final, REPLY)
    reply = "".join(engine.stream("alice", final, REPLY))
    prefilled = engine.last_prefill_tokens("alice")
    assert prefilled is not None
    return prompt, reply, events.reused("alice"), prefilled


@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", ["running", "finished"])
def test_a_discarded_turn_leaves_nothing_in_the_next_turns_prompt_or_kv(make_engine, when: str):
    engine, events = make_engine()
    reply1 = "".join(engine.stream("alice", TURN1, REPLY))
    turn1_kv = len(engine.prompt_tokens("fresh", TURN1, REPLY)) + len(events.tokens("alice")) - 1
    generated = len(events.tokens("alice"))
    stream = engine.stream("alice", then(reply1, TENTATIVE), LONG if when == "running" else REPLY)
    if when == "running":
        next(stream), next(stream)  # the prepared reply is under way
        events.wait(lambda: len(events.tokens("alice")) >= generated + 3, "the prepared reply's tokens")
    else:
        "".join(stream)
        assert events.finished("alice").detail in ("eog", "length")
    reused_from_turn1 = events.reused("alice")
    assert 0 < reused_from_turn1 <= turn1_kv
    engine.discard("alice")
    list(stream)  # a running stream ends (after the pieces already queued)
    # The session's cache is cut back to what the prepared turn had reused of turn 1.
    assert wait_discarded(events, "alice") == reused_from_turn1
    if when == "running":
        assert events.finished("alice").detail == "aborted"
        assert len(events.tokens("alice")) < generated + LONG.max_tokens

    final = then(reply1, FINAL)
    prompt = engine.prompt_tokens("alice", final, REPLY)
    reply = "".join(engine.stream("alice", final, REPLY))
    fresh_prompt, fresh_reply, fresh_reused, fresh_prefilled = fresh_final_turn(make_engine)
    assert prompt == fresh_prompt  # the continuation is turn 1's reply again, not the discarded one
    assert events.reused("alice") == fresh_reused <= turn1_kv  # only turn 1's KV is reused...
    assert engine.last_prefill_tokens("alice") == fresh_prefilled
    assert reply == fresh_reply  # ...and it is not stale


@pytest.mark.timeout(120)
def test_discard_with_nothing_to_discard_is_harmless(make_engine):
    engine, events = make_engine()
    engine.discard("nobody")  # never generated
    reply1 = "".join(engine.stream("alice", TURN1, REPLY))
    "".join(engine.stream("alice", then(reply1, TENTATIVE), REPLY))
    engine.discard("alice")
    kept = wait_discarded(events, "alice")
    engine.discard("alice")  # one level: turn 1 stays
    engine.release("bob")
    engine.discard("bob")  # released
    final = then(reply1, FINAL)
    reply = "".join(engine.stream("alice", final, REPLY))
    assert events.reused("alice") == kept > 0
    assert len(events.of("alice", "discarded")) == 1 and not events.of("nobody", "discarded")
    _, fresh_reply, fresh_reused, _ = fresh_final_turn(make_engine)
    assert reply == fresh_reply and kept == fresh_reused


def read_all(req: GenRequest) -> str:
    pieces = []
    while not isinstance(item := req.out.get(timeout=WAIT_S), StreamEnd):
        pieces.append(item)
    assert item.error is None
    return "".join(pieces)


@pytest.mark.timeout(60)
def test_a_discard_naming_an_older_request_leaves_the_newer_one_alone():
    ctx = LlamaContext(tiny_gguf_path(), n_ctx=1024, n_seq_max=2, n_batch=64)
    events = Events()
    scheduler = BatchScheduler(ctx, prefill_chunk=32, on_event=events)
    try:
        chat = "<|im_start|>user\nhello there, {}<|im_end|>\n<|im_start|>assistant\n"
        old = GenRequest("alice", ctx.tokenize(chat.format("how are you today?")), LONG)
        scheduler.submit(old)
        events.wait(lambda: len(events.tokens("alice")) >= 2, "the old request generating")
        new = GenRequest("alice", ctx.tokenize(chat.format("what is the weather like?")), REPLY)
        scheduler.submit(new)  # replaces the old one (a new turn)
        scheduler.discard(old)
        read_all(new)
        assert events.finished("alice").detail in ("eog", "length")
        assert not events.of("alice", "discarded") and len(new.kv) > len(new.prompt) - 1
        reused = events.reused("alice")
        assert 0 < reused < len(new.prompt)
        scheduler.discard(new)  # finished, still the latest: its own tokens leave the cache
        assert wait_discarded(events, "alice") == reused
        with pytest.raises(queue.Empty):
            new.out.get_nowait()  # nothing more reaches the finished stream
    finally:
        assert scheduler.close()
        ctx.close()
