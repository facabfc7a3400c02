"""The sampler chain's min-p cut, and what the default prompt head (system prompt and example exchange)
does to the starter SmolLM2's replies: a question that names a country no longer starts a French one.

min-p runs on the shipped tiny random GGUF; the language check on SmolLM2-135M Instruct (skipped where that
file is missing, outside CI).
"""

from __future__ import annotations

import re

from support.llm import Events, model_path

from voicechat.config.reply import LlmSettings
from voicechat.core.history import ConversationHistory
from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_engine import LlamaCppEngine


def engine(name: str, events: Events | None = None) -> LlamaCppEngine:
    return LlamaCppEngine(model_path(name), n_ctx=1024, n_seq_max=2, n_batch=128, n_threads=1, on_event=events)


def test_min_p_keeps_only_tokens_near_the_likeliest() -> None:
    """At temperature 1.5 a near-1 min-p leaves the argmax alone (the greedy reply); without it the same seed
    samples something else."""
    events = Events()
    model = engine("tiny", events)
    try:
        history = ConversationHistory("You are terse.", 512)
        history.add_user("Count to ten.")
        runs = {
            "greedy": GenerationParams(temperature=0.0, max_tokens=24, ignore_eos=True),
            "min_p": GenerationParams(temperature=1.5, min_p=0.999, max_tokens=24, seed=5, ignore_eos=True),
            "free": GenerationParams(temperature=1.5, max_tokens=24, seed=5, ignore_eos=True),
        }
        for name, params in runs.items():
            "".join(model.stream(name, history.messages(), params))
    finally:
        model.close()
    assert events.tokens("min_p") == events.tokens("greedy")
    assert events.tokens("free") != events.tokens("greedy")


_FOREIGN = re.compile(r"[^\x00-\x7f]|\b(?:le|la|les|est|une|des|du|il|elle|de)\b", re.IGNORECASE)


def foreign_replies(model: LlamaCppEngine, examples: list[str], seeds: range) -> list[str]:
    """The replies to a question about France, one per seed, that are not plain English."""
    settings = LlmSettings()
    found = []
    for seed in seeds:
        history = ConversationHistory(settings.system_prompt, 1024, examples=examples)
        history.add_user("What is the capital of France?")
        params = GenerationParams(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                                  min_p=settings.min_p, repeat_penalty=settings.repeat_penalty, max_tokens=24,
                                  seed=seed)
        reply = "".join(model.stream(f"s{seed}", history.messages(), params))
        model.release(f"s{seed}")
        if _FOREIGN.search(reply):
            found.append(reply)
    return found


def test_the_default_example_exchange_keeps_the_starter_model_in_english() -> None:
    """Without the example SmolLM2-135M answers a question about France in French at most seeds (and one
    French reply in the history makes every later one French); with it, in English."""
    model = engine("smollm2")
    try:
        without = foreign_replies(model, [], range(10))
        with_example = foreign_replies(model, LlmSettings().example_turns, range(10))
    finally:
        model.close()
    assert len(without) >= 4, without
    assert len(with_example) <= 1, with_example
