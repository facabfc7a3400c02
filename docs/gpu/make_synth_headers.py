"""Usage: python make_synth_headers.py SMOLLM2.gguf OUT_DIR

GGUF headers (metadata + tensor infos, no data) for the device to fill with random weights.

smollm2: the starter model's own header (its tokenizer, template, shapes and tensor types).
qwen1p5b: Qwen2.5-1.5B-Instruct's shapes (qwen2 arch, 28 layers, d 1536, 12/2 heads, ff 8960,
vocab 151936, tied output) with Q4_K_M's tensor types, SmolLM2's tokenizer padded to 151936 tokens.
"""
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

SRC = Path(sys.argv[1])
OUT = Path(sys.argv[2])
OUT.mkdir(parents=True, exist_ok=True)
r = gguf.GGUFReader(SRC)

# 1. smollm2: slice the header
hdr = SRC.read_bytes()[: r.data_offset]
(OUT / "smollm2.hdr").write_bytes(hdr)
rec = [{"name": t.name, "type": t.tensor_type.name, "nbytes": int(t.n_bytes), "offset": int(t.data_offset - r.data_offset)}
       for t in r.tensors]
(OUT / "smollm2.json").write_text(json.dumps({"data_start": r.data_offset, "tensors": rec}))


def field(name):
    f = r.fields[name]
    return f


def strings(name):
    f = r.fields[name]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def scalar(name):
    f = r.fields[name]
    return f.parts[f.data[0]][0]


tokens = strings("tokenizer.ggml.tokens")
types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
merges = strings("tokenizer.ggml.merges")
template = bytes(r.fields["tokenizer.chat_template"].parts[r.fields["tokenizer.chat_template"].data[0]]).decode()
N_VOCAB = 151936
pad = N_VOCAB - len(tokens)
tokens += [f"<dummy{i:06d}>" for i in range(pad)]
types += [int(gguf.TokenType.UNUSED)] * pad

DIM, LAYERS, HEADS, KV, FF = 1536, 28, 12, 2, 8960
HD = DIM // HEADS
w = gguf.GGUFWriter(OUT / "qwen1p5b.hdr", "qwen2")
w.add_name("random weights, Qwen2.5-1.5B-Instruct shapes, Q4_K_M tensor types")
w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
w.add_context_length(32768)
w.add_embedding_length(DIM)
w.add_block_count(LAYERS)
w.add_feed_forward_length(FF)
w.add_head_count(HEADS)
w.add_head_count_kv(KV)
w.add_rope_freq_base(1000000.0)
w.add_layer_norm_rms_eps(1e-6)
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre(bytes(r.fields["tokenizer.ggml.pre"].parts[r.fields["tokenizer.ggml.pre"].data[0]]).decode())
w.add_token_list(tokens)
w.add_token_types(types)
w.add_token_merges(merges)
for key, fn in (("tokenizer.ggml.bos_token_id", w.add_bos_token_id), ("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
                ("tokenizer.ggml.unknown_token_id", w.add_unk_token_id), ("tokenizer.ggml.padding_token_id", w.add_pad_token_id)):
    if key in r.fields:
        fn(int(scalar(key)))
w.add_chat_template(template)
w.add_quantization_version(2)

BLOCK = {"Q4_K": (256, 144), "Q6_K": (256, 210), "F32": (1, 4)}


def more_bits(i, n):  # llama.cpp's use_more_bits (Q4_K_M: attn_v and ffn_down get Q6_K in these layers)
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


tensors = [("token_embd.weight", (N_VOCAB, DIM), "Q6_K")]  # tied output: quantized as the output (Q6_K)
for i in range(LAYERS):
    tensors += [
        (f"blk.{i}.attn_norm.weight", (DIM,), "F32"),
        (f"blk.{i}.attn_q.weight", (DIM, DIM), "Q4_K"), (f"blk.{i}.attn_q.bias", (DIM,), "F32"),
        (f"blk.{i}.attn_k.weight", (KV * HD, DIM), "Q4_K"), (f"blk.{i}.attn_k.bias", (KV * HD,), "F32"),
        (f"blk.{i}.attn_v.weight", (KV * HD, DIM), "Q6_K" if more_bits(i, LAYERS) else "Q4_K"),
        (f"blk.{i}.attn_v.bias", (KV * HD,), "F32"),
        (f"blk.{i}.attn_output.weight", (DIM, DIM), "Q4_K"),
        (f"blk.{i}.ffn_norm.weight", (DIM,), "F32"),
        (f"blk.{i}.ffn_gate.weight", (FF, DIM), "Q4_K"), (f"blk.{i}.ffn_up.weight", (FF, DIM), "Q4_K"),
        (f"blk.{i}.ffn_down.weight", (DIM, FF), "Q6_K" if more_bits(i, LAYERS) else "Q4_K"),
    ]
tensors.append(("output_norm.weight", (DIM,), "F32"))
rec, off = [], 0
for name, shape, typ in tensors:
    n = int(np.prod(shape))
    per, size = BLOCK[typ]
    assert n % per == 0, (name, shape, typ)
    nbytes = n // per * size
    w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=getattr(Q, typ))
    rec.append({"name": name, "type": typ, "nbytes": nbytes, "offset": off})
    off += gguf.GGUFWriter.ggml_pad(nbytes, 32)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_ti_data_to_file()
w.close()
size = (OUT / "qwen1p5b.hdr").stat().st_size
(OUT / "qwen1p5b.json").write_text(json.dumps({"data_start": gguf.GGUFWriter.ggml_pad(size, 32), "tensors": rec}))
print("smollm2 header", len(hdr), "qwen1p5b header", size, "data", off / 2**20, "MiB")
