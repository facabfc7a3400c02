"""A turn's prompt continues the tokens its session's KV holds, whatever happened to the history.

The history keeps text; the KV keeps the tokens the model generated, which tokenizing that text
again rarely reproduces. Each case checks three things on the shipped tiny GGUF and on the starter
set's SmolLM2 (skipped where missing, outside CI): the prompt says exactly what the chat template
renders (nothing doubled, nothing lost), the turn prefills only what changed (not the conversation
from its first reply on), and the reply equals a fresh session's reply to the same prompt (the
reused KV is not stale).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.llm import Events, model_path

from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_engine import LlamaCppEngine

REPLY = GenerationParams(temperature=0.0, max_tokens=24, seed=7)
SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer in one short sentence.")
FIRST = "What is the capital of France?"
SECOND = "How far away is the moon?"
# Tokens a turn may prefill beyond its newest message: the template's seams and the assistant header (the tiny
# GGUF's SentencePiece vocabulary spells them in many tokens), the probe's rows. Re-reading the replies costs more.
SLACK = 16


@pytest.fixture(params=["tiny", "smollm2"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[LlamaCppEngine, Events]]:
    events = Events()
    engine = LlamaCppEngine(model_path(request.param), n_ctx=2048, n_seq_max=3, n_batch=128, prefill_chunk=64,
                            n_threads=1, on_event=events)  # one thread: the same numbers whatever the machine does
    yield engine, events
    engine.close()


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


def two_turns(engine: LlamaCppEngine) -> tuple[list[ChatMessage], str]:
    """A conversation two replies long (the second reply is where the cases below differ)."""
    turn1 = [SYSTEM, user(FIRST)]
    reply1 = "".join(engine.stream("alice", turn1, REPLY)).strip() or "ok"
    turn2 = [*turn1, assistant(reply1), user("And of Spain?")]
    return turn2, "".join(engine.stream("alice", turn2, REPLY)).strip() or "ok"


def said(engine: LlamaCppEngine, tokens: list[int]) -> bytes:
    """What ``tokens`` say; a space after a line break does not count (a reply's first generated token may
    carry one that the history, which stores replies stripped, does not)."""
    return engine.text_of(tokens).replace(b"\n ", b"\n")


def newest_message(engine: LlamaCppEngine, messages: list[ChatMessage]) -> int:
    """Tokens the newest message adds to a plain tokenization of the conversation."""
    return (len(engine.prompt_tokens("plain", messages, REPLY))
            - len(engine.prompt_tokens("plain", messages[:-1], REPLY)))


def reply_tokens(events: Events, session_id: str) -> list[int]:
    """The tokens of the session's latest reply."""
    admitted = max(i for i, e in enumerate(events.items) if e.session_id == session_id and e.kind == "admitted")
    return [e.value for e in events.items[admitted:] if e.session_id == session_id and e.kind == "token"]


def check_turn(engine: LlamaCppEngine, events: Events, messages: list[ChatMessage]) -> int:
    """Run ``messages`` as alice's next turn; checks the prompt's text and the reply; returns the prefill.

    Not stale: the reply starts like a fresh session's reply to the same prompt. Only its start: SmolLM2's
    greedy choice between near-equal tokens differs with the batch sizes the KV was computed in (the same
    prompt prefilled in chunks of 64 and of 32 says "140,000,000 miles" and "140,000,000,000,000").
    """
    prompt = engine.prompt_tokens("alice", messages, REPLY)
    plain = engine.prompt_tokens("plain", messages, REPLY)  # a session with no KV: the template, tokenized
    assert said(engine, prompt) == said(engine, plain), "the prompt does not say what the template renders"
    "".join(engine.stream("alice", messages, REPLY))
    prefilled = engine.last_prefill_tokens("alice")
    assert prefilled is not None
    engine.release("fresh")
    "".join(engine.stream_tokens("fresh", prompt, REPLY))
    assert reply_tokens(events, "alice")[:5] == reply_tokens(events, "fresh")[:5], "alice's reused KV went stale"
    return prefilled


def test_a_reply_that_ended_on_its_own_is_followed_by_one_end_of_turn(engine):
    engine, events = engine
    turn2, reply2 = two_turns(engine)
    messages = [*turn2, assistant(reply2), user(SECOND)]
    assert check_turn(engine, events, messages) <= newest_message(engine, messages) + SLACK


def test_a_reply_never_heard_leaves_two_user_messages_in_a_row(engine):
    """Barge-in before the first audio: the history has no assistant message for that turn."""
    engine, events = engine
    turn2, _ = two_turns(engine)
    messages = [*turn2, user(SECOND)]
    assert check_turn(engine, events, messages) <= newest_message(engine, messages) + SLACK


def test_words_merged_into_the_previous_user_message(engine):
    """The user went on after a reply nobody heard: the history merges both into one message."""
    engine, events = engine
    turn2, _ = two_turns(engine)
    merged = [*turn2[:-1], user(f"{turn2[-1].content} {SECOND}")]
    assert check_turn(engine, events, merged) <= newest_message(engine, merged) + SLACK


def test_a_reply_cut_mid_word_by_a_barge_in(engine):
    engine, events = engine
    turn2, reply2 = two_turns(engine)
    heard = reply2[: max(len(reply2) // 2, 1)]
    messages = [*turn2, assistant(heard), user(SECOND)]
    assert check_turn(engine, events, messages) <= newest_message(engine, messages) + SLACK + len(heard)


def test_a_reply_cut_mid_word_keeps_its_generated_tokens_up_to_the_cut():
    """With a byte-level BPE vocabulary (SmolLM2's) the heard part's own tokens stay, not only the turns before
    it. (A SentencePiece vocabulary starts every tokenized text with a space, so there the prompt goes back to
    the reply's start: the test above checks it still says exactly the template's text.)"""
    events = Events()
    engine = LlamaCppEngine(model_path("smollm2"), n_ctx=2048, n_seq_max=2, n_batch=128, n_threads=1,
                            on_event=events)
    try:
        long_reply = GenerationParams(temperature=0.0, max_tokens=32, ignore_eos=True)
        turn1 = [SYSTEM, user("Tell me about the moon.")]
        reply = "".join(engine.stream("alice", turn1, long_reply)).strip()
        generated = reply_tokens(events, "alice")
        heard = reply[: len(reply) // 2 + 1]  # about half, whatever character that ends on
        messages = [*turn1, assistant(heard), user(SECOND)]
        prompt = engine.prompt_tokens("alice", messages, REPLY)
        first = engine.prompt_tokens("fresh", turn1, REPLY)
        kept = next(i for i, (a, b) in enumerate(zip([*prompt[len(first):], None], generated, strict=False))
                    if a != b)
        assert kept >= 4
        assert check_turn(engine, events, messages) <= len(prompt) - len(first) - kept + 1
    finally:
        engine.close()


def test_a_history_trimmed_from_the_front_is_tokenized_plainly(engine):
    """Nothing to keep past the system prompt: the prompt is the plain tokenization, and still correct."""
    engine, events = engine
    turn2, reply2 = two_turns(engine)
    trimmed = [SYSTEM, user("And of Spain?"), assistant(reply2), user(SECOND)]
    prompt = engine.prompt_tokens("alice", trimmed, REPLY)
    assert prompt == engine.prompt_tokens("plain", trimmed, REPLY)
    check_turn(engine, events, trimmed)
