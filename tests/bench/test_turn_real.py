"""Acceptance on the evidence set with the real models: a finished question ends the turn before the
maximum silence, a mid-sentence pause does not, with the default rules (the LLM's end-of-message probe
after Whisper tiny.en's transcript) and with ``AUDIO_AND_WORDS`` (Smart Turn and ``words_score``).

The signals' values are judged here, not this machine's speed: each is taken as in when asked
(``bench turns`` reports the timing). Skips when the starter models are missing (fails in CI).
"""

from __future__ import annotations

import pytest
from support.turn_models import starter_files_or_skip

from voicechat.bench import turn_evidence as te
from voicechat.models.registry import SMOLLM2_FILE
from voicechat.stt.turn_end import AUDIO_AND_WORDS, LLM_WORDS, TurnEndRules

RULES = [(LLM_WORDS, "llm"), (AUDIO_AND_WORDS, "words")]

pytestmark = pytest.mark.slow

# The third complete turn is a command SmolLM2 alone doubts (P(end of message) 0.30): the probe's sentence part
# ends it. The third pause is one Whisper closes with a full stop ("I need to buy some.").
COMPLETE = ("What is the capital of France?", "Can you recommend a good book about space?",
            "Translate good morning into Spanish.")
PAUSED = ("I would like to order a | large pizza with mushrooms.",
          "I want to learn how to | play the guitar this year.",
          "I need to buy some | eggs and flour for the cake.")


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    starter_files_or_skip("smart-turn/smart-turn-v3.2-cpu.onnx", "faster-whisper-tiny.en",
                          "piper/en_US-joe-medium.onnx", SMOLLM2_FILE)
    from voicechat.bench.turns import Signals, instant, observe
    from voicechat.models.store import PROJECT_ROOT
    from voicechat.stt.silero_batch import SileroBatch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(te, "COMPLETE", COMPLETE)
        patch.setattr(te, "PAUSED", PAUSED)
        items = te.build("joe", PROJECT_ROOT / "models" / "piper")
    signals, vad = Signals(PROJECT_ROOT, llm=True, threads=2), SileroBatch()
    return {u.name: instant([observe(u, signals, vad, TurnEndRules())[0]])[0] for u in items}


@pytest.mark.parametrize("rules_key", RULES, ids=["LLM_WORDS", "AUDIO_AND_WORDS"])
@pytest.mark.parametrize("index", range(len(COMPLETE)))
def test_a_finished_question_ends_the_turn_before_the_maximum(observed, index, rules_key):
    from voicechat.bench.turn_scoring import end_silence

    rules, key = rules_key
    item = observed[f"joe/complete/{index:02d}"]
    assert item.expected_place
    at = end_silence(rules, item, key)
    assert at is not None and at < rules.max_silence_s, (item.transcript, item.signals)


@pytest.mark.parametrize("rules_key", RULES, ids=["LLM_WORDS", "AUDIO_AND_WORDS"])
@pytest.mark.parametrize("index", range(len(PAUSED)))
def test_a_mid_sentence_pause_does_not_end_the_turn(observed, index, rules_key):
    from voicechat.bench.turn_scoring import end_silence

    rules, key = rules_key
    item = observed[f"joe/paused/{index:02d}"]
    assert item.expected_place
    assert end_silence(rules, item, key) is None, (item.transcript, item.signals)
