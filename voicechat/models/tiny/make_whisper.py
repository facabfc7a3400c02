"""Make a tiny random-weight multilingual Whisper in CTranslate2 format, for faster-whisper.

Why: tests and benchmarks need the real faster-whisper/CTranslate2 code path (features, encoder,
batched generate, language detection) without downloading weights. The output is gibberish made of
English words and pronounceable pseudo-words.

The token layout is Whisper v2's (multilingual, 51,865 tokens): CTranslate2 only treats a Whisper as
multilingual (``detect_language``, ``language=``) when the vocabulary has exactly that size, so every
special token has the id it has in the real models (``<|endoftext|>`` 50257, ``<|startoftranscript|>``
50258, ``<|en|>`` 50259, ``<|transcribe|>`` 50359, ``<|notimestamps|>`` 50363, ``<|0.00|>`` 50364).
Text tokens are word-level (a ``tokenizers`` WordLevel model, no duplicates): punctuation, common
English words, then pseudo-words filling the 50,257 text slots. The random weights are nudged so a
transcript is a few English words that end, and language detection answers "en".

Needs torch, transformers, ctranslate2 and tokenizers; keep transformers out of the project venv
(see ``voicechat.models.tiny``)::

    PYTHONPATH=. /tmp/whisper-maker/bin/python -m voicechat.models.tiny.make_whisper OUTDIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from voicechat.models.tiny.words import CHAT_WORDS, MORE_WORDS

# Whisper's language tokens in its own order (the order fixes their ids: <|en|> is 50259).
WHISPER_LANGUAGES: tuple[str, ...] = tuple(
    """
en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi
ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd
gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su
""".split()
)
N_TEXT_TOKENS = 50257
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps
VOCAB_SIZE = 51865
UNK = "<unk>"
PUNCTUATION = (".", ",", "?", "!", "'", "-")
TASK_TOKENS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
               "<|notimestamps|>")
N_MELS = 80
# Nudges to the random weights so transcripts look like transcripts: a few English words, depending a
# little on the audio, then end of text, decoded confidently enough that faster-whisper does not
# retry at higher temperatures. See _shape_decoder_output and _amplify_audio_dependence.
WORD_LOGIT_SCALE = 3.0
FIRST_POSITION_SCALE = 3.0
POSITION_SCALE = 10.0
CROSS_ATTENTION_SCALE = 10.0
CONV_SCALE = 10.0
CROSS_QUERY_SCALE = 100.0
LOGIT_SHARPNESS = 40.0
EMBEDDING_SCALE = 0.3
EOT_RAMP = 0.08


def special_tokens() -> list[str]:
    """The tokens after the text tokens, in id order from 50257."""
    timestamps = ["<|%.2f|>" % (i * 0.02) for i in range(N_TIMESTAMPS)]
    languages = [f"<|{code}|>" for code in WHISPER_LANGUAGES]
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, *TASK_TOKENS, *timestamps]


def _pseudo_words() -> Iterator[str]:
    """Pronounceable filler words ("ka", "bado", "mitesu"...) in a fixed order."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    for n in itertools.count(1):
        for parts in itertools.product(syllables, repeat=n):
            yield "".join(parts)


def text_tokens() -> list[str]:
    """The 50,257 word-level text tokens: unk, punctuation, English words, pseudo-words, and "".

    The last one is the empty string, as in the real multilingual Whisper vocabulary: CTranslate2
    4.8 decides a Whisper is multilingual by whether "" is a token.
    """
    tokens = [UNK, *PUNCTUATION]
    seen = set(tokens)
    for word in itertools.chain(CHAT_WORDS, MORE_WORDS, _pseudo_words()):
        piece = "▁" + word.lower()
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            if len(tokens) == N_TEXT_TOKENS - 1:
                return [*tokens, ""]
    raise AssertionError("unreachable: pseudo-words are endless")


def whisper_vocabulary() -> list[str]:
    vocab = text_tokens() + special_tokens()
    if len(vocab) != VOCAB_SIZE or len(set(vocab)) != VOCAB_SIZE:
        raise AssertionError(f"vocabulary has {len(vocab)} tokens ({len(set(vocab))} distinct), want {VOCAB_SIZE}")
    return vocab


def build_tokenizer(vocab: list[str]):
    """A ``tokenizers`` WordLevel tokenizer: lowercase, split on spaces (▁) and punctuation."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tokenizer = Tokenizer(WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [UNK, *vocab[N_TEXT_TOKENS:]]])
    return tokenizer


def _shape_decoder_output(decoder, ids: dict[str, int]) -> None:
    """Nudge the random decoder so faster-whisper's output looks like a transcript.

    Untouched, a random Whisper repeats one pseudo-word until the length limit with near-uniform
    probabilities, which makes faster-whisper retry at every temperature (slow). So: English words'
    embedding rows (tied to the output layer) are larger, so words win; the final layer-norm gain
    sharpens the logits, so greedy decoding is confident; ``<|en|>`` wins language detection; and a
    growing end-of-text component in the position embeddings ends the text after a few words.
    """
    import torch

    weight = decoder.embed_tokens.weight
    eot_id = ids["<|endoftext|>"]
    weight[eot_id] = torch.randn(weight.shape[1]) * weight[:eot_id].std()  # it was zero: the padding row
    scale = torch.full((weight.shape[0], 1), EMBEDDING_SCALE)
    for word in (*CHAT_WORDS, *MORE_WORDS):
        scale[ids["▁" + word.lower()]] *= WORD_LOGIT_SCALE
    scale[eot_id] *= WORD_LOGIT_SCALE
    weight.mul_(scale)
    decoder.layer_norm.weight.fill_(LOGIT_SHARPNESS)
    positions = decoder.embed_positions.weight
    # With tied embeddings a token whose own embedding dominates the residual stream predicts
    # itself forever ("live live live"): let position and audio (cross-attention) dominate instead.
    positions *= POSITION_SCALE
    # Language detection reads the logits at position 0: a large position-0 embedding fixes the
    # direction of that hidden state, and <|en|> points the same way.
    positions[0] *= FIRST_POSITION_SCALE
    first = positions[0] - positions[0].mean()
    weight[ids["<|en|>"]] = first / first.norm() * weight[eot_id].norm()
    eot = weight[eot_id]
    steps = torch.arange(positions.shape[0], dtype=torch.float32)[:, None]
    positions.add_(EOT_RAMP * steps * eot / eot.norm())


def _amplify_audio_dependence(model, ids: dict[str, int]) -> None:
    """Make the cross-attention output (the decoder's only view of the audio) the *difference* from
    silence, scaled up: random cross-attention averages ~all 1,500 frames, so untouched its output is
    nearly the same vector for any audio and every utterance would get the same words."""
    import torch

    encoder = model.model.encoder
    encoder.conv1.weight.mul_(CONV_SCALE)  # so the sound, not the frame position, shapes the encoder output
    encoder.conv2.weight.mul_(CONV_SCALE)
    cross = model.model.decoder.layers[0].encoder_attn
    cross.q_proj.weight.mul_(CROSS_QUERY_SCALE)  # sharp attention: each step looks at different frames
    outputs: list[torch.Tensor] = []
    hook = cross.register_forward_hook(lambda _module, _inputs, output: outputs.append(output[0]))
    silence = torch.full((1, N_MELS, 3000), -1.5)  # faster-whisper's features of digital silence
    prompt = [ids["<|startoftranscript|>"], ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
    try:
        model(input_features=silence, decoder_input_ids=torch.tensor([prompt]))
    finally:
        hook.remove()
    cross.out_proj.bias -= outputs[0][0].mean(dim=0)
    cross.out_proj.weight.mul_(CROSS_ATTENTION_SCALE)
    cross.out_proj.bias.mul_(CROSS_ATTENTION_SCALE)


def _build_model(vocab: list[str], d_model: int, seed: int):
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    ids = {t: i for i, t in enumerate(vocab)}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=N_MELS, d_model=d_model, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=[], begin_suppress_tokens=[eot], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        _shape_decoder_output(model.model.decoder, ids)
        _amplify_audio_dependence(model, ids)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=[], begin_suppress_tokens=[eot], no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in WHISPER_LANGUAGES},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        is_multilingual=True,
    )
    return model


def make_tiny_whisper(out_dir: str | Path, *, d_model: int = 64, seed: int = 0, quantization: str = "int8") -> Path:
    """Write the CTranslate2 model directory ``out_dir`` (replacing it) and return it."""
    import ctranslate2
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    vocab = whisper_vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        PreTrainedTokenizerFast(
            tokenizer_object=build_tokenizer(vocab), unk_token=UNK, bos_token="<|endoftext|>",
            eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        ).save_pretrained(hf_dir)
        _build_model(vocab, d_model, seed).save_pretrained(hf_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"])
        converter.convert(str(out_dir), quantization=quantization)
    preprocessor = {"feature_size": N_MELS, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400}
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write (replaced if it exists)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantization", default="int8", help="CTranslate2 weight type (int8, float16, float32)")
    args = parser.parse_args(argv)
    out = make_tiny_whisper(args.out_dir, d_model=args.d_model, seed=args.seed, quantization=args.quantization)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(f"{out}: {sizes}")


if __name__ == "__main__":
    main()
