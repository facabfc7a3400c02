"""Device check: does the product's LlamaContext offload with llm.n_gpu_layers = -1, and do GPU and CPU agree?

Usage: python offload_check.py MODEL.gguf OUT_JSON
"""
import json
import logging
import sys
import time

import llama_cpp as ll

from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_context import BatchToken, LlamaContext, Sampler


def greedy(model, layers, n=32):
    ctx = LlamaContext(model, n_ctx=1024, n_seq_max=1, n_batch=512, n_gpu_layers=layers)
    sampler = Sampler(GenerationParams(temperature=0.0), ctx.n_vocab)
    prompt = ctx.tokenize("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    t0 = time.perf_counter()
    ctx.decode([BatchToken(t, i, 0, logits=i == len(prompt) - 1) for i, t in enumerate(prompt)])
    out = [sampler.sample(ctx, len(prompt) - 1)]
    for step in range(n - 1):
        ctx.decode([BatchToken(out[-1], len(prompt) + step, 0, logits=True)])
        out.append(sampler.sample(ctx, 0))
    elapsed = time.perf_counter() - t0
    text = b"".join(ctx.piece(t) for t in out).decode("utf-8", "replace")
    sampler.close()
    ctx.close()
    return {"layers": layers, "tokens": out, "text": text, "seconds": round(elapsed, 3)}


def main(model, out_json):
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("llama-cpp-python").setLevel(logging.INFO)  # llama.cpp's own load log, to stderr
    result = {"supports_gpu_offload": bool(ll.llama_supports_gpu_offload()), "max_devices": int(ll.llama_max_devices())}
    print(json.dumps(result), flush=True)
    gpu = greedy(model, -1)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    cpu = greedy(model, 0)
    same = 0
    for a, b in zip(gpu["tokens"], cpu["tokens"]):
        if a != b:
            break
        same += 1
    result.update(gpu=gpu, cpu=cpu, same_leading_tokens=same)
    print(json.dumps({k: v for k, v in result.items()}, ensure_ascii=False)[:3000], flush=True)
    json.dump(result, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
