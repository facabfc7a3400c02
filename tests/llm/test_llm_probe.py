"""The end-of-message probe, read from the reply's own prefill: the mean of P(<|im_end|>) right after the
user's text and P(a sentence ends) right after its last word.

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
from voicechat.llm.probe import (
    EndProbe,
    end_of_turn,
    end_probe_at,
    last_word_at,
    mass,
    sentence_end_tokens,
    token_probability,
)
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


def word_of(tokens: list[int], text: str) -> int | None:
    at = probe_of(tokens, text)
    return None if at is None else last_word_at(tokens, at, PIECES.__getitem__, text)


def test_the_sentence_part_reads_the_last_word_before_the_marks_after_it():
    prompt = [1, 2, 5, 4, 10, 11, 12, 13, 3, 4, 2, 6, 4]  # ...user\nWhat is it?<|im_end|>...
    assert word_of(prompt, "What is it?") == 6  # " it", before "?"
    assert word_of([1, 2, 5, 4, 10, 11, 12, 3, 4], "What is it") == 6  # no mark: the text's last token
    assert word_of([1, 2, 5, 4, 10, 11, 12, 13, 14, 13, 3, 4], "What is it? ?") == 6  # marks and spaces
    assert word_of([1, 2, 5, 4, 13, 3, 4], "?") is None  # marks only: no word to read after


def test_sentence_ending_tokens_are_end_marks_line_breaks_and_the_end_of_generation():
    pieces = [b".", b"?", b" !", b"...", b" .com", b"\n", b"  ", b"<|im_end|>", b"word", b",", b".\n", b"\xe2"]
    mask = sentence_end_tokens(pieces, lambda t: t == 7)
    assert [p for p, m in zip(pieces, mask, strict=True) if m] == [b".", b"?", b" !", b" .com", b"\n",
                                                                     b"<|im_end|>", b".\n"]


def test_the_probe_is_the_mean_of_its_two_parts_once_both_are_in():
    ends = np.array([True, False, True, False])  # tokens 0 and 2 end a sentence; token 3 ends the message
    probe = EndProbe(word_at=5, text_at=6, end_token=3, sentence_ends=ends)
    assert probe.rows() == (5, 6)
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    assert mass(logits, ends) == pytest.approx(0.4)
    assert probe.read(5, logits) == pytest.approx({"sentence": 0.4})
    assert probe.read(6, logits) == pytest.approx({"message": 0.4})
    assert probe.read(4, logits) == {}
    assert end_of_turn({"sentence": 0.4}) is None
    assert end_of_turn({"sentence": 0.9, "message": 0.1}) == pytest.approx(0.5)
    same = EndProbe(word_at=6, text_at=6, end_token=3, sentence_ends=ends)  # no marks after the last word
    unmarked = np.log(np.array([0.5, 0.2, 0.2, 0.1]))  # a mark would likely come next; the end token itself not
    assert same.rows() == (6,)
    parts = same.read(6, unmarked)
    assert parts == pytest.approx({"sentence": 0.7, "message": 0.7})  # P(end) 0.1 alone would halve it
    assert end_of_turn(parts) == pytest.approx(0.7)


def test_kv_reuse_stops_before_the_probe_token():
    cached, prompt = [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8]
    assert reusable_prefix(cached, prompt) == 6
    assert reusable_prefix(cached, prompt, decode_from=4) == 4
    assert reusable_prefix(cached, prompt, decode_from=7) == 6
    assert reusable_prefix(prompt, prompt, decode_from=None) == 7


def test_a_request_reports_its_probe_once_and_a_failing_callback_is_logged(caplog):
    probes = Probes()
    ends = np.array([True, False, False, False])
    req = GenRequest("s", [1, 2, 3], GREEDY, probe=EndProbe(0, 1, 3, ends), on_probe=probes)
    assert req.probing
    req.read_probe(0, np.log(np.array([0.5, 0.2, 0.2, 0.1])))  # the sentence part: 0.5
    assert probes.values == [] and req.probing
    req.read_probe(1, np.log(np.array([0.1, 0.2, 0.4, 0.3])))  # the message part: 0.3
    req.report_probe(None)
    assert probes.values == [pytest.approx(0.4)] and not req.probing
    missing = Probes()
    GenRequest("s", [1, 2, 3], GREEDY, probe=EndProbe(0, 1, 3, ends), on_probe=missing).read_probe(0, None)
    assert missing.values == [None]  # llama.cpp gave no row: reported as unknown, once

    def broken(value: float | None) -> None:
        raise RuntimeError("listener bug")

    GenRequest("s", [1], GREEDY, probe=EndProbe(0, 0, 3, ends), on_probe=broken).report_probe(0.5)
    assert "end-of-message callback failed" in caplog.text


def test_with_the_probe_step_a_prefill_chunk_ends_at_the_probes_last_row_until_it_is_read():
    ends = np.zeros(4, dtype=bool)
    req = GenRequest("s", list(range(10)), GREEDY, probe=EndProbe(5, 6, 3, ends), on_probe=Probes())
    req.kv, req.pending = req.prompt[:3], req.prompt[3:]
    assert req.prefill_wanted() == 4  # prompt indices 3..6: the last word and the text's last token
    assert req.prefill_wanted(probe_step=False) == 7
    req.kv, req.pending = req.prompt[:7], req.prompt[7:]  # past the rows (read in an earlier chunk)
    assert req.prefill_wanted() == 3
    req.kv, req.pending = req.prompt[:3], req.prompt[3:7]  # the rows end the prompt: nothing to split off
    assert req.prefill_wanted() == 4
    req.pending = req.prompt[3:]
    req.report_probe(0.5)
    assert req.prefill_wanted() == 7  # read: the rest goes in one chunk


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
        options = {"n_ctx": 2048, "n_seq_max": 2, "n_batch": 128, "prefill_chunk": 64, "on_event": events,
                   "n_threads": 1, **kwargs}
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


def vocab_of(path: Path):
    from llama_cpp import Llama

    return Llama(str(path), vocab_only=True, verbose=False)


def llama_probe(path: Path, tokens: list[int], text: str) -> float:
    """Independently: the probe for the user's ``text`` ending right before the prompt's last <|im_end|>,
    from llama-cpp-python's logits of the prompt up to there (``logits_all``, one fresh context, one batch):
    the mean of P(<|im_end|>) there and P(a sentence-ending token) after the text's last word.

    With flash attention, as the engine's context has it (llama.cpp's default "auto" turns it on
    here): without it SmolLM2 gives 0.716 where it gives 0.703 for P(<|im_end|>) after the finished question.
    """
    import llama_cpp
    from llama_cpp import Llama

    vocab = vocab_of(path)
    try:
        end = vocab.tokenize(b"<|im_end|>", add_bos=False, special=True)[0]
        eog = llama_cpp.llama_model_get_vocab(vocab.model)
        pieces = [vocab.detokenize([t], special=True) for t in range(vocab.n_vocab())]
        ends = sentence_end_tokens(pieces, lambda t: bool(llama_cpp.llama_vocab_is_eog(eog, t)))
    finally:
        vocab.close()
    text_at = max(i for i, t in enumerate(tokens) if t == end) - 1
    word_at = last_word_at(tokens, text_at, pieces.__getitem__, text)
    assert word_at is not None
    llm = Llama(str(path), n_ctx=1024, n_batch=512, logits_all=True, flash_attn=True, verbose=False, seed=7)
    try:
        llm.eval(tokens[: text_at + 1])
        message = token_probability(np.asarray(llm.scores[text_at]), tokens[text_at + 1])
        row = np.asarray(llm.scores[word_at], dtype=np.float64)
        sentence = float(np.exp(row - logsumexp(row))[ends].sum())
        return (message + sentence) / 2
    finally:
        llm.close()


def logsumexp(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.max() + np.log(np.exp(x - x.max()).sum()))


def chatml_tokens(path: Path, text: str) -> list[int]:
    """llama-cpp-python's own tokens of ``text`` (special tokens parsed, BOS where the model adds it)."""
    vocab = vocab_of(path)
    try:
        return vocab.tokenize(text.encode(), add_bos=text.startswith("<|im_start|>system"), special=True)
    finally:
        vocab.close()


def reference(path: Path, messages: list[ChatMessage]) -> tuple[list[int], float]:
    """The ChatML text up to the end of the user's words, then <|im_end|>, tokenized independently;
    and ``llama_probe`` of it."""
    text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages[:-1])
    tokens = chatml_tokens(path, f"{text}<|im_start|>user\n{messages[-1].content}<|im_end|>")
    return tokens, llama_probe(path, tokens, messages[-1].content)


@pytest.mark.timeout(120)
def test_smollm2_finds_a_finished_question_more_finished_than_a_cut_sentence(make_engine):
    engine, _ = make_engine("smollm2")
    finished, _ = probed(engine, "a", chat(FINISHED))
    cut, _ = probed(engine, "b", chat(CUT))
    assert finished is not None and cut is not None
    assert 0.0 <= cut < finished <= 1.0
    assert finished >= 0.35 > cut  # the threshold `bench turns` chose separates these two


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
@pytest.mark.parametrize("chunk", [64, 5, 1])  # 5: inside a middle chunk; 1: its two rows in two chunks
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
    assert value == pytest.approx(llama_probe(model_path(name), prompt, CUT), abs=1e-3)
    assert reply2 == "".join(engine.stream_tokens("fresh", prompt, GREEDY))  # the reused KV is not stale


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["tiny", "smollm2"])
def test_a_prompt_already_in_the_kv_is_decoded_again_from_the_probe_on(make_engine, name):
    """The same turn asked again (a prepared reply redone): the cache holds the whole prompt, but
    the user's last word and what follows it are decoded again so their logits exist."""
    engine, events = make_engine(name)
    value, _ = probed(engine, "fresh", chat(FINISHED))
    "".join(engine.stream("alice", chat(FINISHED), GREEDY))  # no probe: reuses all but the last token
    "".join(engine.stream("alice", chat(FINISHED), GREEDY))
    prompt = engine.prompt_tokens("x", chat(FINISHED), GREEDY)
    assert events.reused("alice") == len(prompt) - 1
    again, _ = probed(engine, "alice", chat(FINISHED))
    text_at = max(i for i, t in enumerate(prompt) if t == chatml_tokens(model_path(name), "<|im_end|>")[0]) - 1
    assert events.reused("alice") == text_at - 1  # from the last word on (" France", before "?")
    assert again == pytest.approx(value, abs=1e-3)


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


class StepsOf:
    """The scheduler's step count when ``session``'s probe was read and when its first token was sampled (both
    taken on the scheduler thread, inside the step that did it), the probe's value, and every event."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.events = Events()
        self.engine: LlamaCppEngine | None = None
        self.probe: int | None = None
        self.token: int | None = None
        self.value: float | None = None

    def on_event(self, event: LlmEvent) -> None:
        self.events(event)
        if event.kind == "token" and event.session_id == self.session and self.token is None:
            assert self.engine is not None
            self.token = self.engine.stats().steps

    def on_probe(self, value: float | None) -> None:
        assert self.engine is not None
        self.probe, self.value = self.engine.stats().steps, value


@pytest.mark.timeout(120)
@pytest.mark.parametrize("probe_step", [True, False])
def test_the_probe_step_reports_the_probe_a_step_before_the_reply_starts(make_engine, probe_step):
    """With ``probe_step`` the turn's end need not wait for the tokens after the user's text
    (``<|im_end|>``, the assistant's header): the probe is reported a step before the first token."""
    steps = StepsOf("a")
    engine, _ = make_engine("tiny", probe_step=probe_step, on_event=steps.on_event, prefill_chunk=128)  # one chunk
    steps.engine = engine
    plain = "".join(engine.stream("plain", chat(FINISHED), GREEDY))
    assert "".join(engine.stream("a", chat(FINISHED), GREEDY, on_end_of_message=steps.on_probe)) == plain
    assert steps.value is not None and steps.token is not None and steps.probe is not None
    assert steps.token - steps.probe == (1 if probe_step else 0)


@pytest.mark.timeout(120)
def test_beside_another_request_the_probe_is_read_in_the_step_that_starts_the_reply(make_engine):
    """A shared step costs every request in it: one more would delay the first token as much as it brings
    the probe forward, so beside another session's reply the prompt is not split."""
    steps = StepsOf("a")
    engine, _ = make_engine("tiny", on_event=steps.on_event, prefill_chunk=128)
    steps.engine = engine
    busy = engine.stream("busy", chat(CUT), LONG)
    steps.events.wait(lambda: len(steps.events.tokens("busy")) >= 2, "busy generating")
    "".join(engine.stream("a", chat(FINISHED), GREEDY, on_end_of_message=steps.on_probe))
    busy.close()
    assert steps.token is not None and steps.token == steps.probe


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
