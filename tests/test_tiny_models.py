"""The shipped tiny models: reproducible, and usable by the real engines they stand in for."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.tiny_models import tiny_gguf_path
from voicechat.tiny_models.gguf_maker import BOS_ID, EOS_ID, IM_END_ID, IM_START_ID, write_random_gguf


@pytest.fixture(scope="module")
def llm() -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(str(tiny_gguf_path()), n_ctx=512, n_threads=1, verbose=False, seed=1)
    yield model
    model.close()


def test_shipped_gguf_is_reproduced_byte_for_byte(tmp_path):
    fresh = write_random_gguf(tmp_path / "fresh.gguf")
    assert fresh.read_bytes() == tiny_gguf_path().read_bytes()


def test_different_seed_gives_different_weights(tmp_path):
    assert write_random_gguf(tmp_path / "a.gguf", seed=1).read_bytes() != tiny_gguf_path().read_bytes()


def test_bad_shape_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="multiple of heads"):
        write_random_gguf(tmp_path / "bad.gguf", dim=66, heads=4)


def test_special_tokens_and_chatml_template(llm):
    assert (llm.token_bos(), llm.token_eos()) == (BOS_ID, EOS_ID)
    assert llm.chat_format == "chatml"  # llama-cpp-python recognised the template
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, IM_END_ID)
    prompt = b"<|im_start|>user\nhi<|im_end|>"
    tokens = llm.tokenize(prompt, add_bos=False, special=True)
    assert (tokens[0], tokens[-1]) == (IM_START_ID, IM_END_ID)


def test_common_words_are_single_tokens(llm):
    tokens = llm.tokenize(b"you know the people", add_bos=False)
    assert [llm.detokenize([t]) for t in tokens] == [b" you", b" know", b" the", b" people"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\n\t"), max_size=80))
def test_ascii_text_round_trips(llm, text):
    data = text.encode()
    assert llm.detokenize(llm.tokenize(data)) == data


def test_streamed_chat_completion_yields_tokens_then_finishes(llm):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, how are you?"}]
    chunks = list(llm.create_chat_completion(messages, stream=True, max_tokens=8, seed=3))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def _last_logits(ctx, index: int, n_vocab: int) -> np.ndarray:
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,)).copy()


def test_low_level_batch_decodes_eight_sequences_independently():
    """One context, 8 sequences in one batch: same prompt -> same logits, regardless of neighbours."""
    model = llama_cpp.llama_model_load_from_file(str(tiny_gguf_path()).encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.n_batch, params.n_threads, params.n_threads_batch = 512, 8, 64, 1, 1
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(64, 0, 8)
    try:
        assert llama_cpp.llama_n_seq_max(ctx) >= 8
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        prompts = [[BOS_ID, 300 + (seq % 2), 400, 500] for seq in range(8)]  # two distinct prompts, 4 copies each
        items = [(tok, pos, seq) for seq, prompt in enumerate(prompts) for pos, tok in enumerate(prompt)]
        batch.n_tokens = len(items)
        for i, (tok, pos, seq) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = pos == len(prompts[seq]) - 1
        assert llama_cpp.llama_decode(ctx, batch) == 0
        logits = [_last_logits(ctx, 4 * seq + 3, n_vocab) for seq in range(8)]
        for seq in range(2, 8):
            np.testing.assert_allclose(logits[seq], logits[seq % 2], rtol=1e-4, atol=1e-4)
        assert not np.allclose(logits[0], logits[1])
        assert llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 3, -1, -1)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
