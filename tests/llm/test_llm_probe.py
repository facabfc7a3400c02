"""The end-of-message probe: P(<|im_end|>) right after the user's text, read from the reply's own prefill.

Pure parts first (the softmax, where the probe reads, KV reuse, report once), then the engine on the
shipped tiny random GGUF and on the starter set's SmolLM2-135M Instruct (skipped where missing,
outside CI): the value equals an independent llama-cpp-python evaluation of the same tokens, it is
reported exactly once however the request ends, and it changes nothing else (replies, KV reuse).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support.llm import WAIT_S, Events, model_path

from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import GenerationParams
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.llm.batching import reusable_prefix
from voicechat.llm.llama_engine import LlamaCppEngine
from voicechat.llm.openai_engine import OpenAIChatEngine
from voicechat.llm.probe import end_probe_at, token_probability
from voicechat.llm.requests import GenRequest, LlmEvent

SYSTEM = "You are a helpful voice assistant."
FINISHED = "What is the capital of France?"
CUT = "I would like to order a"
GREEDY = GenerationParams(temperature=0.0, max_tokens=16, seed=7)
LONG = GenerationParams(temperature=0.0, max_tokens=1000, seed=7, ignore_eos=True)


def chat(user: str) -> list[ChatMessage]:
    return [ChatMessage("system", SYSTEM), ChatMessage("user", user)]


class Probes:
    """What ``on_end_of_message`` was called with, waitable."""

    def __init__(self) -> None:
        self.values: list[float | None] = []
        self._cond = threading.Condition()

    def __call__(self, value: float | None) -> None:
        with self._cond:
            self.values.append(value)
            self._cond.notify_all()

    def wait(self) -> float | None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.values, WAIT_S), "the probe was never reported"
            return self.values[0]


# -- pure ----------------------------------------------------------------------------
def test_token_probability_is_the_softmax():
    logits = np.array([1.0, 2.0, 3.0, 1000.0], dtype=np.float32)
    assert token_probability(logits, 3) == pytest.approx(1.0)
    x = np.array([0.5, -1.0, 2.0])
    assert token_probability(x, 1) == pytest.approx(np.exp(-1.0) / np.exp(x).sum())


PIECES = {1: b"<s>", 2: b"<|im_start|>", 3: b"<|im_end|>", 4: b"\n", 5: b"user", 6: b"assistant",
          10: b"What", 11: b" is", 12: b" it", 13: b"?", 14: b" "}


def probe_of(tokens: list[int], text: str) -> int | None:
    return end_probe_at(tokens, lambda t: t == 3, PIECES.__getitem__, text)


def test_the_probe_reads_the_last_token_of_the_user_text_before_its_end_token():
    prompt = [1, 2, 5, 4, 10, 11, 12, 13, 3, 4, 2, 6, 4]  # ...user\nWhat is it?<|im_end|>\n<|im_start|>assistant\n
    assert probe_of(prompt, "What is it?") == 7
    assert probe_of(prompt, "  is it? ") == 7  # the content is compared stripped
    assert probe_of(prompt, "What is that?") is None  # the text before the end token is not the message
    assert probe_of(prompt, "") is None
    assert probe_of([1, 2, 5, 4, 10, 11, 12, 13], "What is it?") is None  # no end token
    assert probe_of([1, 2, 5, 4, 10, 13, 14, 3, 4], "What?") is None  # the template put a space in between
    earlier = [1, 2, 5, 4, 10, 13, 3, 4, 2, 6, 4, 12, 3, 4, 2, 5, 4, 11, 13, 3, 4, 2, 6, 4]
    assert probe_of(earlier, " is?") == 18  # the last end token, not an earlier turn's


def test_kv_reuse_stops_before_the_probe_token():
    cached, prompt = [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8]
    assert reusable_prefix(cached, prompt) == 6
    assert reusable_prefix(cached, prompt, decode_from=4) == 4
    assert reusable_prefix(cached, prompt, decode_from=7) == 6
    assert reusable_prefix(prompt, prompt, decode_from=None) == 7


def test_a_request_reports_its_probe_once_and_a_failing_callback_is_logged(caplog):
    probes = Probes()
    req = GenRequest("s", [1, 2, 3], GREEDY, probe_at=1, probe_token=3, on_probe=probes)
    assert req.probing
    req.report_probe(0.25)
    req.report_probe(None)
    assert probes.values == [0.25] and not req.probing

    def broken(value: float | None) -> None:
        raise RuntimeError("listener bug")

    GenRequest("s", [1], GREEDY, probe_at=0, on_probe=broken).report_probe(0.5)
    assert "end-of-message callback failed" in caplog.text


def test_the_scripted_model_judges_by_the_end_mark_and_the_remote_one_cannot_tell():
    llm = ScriptedLLM()
    values = []
    for text in ("What time is it?", "Stop.", "Go!", "I would like to", "", "Well, "):
        "".join(llm.stream("s", chat(text), GREEDY, on_end_of_message=values.append))
    assert values == [0.9, 0.9, 0.9, 0.1, None, 0.1]
    "".join(llm.stream("s", [*chat("hi."), ChatMessage("assistant", "hello")], GREEDY, values.append))
    assert values[-1] is None  # the last message is not the user's
    remote = OpenAIChatEngine("http://127.0.0.1:9", model="m")
    try:
        remote_values: list[float | None] = []
        remote.stream("s", chat(FINISHED), GREEDY, on_end_of_message=remote_values.append).close()
        assert remote_values == [None]  # at once, before any request
    finally:
        remote.close()


# -- the llama.cpp engine -------------------------------------------------------------------
@pytest.fixture
def make_engine() -> Iterator[Callable[..., tuple[LlamaCppEngine, Events]]]:
    engines: list[LlamaCppEngine] = []

    def make(name: str, **kwargs) -> tuple[LlamaCppEngine, Events]:
        events = Events()
        options = {"n_ctx": 2048, "n_seq_max": 2, "n_batch": 128, "prefill_chunk": 64, "on_event": events, **kwargs}
        engine = LlamaCppEngine(model_path(name), **options)
        engines.append(engine)
        return engine, events

    yield make
    for engine in engines:
        engine.close()


def probed(engine: LlamaCppEngine, session_id: str, messages: list[ChatMessage],
           params: GenerationParams = GREEDY) -> tuple[float | None, str]:
    probes = Probes()
    reply = "".join(engine.stream(session_id, messages, params, on_end_of_message=probes))
    assert len(probes.values) == 1
    return probes.values[0], reply


def llama_probe(path: Path, tokens: list[int], at: int) -> float:
    """Independently: P(``tokens[at + 1]``) from llama-cpp-python's logits of ``tokens[: at + 1]``
    (``logits_all``, one fresh context, one batch).

    With flash attention, as the engine's context has it (llama.cpp's default "auto" turns it on
    here): without it SmolLM2 gives 0.716 where it gives 0.703 for the finished question.
    """
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=1024, n_batch=512, logits_all=True, flash_attn=True, verbose=False, seed=7)
    try:
        llm.eval(tokens[: at + 1])
        return token_probability(np.asarray(llm.scores[at]), tokens[at + 1])
    finally:
        llm.close()


def chatml_tokens(path: Path, text: str) -> list[int]:
    """llama-cpp-python's own tokens of ``text`` (special tokens parsed, BOS where the model adds it)."""
    from llama_cpp import Llama

    vocab = Llama(str(path), vocab_only=True, verbose=False)
    try:
        return vocab.tokenize(text.encode(), add_bos=text.startswith("<|im_start|>system"), special=True)
    finally:
        vocab.close()


def reference(path: Path, messages: list[ChatMessage]) -> tuple[list[int], float]:
    """The ChatML text up to the end of the user's words, then <|im_end|>, tokenized independently;
    and ``llama_probe`` of it (P(<|im_end|>) after the last of the user's tokens)."""
    text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages[:-1])
    tokens = chatml_tokens(path, f"{text}<|im_start|>user\n{messages[-1].content}<|im_end|>")
    return tokens, llama_probe(path, tokens, len(tokens) - 2)


@pytest.mark.timeout(120)
def test_smollm2_finds_a_finished_question_more_finished_than_a_cut_sentence(make_engine):
    engine, _ = make_engine("smollm2")
    finished, _ = probed(engine, "a", chat(FINISHED))
    cut, _ = probed(engine, "b", chat(CUT))
    assert finished is not None and cut is not None
    assert 0.0 <= cut < finished <= 1.0
    assert finished >= 0.6 > cut  # the threshold `bench turns` chose separates these two


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
@pytest.mark.parametrize("chunk", [64, 5])  # 5: the probe token lands inside a middle prefill chunk
def test_the_probe_equals_an_independent_evaluation_of_the_same_tokens(make_engine, name, chunk):
    engine, _ = make_engine(name, prefill_chunk=chunk)
    for text in (FINISHED, CUT):
        messages = chat(text)
        expected_tokens, expected = reference(model_path(name), messages)
        prompt = engine.prompt_tokens("x", messages, GREEDY)
        assert prompt[: len(expected_tokens)] == expected_tokens  # the probe reads where the reference did
        value, _ = probed(engine, f"s-{text}", messages)
        assert value == pytest.approx(expected, abs=1e-3), text


def batched(make_engine: Callable[..., tuple[LlamaCppEngine, Events]], name: str,
            probe: bool) -> tuple[dict[str, list[int]], list[float | None]]:
    """Two sessions prefilled in the same step beside a third that is generating; the first probed or not.

    The scheduler is held in the generating session's "admitted" event while the two are submitted,
    so every run has the same batches (a session joining another mid-reply changes the batch, and
    with it llama.cpp's rounding: greedy replies of the random model can then differ, probe or not).
    """
    events, release = Events(), threading.Event()

    def on_event(event: LlmEvent) -> None:
        events(event)
        if event.kind == "admitted" and event.session_id == "gate":
            release.wait(WAIT_S)

    engine, _ = make_engine(name, n_seq_max=3, prefill_chunk=128, on_event=on_event)
    gate = engine.stream("gate", chat(CUT), LONG)
    events.wait(lambda: bool(events.of("gate", "admitted")), "the gate's admission")
    probes = Probes()
    first = engine.stream("probed", chat(FINISHED), GREEDY, on_end_of_message=probes if probe else None)
    second = engine.stream("other", chat(CUT), GREEDY)
    release.set()
    "".join(first), "".join(second)
    gate.close()
    return {s: events.tokens(s) for s in ("probed", "other")}, probes.values


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
def test_the_probe_changes_nothing_else(make_engine, name):
    """Same replies with and without it (greedy, and sampled with a fixed seed), alone and batched."""
    engine, events = make_engine(name)
    sampled = GenerationParams(temperature=0.8, top_k=40, max_tokens=16, seed=7, ignore_eos=True)
    for kind, params in (("greedy", GREEDY), ("sampled", sampled)):
        plain = "".join(engine.stream(f"plain-{kind}", chat(FINISHED), params))
        _, reply = probed(engine, f"probed-{kind}", chat(FINISHED), params)
        assert reply == plain and events.tokens(f"probed-{kind}") == events.tokens(f"plain-{kind}")
    # Batched: the probe's logits row sits between other rows and must not shift which row is sampled.
    without, _ = batched(make_engine, name, probe=False)
    with_probe, values = batched(make_engine, name, probe=True)
    assert with_probe == without and all(without.values())
    assert len(values) == 1 and values[0] is not None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
def test_kv_reuse_still_works_with_the_probe(make_engine, name):
    engine, events = make_engine(name)
    first = chat(FINISHED)
    _, reply = probed(engine, "alice", first)
    second = [*first, ChatMessage("assistant", reply.strip() or "ok"), ChatMessage("user", CUT)]
    prompt = engine.prompt_tokens("alice", second, GREEDY)  # the first turn's tokens, its reply's own included
    value, reply2 = probed(engine, "alice", second)
    assert events.reused("alice") >= len(engine.prompt_tokens("fresh", first, GREEDY))
    end = chatml_tokens(model_path(name), "<|im_end|>")[0]
    at = max(i for i, t in enumerate(prompt) if t == end) - 1  # the user's last token: <|im_end|> follows
    assert value == pytest.approx(llama_probe(model_path(name), prompt, at), abs=1e-3)
    assert reply2 == "".join(engine.stream_tokens("fresh", prompt, GREEDY))  # the reused KV is not stale


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
def test_a_prompt_already_in_the_kv_is_decoded_again_from_the_probe_on(make_engine, name):
    """The same turn asked again (a prepared reply redone): the cache holds the whole prompt, but
    the user's last token is decoded again so its logits exist."""
    engine, events = make_engine(name)
    value, _ = probed(engine, "fresh", chat(FINISHED))
    "".join(engine.stream("alice", chat(FINISHED), GREEDY))  # no probe: reuses all but the last token
    "".join(engine.stream("alice", chat(FINISHED), GREEDY))
    prompt = engine.prompt_tokens("x", chat(FINISHED), GREEDY)
    assert events.reused("alice") == len(prompt) - 1
    again, _ = probed(engine, "alice", chat(FINISHED))
    at = max(i for i, t in enumerate(prompt) if t == chatml_tokens(model_path(name), "<|im_end|>")[0]) - 1
    assert events.reused("alice") == at and again == pytest.approx(value, abs=1e-3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
def test_the_probe_is_reported_once_however_the_request_ends(make_engine, name):
    engine, events = make_engine(name, n_seq_max=1)
    engine.stream("busy", chat(CUT), LONG)  # holds the only sequence
    events.wait(lambda: len(events.tokens("busy")) >= 2, "busy generating")
    waiting, replaced, discarded, closed = Probes(), Probes(), Probes(), Probes()
    stream = engine.stream("a", chat(FINISHED), GREEDY, on_end_of_message=waiting)
    stream.close()  # aborted while waiting for a sequence
    engine.stream("b", chat(FINISHED), GREEDY, on_end_of_message=replaced)
    engine.stream("b", chat(CUT), GREEDY)  # a new turn of b ends the first before its prefill
    engine.stream("c", chat(FINISHED), GREEDY, on_end_of_message=discarded)
    engine.discard("c")
    engine.stream("d", chat(FINISHED), GREEDY, on_end_of_message=closed)
    assert waiting.wait() is None and replaced.wait() is None and discarded.wait() is None
    engine.close()  # d is still waiting
    assert closed.wait() is None
    for probes in (waiting, replaced, discarded, closed):
        assert probes.values == [None]


@pytest.mark.timeout(60)
def test_a_failing_callback_leaves_the_reply_and_the_scheduler_alone(make_engine, caplog):
    engine, _ = make_engine("tiny")

    def broken(value: float | None) -> None:
        raise RuntimeError("listener bug")

    plain = "".join(engine.stream("plain", chat(FINISHED), GREEDY))
    assert "".join(engine.stream("a", chat(FINISHED), GREEDY, on_end_of_message=broken)) == plain
    assert "end-of-message callback failed" in caplog.text
    value, reply = probed(engine, "b", chat(FINISHED))
    assert value is not None and reply == plain


@pytest.mark.timeout(60)
def test_none_at_once_where_the_last_message_is_not_the_users(make_engine):
    engine, _ = make_engine("tiny")
    values: list[float | None] = []
    messages = [*chat(FINISHED), ChatMessage("assistant", "Paris")]
    stream = engine.stream("a", messages, GREEDY, on_end_of_message=values.append)
    assert values == [None]
    "".join(stream)
    assert values == [None]
