"""Write small random-weight llama GGUF files that llama.cpp loads like a real chat model.

Why: tests, self-tests and benchmarks need a real llama.cpp model (real loading, tokenizing,
decoding, batching, chat templating) but may not download weights. Random weights make gibberish,
which is fine: the code under test is the plumbing, not the prose. Depends only on ``gguf`` and
``numpy``; the output is byte-identical for the same arguments, so a shipped file can be checked
against a fresh one.

    python -m voicechat.models.tiny.gguf_maker OUT.gguf [--dim 64 --layers 2 --heads 4 --dtype f32]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gguf
import numpy as np

from voicechat.models.tiny.words import CHAT_WORDS

# ChatML, spelled exactly as llama-cpp-python's CHATML_CHAT_TEMPLATE so it recognises the format
# ("chatml", stop at <|im_end|>); llama.cpp's own template detection knows <|im_start|> too.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID = range(len(SPECIAL_TOKENS))

_PUNCTUATION = list(".,!?;:'\"-()")
WORD_LOGIT_SCALE = 4.0


@dataclass(frozen=True)
class GgufShape:
    """The hyper-parameters of one random model (defaults: the shipped tiny one)."""

    dim: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int | None = None
    ff: int | None = None
    ctx: int = 2048

    @property
    def n_kv_heads(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def n_ff(self) -> int:
        # llama's ~8/3 * dim, rounded up to a multiple of 32 (768 -> 2048, 64 -> 192).
        return self.ff if self.ff is not None else -(-8 * self.dim // 3 // 32) * 32

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def validate(self) -> None:
        if min(self.dim, self.layers, self.heads, self.n_kv_heads, self.n_ff, self.ctx) <= 0:
            raise ValueError(f"GGUF shape {self}: every size must be positive")
        if self.dim % self.heads:
            raise ValueError(f"GGUF shape: dim {self.dim} must be a multiple of heads {self.heads}")
        if self.head_dim % 2:
            raise ValueError(f"GGUF shape: head size {self.head_dim} must be even (RoPE rotates pairs)")
        if self.heads % self.n_kv_heads:
            raise ValueError(f"GGUF shape: heads {self.heads} must be a multiple of kv_heads {self.n_kv_heads}")


def spm_vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of a small SentencePiece ("llama") vocabulary.

    Special tokens first, then the 256 byte-fallback tokens (so any text tokenizes), then single
    characters and every prefix of each common word with its "▁" word-start marker: llama.cpp's SPM
    tokenizer merges adjacent pieces only when the merged piece is in the vocabulary, so the prefixes
    are the merge path that lets whole words come out as one token.
    """
    tokens = list(SPECIAL_TOKENS)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    scores = [0.0] * len(tokens)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)
    pieces: list[str] = ["▁"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += [str(d) for d in range(10)] + _PUNCTUATION
    for word in CHAT_WORDS:
        marked = "▁" + word
        pieces += [marked[:n] for n in range(2, len(marked) + 1)]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
            # Longer pieces win merges; the tiny rank term keeps ties deterministic.
            scores.append(float(len(piece)) - len(tokens) * 1e-4)
    return tokens, scores, [int(t) for t in types]


def _output_row_scales(tokens: list[str]) -> np.ndarray:
    """Per-token scale of the output matrix rows: whole words, sentence punctuation and end-of-turn
    get larger logits, so sampled gibberish reads as words (speakable by TTS) and turns end."""
    favoured = {"▁" + w for w in CHAT_WORDS} | set(".,!?") | {SPECIAL_TOKENS[IM_END_ID]}
    return np.array([WORD_LOGIT_SCALE if t in favoured else 1.0 for t in tokens], dtype=np.float32)


def _tensor_shapes(shape: GgufShape, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """llama.cpp's tensor names with numpy shapes (ggml's dimensions reversed)."""
    q_out = shape.heads * shape.head_dim
    kv_out = shape.n_kv_heads * shape.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, shape.dim))]
    for i in range(shape.layers):
        out += [
            (f"blk.{i}.attn_norm.weight", (shape.dim,)),
            (f"blk.{i}.attn_q.weight", (q_out, shape.dim)),
            (f"blk.{i}.attn_k.weight", (kv_out, shape.dim)),
            (f"blk.{i}.attn_v.weight", (kv_out, shape.dim)),
            (f"blk.{i}.attn_output.weight", (shape.dim, q_out)),
            (f"blk.{i}.ffn_norm.weight", (shape.dim,)),
            (f"blk.{i}.ffn_gate.weight", (shape.n_ff, shape.dim)),
            (f"blk.{i}.ffn_up.weight", (shape.n_ff, shape.dim)),
            (f"blk.{i}.ffn_down.weight", (shape.dim, shape.n_ff)),
        ]
    out += [("output_norm.weight", (shape.dim,)), ("output.weight", (n_vocab, shape.dim))]
    return out


def _add_metadata(writer: gguf.GGUFWriter, shape: GgufShape, dtype: str, n_vocab: int) -> None:
    writer.add_name(f"voicechat random llama d{shape.dim} l{shape.layers}")
    writer.add_description("Random weights for tests and benchmarks; output is gibberish by design.")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(shape.ctx)
    writer.add_embedding_length(shape.dim)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)


def _add_tokenizer(writer: gguf.GGUFWriter) -> list[str]:
    tokens, scores, types = spm_vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_eot_token_id(IM_END_ID)
    writer.add_pad_token_id(UNK_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    return tokens


def write_random_gguf(
    path: str | Path,
    *,
    dim: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    ff: int | None = None,
    ctx: int = 2048,
    dtype: Literal["f32", "f16"] = "f32",
    seed: int = 0,
) -> Path:
    """Write a random-weight llama GGUF to ``path`` and return it; same arguments, same bytes."""
    if dtype not in ("f32", "f16"):
        raise ValueError(f"write_random_gguf: dtype must be 'f32' or 'f16', got {dtype!r}")
    shape = GgufShape(dim=dim, layers=layers, heads=heads, kv_heads=kv_heads, ff=ff, ctx=ctx)
    shape.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    matrix_type = np.float32 if dtype == "f32" else np.float16
    writer = gguf.GGUFWriter(path, "llama")
    try:
        tokens = _add_tokenizer(writer)
        _add_metadata(writer, shape, dtype, len(tokens))
        for name, tensor_shape in _tensor_shapes(shape, len(tokens)):
            if len(tensor_shape) == 1:  # norm weights stay F32 and near 1, as trained models have them
                data = 1.0 + 0.1 * rng.standard_normal(tensor_shape, dtype=np.float32)
            else:  # fan-in scaled so activations neither vanish nor explode through the layers
                data = rng.standard_normal(tensor_shape, dtype=np.float32) / np.float32(np.sqrt(tensor_shape[1]))
                if name == "output.weight":
                    data *= _output_row_scales(tokens)[:, None]
                data = data.astype(matrix_type)
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="GGUF file to write")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--ff", type=int, default=None, help="feed-forward size (default ~8/3 dim)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--dtype", choices=("f32", "f16"), default="f32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_random_gguf(
        args.out, dim=args.dim, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
        ff=args.ff, ctx=args.ctx, dtype=args.dtype, seed=args.seed,
    )
    print(f"{out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
