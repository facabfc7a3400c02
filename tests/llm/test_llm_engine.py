"""The in-process llama.cpp engine on the shipped tiny random GGUF (real loading, batching, KV)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.llm import Events

from voicechat.core.history import ChatMessage, ConversationHistory
from voicechat.engines.protocols import EngineError, GenerationParams
from voicechat.llm.llama_engine import LlamaCppEngine
from voicechat.models.tiny import tiny_gguf_path

GREEDY = GenerationParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.fixture
def make_engine() -> Iterator[Callable[..., tuple[LlamaCppEngine, Events]]]:
    engines: list[LlamaCppEngine] = []

    def make(**kwargs) -> tuple[LlamaCppEngine, Events]:
        events = Events()
        options = {"n_ctx": 2048, "n_seq_max": 4, "n_batch": 128, "prefill_chunk": 32, "n_threads": 1, **kwargs}
        engine = LlamaCppEngine(tiny_gguf_path(), on_event=events, **options)
        engines.append(engine)
        return engine, events

    yield make
    for engine in engines:
        engine.close()


def chat(user: str, system: str = "You are a helpful voice assistant.") -> list[ChatMessage]:
    return [ChatMessage("system", system), ChatMessage("user", user)]


PROMPTS = {
    "alice": chat("hello, what is the weather like today?"),
    "bob": chat("play some music please, I want to think about my work and the people I know."),
    "carol": chat("tell me a good name", system="Be short."),
}


def solo_tokens(engine: LlamaCppEngine, events: Events, params: GenerationParams = GREEDY) -> dict[str, list[int]]:
    """Each prompt generated alone, one after the other, under a session id of its own."""
    out = {}
    for name, messages in PROMPTS.items():
        "".join(engine.stream(f"solo-{name}", messages, params))
        out[name] = events.tokens(f"solo-{name}")
    return out


def test_sessions_generating_together_each_get_their_own_continuation(make_engine):
    engine, events = make_engine()
    solo = solo_tokens(engine, events)
    assert len({tuple(t) for t in solo.values()}) == 3  # distinct prompts, distinct replies
    streams = {name: engine.stream(name, messages, GREEDY) for name, messages in PROMPTS.items()}
    texts = {name: "".join(stream) for name, stream in streams.items()}
    for name in PROMPTS:
        assert events.tokens(name) == solo[name], f"{name}'s batched reply differs from its solo reply"
        assert len(events.tokens(name)) == GREEDY.max_tokens and texts[name]
    # They really ran together: all three were admitted before any of them finished.
    order = [(e.kind, e.session_id) for e in events.items if e.session_id in PROMPTS and e.kind != "token"]
    assert [k for k, _ in order[:3]] == ["admitted"] * 3
    stats = engine.stats()
    assert stats.active == 0 and stats.queued == 0 and stats.tokens_per_s > 0


def test_sampling_settings_are_per_session(make_engine):
    engine, events = make_engine()
    solo = solo_tokens(engine, events)
    sampled = GenerationParams(temperature=1.5, top_k=50, top_p=0.95, max_tokens=24, seed=7, ignore_eos=True)
    a = engine.stream("alice", PROMPTS["alice"], GREEDY)
    b = engine.stream("bob", PROMPTS["bob"], sampled)
    "".join(a), "".join(b)
    assert events.tokens("alice") == solo["alice"]
    assert events.tokens("bob") != solo["bob"]
    "".join(engine.stream("bob-again", PROMPTS["bob"], sampled))
    assert events.tokens("bob-again") == events.tokens("bob")  # a fixed seed reproduces the reply


def test_the_repeat_penalty_changes_sampling_and_is_reproducible(make_engine):
    """The penalty sampler is really in the chain (its llama.cpp signature once broke every reply)."""
    engine, events = make_engine()
    plain = GenerationParams(temperature=0.8, max_tokens=48, seed=11, ignore_eos=True)
    penalised = GenerationParams(temperature=0.8, max_tokens=48, seed=11, ignore_eos=True, repeat_penalty=2.0)
    "".join(engine.stream("plain", PROMPTS["alice"], plain))
    "".join(engine.stream("penalised", PROMPTS["alice"], penalised))
    "".join(engine.stream("penalised-again", PROMPTS["alice"], penalised))
    assert len(events.tokens("penalised")) == 48
    assert events.tokens("penalised") == events.tokens("penalised-again")
    assert events.tokens("penalised") != events.tokens("plain")


def test_abort_stops_within_one_step_and_others_continue(make_engine):
    engine, events = make_engine()
    long = GenerationParams(temperature=0.0, max_tokens=400, ignore_eos=True)
    victim = engine.stream("alice", PROMPTS["alice"], long)
    other = engine.stream("bob", PROMPTS["bob"], GREEDY)
    events.wait(lambda: len(events.tokens("alice")) >= 5, "alice's first tokens")
    engine.abort("alice")
    seen_at_abort = len(events.tokens("alice"))
    list(victim)  # ends at once: abort already closed the caller's stream
    assert events.finished("alice").detail == "aborted"
    assert len(events.tokens("alice")) - seen_at_abort <= 1
    assert len(events.tokens("alice")) < 100
    "".join(other)
    assert events.finished("bob").detail == "length" and len(events.tokens("bob")) == GREEDY.max_tokens


def test_closing_the_iterator_early_aborts_the_request(make_engine):
    engine, events = make_engine()
    stream = engine.stream("alice", PROMPTS["alice"], GenerationParams(temperature=0, max_tokens=400,
                                                                         ignore_eos=True))
    next(stream)
    stream.close()
    assert events.finished("alice").detail == "aborted"
    assert len(events.tokens("alice")) < 400


def follow_up(messages: list[ChatMessage], reply: str, question: str) -> list[ChatMessage]:
    return [*messages, ChatMessage("assistant", reply.strip() or "ok"), ChatMessage("user", question)]


def test_a_new_turn_prefills_only_the_new_messages(make_engine):
    engine, events = make_engine()
    params = GenerationParams(temperature=0.0, max_tokens=16)
    turn1 = PROMPTS["alice"]
    reply = "".join(engine.stream("alice", turn1, params))
    first_prompt = engine.prompt_tokens("alice", turn1, params)
    assert engine.last_prefill_tokens("alice") == len(first_prompt)
    turn2 = follow_up(turn1, reply, "and tomorrow?")
    second_prompt = engine.prompt_tokens("alice", turn2, params)
    assert second_prompt[: len(first_prompt)] == first_prompt
    reply2 = "".join(engine.stream("alice", turn2, params))
    prefilled = engine.last_prefill_tokens("alice")
    assert prefilled is not None and prefilled <= len(second_prompt) - len(first_prompt)
    assert prefilled < len(second_prompt) // 2
    assert events.of("alice", "admitted")[-1].detail == f"reused={len(second_prompt) - prefilled}"
    # The reused KV gives exactly what a fresh session computing the whole prompt gives.
    fresh = "".join(engine.stream_tokens("fresh", second_prompt, params))
    assert reply2 == fresh and events.tokens("fresh") == events.tokens("alice")[-len(events.tokens("fresh")):]


def test_the_generated_reply_is_not_prefilled_again_on_the_next_turn(make_engine):
    """The history stores the reply as (stripped) text; its tokens in the KV are kept anyway."""
    engine, events = make_engine()
    params = GenerationParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    turn1 = PROMPTS["alice"]
    reply = "".join(engine.stream("alice", turn1, params))
    generated = len(events.tokens("alice"))
    assert generated == 32 and reply.strip()
    turn2 = follow_up(turn1, reply, "and tomorrow?")
    second = engine.prompt_tokens("alice", turn2, params)
    reply2 = "".join(engine.stream("alice", turn2, params))
    prefilled = engine.last_prefill_tokens("alice")
    first = engine.prompt_tokens("fresh", turn1, params)
    # Only the reply's last token (sampled, never decoded) and the new messages are prefilled.
    assert prefilled is not None and prefilled <= len(second) - len(first) - (generated - 1)
    # The prompt holds the reply's own tokens, and the KV it reused is not stale.
    assert second[len(first) : len(first) + generated] == events.tokens("alice")[:generated]
    assert reply2 == "".join(engine.stream_tokens("fresh", second, params))


def test_history_trimming_keeps_the_kv_consistent(make_engine):
    engine, events = make_engine()
    params = GenerationParams(temperature=0.0, max_tokens=12)
    history = ConversationHistory("You are a helpful voice assistant.", max_tokens=60)
    questions = ["what is the weather today?", "and tomorrow, where I live?", "play some music please.",
                 "tell me about the people here.", "what time is it now?", "thanks, that is good."]
    for turn, question in enumerate(questions):
        history.add_user(question)
        messages = history.messages()
        prompt = engine.prompt_tokens("alice", messages, params)
        reply = "".join(engine.stream("alice", messages, params))
        admitted = events.of("alice", "admitted")[-1]
        reused = int(admitted.detail.removeprefix("reused="))
        assert reused + engine.last_prefill_tokens("alice") == len(prompt)
        fresh = "".join(engine.stream_tokens(f"fresh{turn}", prompt, params))
        assert reply == fresh, f"turn {turn}: the session's cached KV went stale"
        history.add_assistant(reply or "ok")
    assert history.trimmed_messages > 0  # the test did exercise trimming


def test_a_conversation_longer_than_the_context_is_trimmed_not_failed(make_engine, caplog):
    engine, _ = make_engine(n_ctx=256, n_seq_max=1)
    params = GenerationParams(temperature=0.0, max_tokens=16)
    messages = [ChatMessage("system", "Be short.")]
    for i in range(12):
        messages += [ChatMessage("user", f"question {i} about the weather today"),
                     ChatMessage("assistant", f"answer {i}: it is good weather for a walk")]
    messages.append(ChatMessage("user", "and tomorrow?"))
    with caplog.at_level("INFO"):
        reply = "".join(engine.stream("alice", messages, params))
    assert reply and "dropped" in caplog.text
    assert len(engine.prompt_tokens("alice", messages, params)) <= engine.n_ctx_seq - params.max_tokens
    with pytest.raises(EngineError, match="llm.n_ctx"):
        engine.stream("bob", [ChatMessage("user", "weather " * 400)], params)


def test_a_session_closed_mid_generation_frees_its_sequence(make_engine):
    engine, events = make_engine(n_seq_max=1)
    long = GenerationParams(temperature=0.0, max_tokens=1000, ignore_eos=True)
    first = engine.stream("alice", PROMPTS["alice"], long)
    events.wait(lambda: len(events.tokens("alice")) >= 3, "alice generating")
    second = engine.stream("bob", PROMPTS["bob"], GREEDY)
    assert engine.stats().queued == 1 and not events.of("bob", "admitted")
    engine.release("alice")
    assert list(first) is not None
    "".join(second)
    assert events.finished("bob").detail == "length" and len(events.tokens("bob")) == GREEDY.max_tokens
    assert events.finished("alice").detail == "aborted"


def test_an_aborted_session_lends_its_sequence_to_the_next(make_engine):
    engine, events = make_engine(n_seq_max=1)
    long = GenerationParams(temperature=0.0, max_tokens=1000, ignore_eos=True)
    engine.stream("alice", PROMPTS["alice"], long)
    events.wait(lambda: len(events.tokens("alice")) >= 3, "alice generating")
    second = engine.stream("bob", PROMPTS["bob"], GREEDY)
    engine.abort("alice")
    "".join(second)
    assert events.of("alice", "evicted")  # alice's idle cache made room for bob
    # alice comes back: she waits for a sequence, gets one, and starts from scratch.
    "".join(engine.stream("alice", PROMPTS["alice"], GREEDY))
    assert engine.last_prefill_tokens("alice") == len(engine.prompt_tokens("alice", PROMPTS["alice"], GREEDY))


def test_more_sessions_than_sequences_all_complete_in_arrival_order(make_engine):
    engine, events = make_engine(n_seq_max=2)
    solo = solo_tokens(engine, events)
    names = [f"{name}-{i}" for i in range(2) for name in PROMPTS]
    streams = {name: engine.stream(name, PROMPTS[name.split("-")[0]], GREEDY) for name in names}
    for name, stream in streams.items():
        "".join(stream)
        assert events.tokens(name) == solo[name.split("-")[0]]
    admitted = [e.session_id for e in events.items if e.kind == "admitted" and e.session_id in streams]
    assert admitted == names


def test_stop_strings_cut_the_reply(make_engine):
    engine, _ = make_engine()
    full = "".join(engine.stream("alice", PROMPTS["alice"], GREEDY))
    words = full.split()
    stop = words[len(words) // 2]
    cut = "".join(engine.stream("alice", PROMPTS["alice"], GenerationParams(
        temperature=0.0, max_tokens=24, ignore_eos=True, stop=(stop,))))
    assert cut == full[: full.index(stop)]


def test_replies_end_at_the_end_of_generation_token(make_engine):
    engine, events = make_engine()
    params = GenerationParams(temperature=0.0, max_tokens=64)
    for i in range(20):  # the random model ends some replies early with <|im_end|>
        text = "".join(engine.stream(f"s{i}", chat(f"question number {i}"), params))
        if events.finished(f"s{i}").detail == "eog":
            assert len(events.tokens(f"s{i}")) < 64 and "<|im_end|>" not in text
            return
    pytest.fail("no reply ended with an end-of-generation token")


def test_closing_the_engine_ends_open_streams_with_an_error(make_engine):
    engine, events = make_engine()
    stream = engine.stream("alice", PROMPTS["alice"], GenerationParams(temperature=0, max_tokens=5000,
                                                                         ignore_eos=True))
    events.wait(lambda: len(events.tokens("alice")) >= 2, "alice generating")
    engine.close()
    with pytest.raises(EngineError):
        list(stream)
    with pytest.raises(EngineError):
        engine.stream("bob", PROMPTS["bob"], GREEDY)


def test_missing_or_broken_model_files_name_the_path_and_the_key(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(EngineError, match=r"nope\.gguf.*llm\.model"):
        LlamaCppEngine(missing)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(EngineError, match=r"broken\.gguf.*llm\.model"):
        LlamaCppEngine(broken)
    with pytest.raises(EngineError, match="llm.chat_template"):
        LlamaCppEngine(tiny_gguf_path(), chat_template="{% for %}")


def test_stats_count_the_kv_each_turn_reused_and_dropped(make_engine):
    """A follow-up turn keeps its session's whole KV; a prompt that diverges early (another system prompt)
    drops what its session cached: the counters that show a broken KV reuse in /metrics and `bench load`."""
    engine, _ = make_engine()
    params = GenerationParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    turn1 = PROMPTS["bob"]
    reply = "".join(engine.stream("bob", turn1, params))
    first = engine.stats()
    assert (first.admissions, first.reused_tokens, first.dropped_tokens) == (1, 0, 0)
    assert first.admitted_prefill == engine.last_prefill_tokens("bob") == len(engine.prompt_tokens("x", turn1, params))
    turn2 = follow_up(turn1, reply, "and tomorrow?")
    "".join(engine.stream("bob", turn2, params))
    second = engine.stats()
    # Turn 1's prompt and 15 of its 16 generated tokens were in the KV (the 16th was sampled, never decoded).
    assert second.reused_tokens == first.admitted_prefill + 15 and second.dropped_tokens == 0
    other = [ChatMessage("system", "Answer in French."), *turn2[1:]]
    "".join(engine.stream("bob", other, params))
    third = engine.stats()
    cached = second.reused_tokens + second.admitted_prefill - first.admitted_prefill + 15  # the KV after turn 2
    assert third.dropped_tokens == cached - (third.reused_tokens - second.reused_tokens) > 50
    assert third.admissions == sum(third.prefill_counts) == 3
    assert third.prefill_counts[-1] + third.prefill_counts[-2] >= 2  # turn 1 and the diverged prompt: over 64
    assert sum(third.step_counts) == third.steps and third.decode_s > 0
    assert third.admitted_prefill == third.prefill_tokens  # nothing was aborted mid-prefill
