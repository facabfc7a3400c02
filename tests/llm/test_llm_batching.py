"""The LLM scheduling policy, text assembly and chat templates, without a model."""

from __future__ import annotations

import pytest

from voicechat.core.history import ChatMessage
from voicechat.llm.batching import (
    AdmissionQueue,
    PrefillWant,
    SequencePool,
    common_prefix,
    drop_oldest_turn,
    kept_after_discard,
    plan_step,
    reply_room,
    reusable_prefix,
)
from voicechat.llm.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from voicechat.llm.text import StopMatcher, Utf8Pieces


# -- plan_step -----------------------------------------------------------------
def test_every_generating_sequence_decodes_and_prompts_fill_the_rest_first_come_first_served():
    plan = plan_step(["a", "b"], [PrefillWant("c", 300), PrefillWant("d", 50)], batch_size=512, prefill_budget=256)
    assert plan.decode == ("a", "b")
    assert plan.prefill == (("c", 256),)  # the chunk budget caps one step; d waits for c
    assert plan.n_tokens == 258


def test_short_prompts_share_one_step_and_a_long_one_is_chunked():
    plan = plan_step([], [PrefillWant("c", 20), PrefillWant("d", 500)], batch_size=512, prefill_budget=256)
    assert plan.prefill == (("c", 20), ("d", 236))


def test_decoders_are_never_pushed_out_by_prompts():
    plan = plan_step([f"s{i}" for i in range(8)], [PrefillWant("p", 1000)], batch_size=10, prefill_budget=256)
    assert len(plan.decode) == 8 and plan.prefill == (("p", 2),)


def test_replies_far_ahead_of_their_listener_sit_out_steps_that_others_need():
    plan = plan_step(["a", "b", "c"], [], batch_size=512, prefill_budget=256, ahead={"b", "c"})
    assert plan.decode == ("a",) and plan.deferred == ("b", "c")
    # A prompt being read is somebody waiting for a reply too.
    plan = plan_step(["a"], [PrefillWant("p", 20)], batch_size=512, prefill_budget=256, ahead={"a"})
    assert plan.decode == () and plan.prefill == (("p", 20),) and plan.deferred == ("a",)
    assert plan.n_tokens == 20


def test_replies_ahead_still_decode_when_nobody_else_needs_the_step():
    plan = plan_step(["a", "b"], [], batch_size=512, prefill_budget=256, ahead={"a", "b", "gone"})
    assert plan.decode == ("a", "b") and plan.deferred == ()
    plan = plan_step(["a", "b"], [], batch_size=512, prefill_budget=256, ahead={"gone"})
    assert plan.decode == ("a", "b") and plan.deferred == ()


def test_replies_ahead_make_way_even_alone_while_a_first_audio_is_synthesized():
    plan = plan_step(["a", "b"], [], batch_size=512, prefill_budget=256, ahead={"a", "b"}, make_way=True)
    assert plan.decode == () and plan.deferred == ("a", "b") and plan.n_tokens == 0  # the scheduler waits
    plan = plan_step(["a", "b"], [PrefillWant("p", 8)], batch_size=512, prefill_budget=256, ahead={"a"},
                     make_way=True)
    assert plan.decode == ("b",) and plan.prefill == (("p", 8),) and plan.deferred == ("a",)


def test_plan_step_rejects_impossible_batches():
    with pytest.raises(ValueError):
        plan_step(["a", "b"], [], batch_size=1, prefill_budget=8)
    with pytest.raises(ValueError):
        plan_step([], [], batch_size=8, prefill_budget=0)


# -- SequencePool / AdmissionQueue ---------------------------------------------
def test_a_session_keeps_its_sequence_between_turns():
    pool = SequencePool(2)
    ga, gb = pool.acquire("a"), pool.acquire("b")
    assert ga is not None and gb is not None and ga.seq != gb.seq
    pool.finish("a")
    again = pool.acquire("a")
    assert again is not None and again.seq == ga.seq and again.evicted is None


def test_all_busy_means_wait_and_the_least_recently_used_idle_session_is_evicted():
    pool = SequencePool(2)
    ga, gb = pool.acquire("a"), pool.acquire("b")
    assert {ga.seq, gb.seq} == {0, 1}
    assert pool.acquire("c") is None
    pool.finish("b")
    pool.finish("a")  # b is now the least recently used
    grant = pool.acquire("c")
    assert grant is not None and grant.evicted == "b" and grant.seq == gb.seq
    assert pool.seq_of("b") is None and pool.idle_keys == ["a"]


def test_release_frees_the_sequence_and_busy_sessions_cannot_start_twice():
    pool = SequencePool(1)
    pool.acquire("a")
    with pytest.raises(ValueError):
        pool.acquire("a")
    assert pool.release("a") == 0
    assert pool.release("a") is None
    assert pool.acquire("b") is not None
    assert pool.acquire("c") is None  # b holds the only sequence
    assert pool.busy_count == 1 and pool.seq_of("b") == 0 and pool.seq_of("c") is None


def test_evict_idle_frees_the_oldest_idle_cache_only():
    pool = SequencePool(2)
    pool.acquire("a")
    pool.acquire("b")
    assert pool.evict_idle() is None  # busy sequences are never taken
    seq_a = pool.seq_of("a")
    pool.finish("a")
    assert pool.evict_idle() == ("a", seq_a)
    grant = pool.acquire("c")
    assert grant is not None and grant.seq == seq_a and grant.evicted is None


def test_admission_is_first_come_first_served_and_a_new_request_keeps_its_place():
    pool = SequencePool(1)
    queue: AdmissionQueue[str] = AdmissionQueue()
    for key in ("a", "b", "c"):
        queue.push(key, f"{key}1")
    assert queue.push("b", "b2") == "b1"  # replaced in place
    admitted = list(queue.admit(pool))
    assert [item for item, _ in admitted] == ["a1"] and len(queue) == 2
    assert list(queue.admit(pool)) == []  # the only sequence is busy
    pool.finish("a")
    (item, grant), = list(queue.admit(pool))
    assert item == "b2" and grant.evicted == "a"
    assert queue.remove("c") == "c1" and len(queue) == 0


# -- KV reuse and trimming -----------------------------------------------------
def test_reusable_prefix_is_the_common_prefix_but_leaves_a_token_to_decode():
    assert reusable_prefix([1, 2, 3, 9], [1, 2, 3, 4, 5]) == 3
    assert reusable_prefix([], [1, 2]) == 0
    assert reusable_prefix([1, 2, 3], [1, 2, 3]) == 2  # identical prompt: the last token is decoded again
    assert reusable_prefix([1, 2, 3, 4, 5, 6], [1, 2, 3, 4]) == 3
    assert reusable_prefix([7, 2], [1, 2, 3]) == 0


def test_common_prefix_counts_equal_leading_tokens():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2 and common_prefix([1, 2, 3], [1, 2]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([5], [6]) == 0


def test_a_discard_keeps_only_the_kv_shared_with_what_the_request_started_from():
    turn1 = [10, 11, 12, 13, 14]  # prompt and reply of the kept turn
    discarded = [10, 11, 12, 13, 14, 20, 21, 22]  # turn 1's KV reused, then the discarded turn's tokens
    assert kept_after_discard(discarded, turn1) == len(turn1)
    # It reused only part of turn 1 (the history was trimmed or re-tokenized): only that part stays.
    assert kept_after_discard([10, 11, 30, 31], turn1) == 2
    assert kept_after_discard(discarded, None) == 0 and kept_after_discard(discarded, []) == 0
    # Stopped mid-prefill: nothing beyond what it held, even where turn 1 went further.
    assert kept_after_discard([10, 11, 12], turn1) == 3


def test_reply_room_is_capped_at_half_the_context():
    assert reply_room(256, 4096) == 256
    assert reply_room(4000, 1024) == 512


def test_drop_oldest_turn_keeps_the_system_prompt_and_opens_with_the_user():
    sys_, u1, a1, u2 = (ChatMessage("system", "s"), ChatMessage("user", "1"), ChatMessage("assistant", "x"),
                        ChatMessage("user", "2"))
    assert drop_oldest_turn([sys_, u1, a1, u2]) == [sys_, u2]
    assert drop_oldest_turn([u1, a1, u2]) == [u2]
    assert drop_oldest_turn([sys_, u2]) is None
    assert drop_oldest_turn([u2]) is None


# -- text assembly ---------------------------------------------------------------
def test_multibyte_characters_split_across_tokens_come_out_whole():
    pieces = Utf8Pieces()
    data = "é€😀".encode()
    out = [pieces.feed(data[i:i + 1]) for i in range(len(data))]
    assert "".join(out) == "é€😀"
    assert out[0] == "" and out[1] == "é"  # nothing half-decoded is ever emitted
    assert pieces.feed(b"\xe2\x82") == "" and pieces.flush() == "\ufffd"


def test_stop_strings_are_cut_and_partial_matches_held_back():
    stops = StopMatcher(["</end>", "STOP"])
    assert stops.feed("hello </e") == "hello "
    assert stops.feed("nd> more") == "" and stops.stopped
    assert stops.feed("ignored") == "" and stops.flush() == ""


def test_held_back_text_is_released_when_it_turns_out_not_to_be_a_stop():
    stops = StopMatcher(["STOP"])
    assert stops.feed("a ST") == "a "
    assert stops.feed("ART") == "START"
    assert stops.feed(" ST") == " "
    assert stops.flush() == "ST"
    assert StopMatcher([]).feed("x") == "x"


# -- chat templates ----------------------------------------------------------------
def test_chatml_template_renders_the_conversation_and_generation_prompt():
    template = ChatTemplate(CHATML_TEMPLATE)
    text = template.render([ChatMessage("system", "be kind"), ChatMessage("user", "hi")])
    assert text == "<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_template_globals_and_errors_name_their_source():
    template = ChatTemplate("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}", bos_token="<s>")
    assert template.render([ChatMessage("user", "x")]) == "<s>x"
    with pytest.raises(ChatTemplateError, match="llm.chat_template"):
        ChatTemplate("{% for %}", source="llm.chat_template")
    strict = ChatTemplate("{{ raise_exception('roles must alternate') }}", source="model.gguf")
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        strict.render([ChatMessage("user", "x")])


def test_text_aligned_prefix_follows_the_text_not_the_tokenization() -> None:
    from voicechat.llm.batching import text_aligned_prefix

    pieces = [b"", b"<|im_start|>", b"user\n", b"hi", b"<|im_start|>", b"assistant\n", b" Hel", b"lo", b" there"]
    rendered = b"<|im_start|>user\nhi<|im_start|>assistant\nHello there<|im_end|>\n<|im_start|>user\nok"
    k, offset = text_aligned_prefix(pieces, rendered)
    assert k == len(pieces)  # the reply's own tokens, its stripped leading space forgiven at the line start
    assert rendered[offset:].startswith(b"<|im_end|>")
    k, offset = text_aligned_prefix(pieces, b"<|im_start|>user\nbye")
    assert (k, offset) == (3, len(b"<|im_start|>user\n"))
    assert text_aligned_prefix([b" x"], b"x") == (0, 0)  # a missing space only at a line start...
    spm = [b"<|im_end|>", b" ", b"\n", b"<|im_start|>", b" user", b"\n"]  # ...or after a control token,
    control = [True, False, False, True, False, False]  # where SentencePiece puts one (alone, or on a word)
    assert text_aligned_prefix(spm, b"<|im_end|>\n<|im_start|>user\n", control=control) == (6, 28)
    assert text_aligned_prefix(spm, b"<|im_end|>\n<|im_start|>user\n") == (1, 10)


def test_text_aligned_prefix_keeps_whole_words_only() -> None:
    from voicechat.llm.batching import text_aligned_prefix

    pieces = [b"<|im_start|>", b"user\n", b"How", b" far", b"<|im_end|>"]
    said = b"<|im_start|>user\nHow farther is it"
    assert text_aligned_prefix(pieces, said) == (3, len(b"<|im_start|>user\nHow"))  # " far" goes: " farther"
    merged = b"<|im_start|>user\nHow far? And"
    assert text_aligned_prefix(pieces, merged) == (4, len(b"<|im_start|>user\nHow far"))  # "?" ends the word
    assert text_aligned_prefix([b"caf", b"\xc3"], "café au".encode()) == (0, 0)  # inside a multi-byte word
    assert text_aligned_prefix([b"a", b"b"], b"ab") == (2, 2)  # the end of the text ends the word
