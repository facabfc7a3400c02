"""The shipped tiny models: reproducible, and usable by the real engines they stand in for."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ctranslate2
import llama_cpp
import numpy as np
import pytest
from faster_whisper import WhisperModel
from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.models.tiny import tiny_gguf_path, tiny_whisper_path
from voicechat.models.tiny.gguf_maker import BOS_ID, EOS_ID, IM_END_ID, IM_START_ID, write_random_gguf
from voicechat.models.tiny.make_whisper import whisper_vocabulary
from voicechat.speech_samples import SpeechSynthesisUnavailable, speech_16k


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


# --- Whisper ---------------------------------------------------------------------------------------

WHISPER_IDS = {
    "<|endoftext|>": 50257, "<|startoftranscript|>": 50258, "<|en|>": 50259, "<|de|>": 50261,
    "<|translate|>": 50358, "<|transcribe|>": 50359, "<|startoflm|>": 50360, "<|startofprev|>": 50361,
    "<|nospeech|>": 50362, "<|notimestamps|>": 50363, "<|0.00|>": 50364, "<|30.00|>": 51864,
}


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    return WhisperModel(str(tiny_whisper_path()), device="cpu", compute_type="int8", cpu_threads=1,
                        local_files_only=True)


@pytest.fixture(scope="module")
def two_seconds() -> np.ndarray:
    try:
        audio = speech_16k("Hello, could you tell me what the weather is like tomorrow?")
    except SpeechSynthesisUnavailable as exc:
        pytest.skip(str(exc))
    assert len(audio) >= 32000
    return audio[:32000].astype(np.float32) / 32768


def test_shipped_whisper_vocabulary_is_the_makers_layout():
    shipped = json.loads((tiny_whisper_path() / "vocabulary.json").read_text())
    assert shipped == whisper_vocabulary()


def test_whisper_is_multilingual_with_whisper_special_token_ids(whisper):
    assert whisper.model.is_multilingual and whisper.model.n_mels == 80
    assert {t: whisper.hf_tokenizer.token_to_id(t) for t in WHISPER_IDS} == WHISPER_IDS


def test_whisper_tokenizer_round_trips_words(whisper):
    ids = whisper.hf_tokenizer.encode("Hello, how are you today?", add_special_tokens=False).ids
    assert len(ids) == 7 and max(ids) < WHISPER_IDS["<|endoftext|>"]
    assert whisper.hf_tokenizer.decode(ids) == "hello, how are you today?"


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_whisper_transcribes_speech_to_a_few_vocabulary_words(compute_type, two_seconds):
    model = WhisperModel(str(tiny_whisper_path()), device="cpu", compute_type=compute_type, cpu_threads=1,
                         local_files_only=True)
    segments, info = model.transcribe(two_seconds)
    words = " ".join(s.text for s in segments).split()
    assert info.language == "en"
    assert 1 <= len(words) <= 30
    vocabulary = set(whisper_vocabulary())
    assert all("▁" + w in vocabulary for w in words), words


def test_whisper_batched_generate_and_language_detection(whisper, two_seconds):
    features = whisper.feature_extractor(two_seconds)
    features = np.pad(features, ((0, 0), (0, 3000 - features.shape[1])))
    batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack([features] * 3), dtype=np.float32))
    ids = WHISPER_IDS
    prompt = [ids["<|startoftranscript|>"], ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
    results = whisper.model.generate(batch, [prompt] * 3, beam_size=1, max_length=64, return_no_speech_prob=True)
    sequences = [r.sequences_ids[0] for r in results]
    assert len(sequences) == 3 and sequences[0] == sequences[1] == sequences[2]
    assert 1 <= len(sequences[0]) < 32  # ended with <|endoftext|>, well before the length limit
    assert whisper.hf_tokenizer.decode(sequences[0]).strip()
    languages = whisper.model.detect_language(batch)
    assert [langs[0][0] for langs in languages] == ["<|en|>"] * 3
