"""`python run.py bench llm`: what continuous batching and per-session KV reuse buy.

Two measurements, each against the baseline peers use, measured in the same run on the same
engine:

- concurrency: N sessions ask at once; aggregate tokens/s and time to first token (p50/p95),
  batched (all N decode together) vs. one request at a time (the others wait their turn);
- a conversation growing to 1000+ tokens of history: time to first token at each turn, with the
  session's KV kept (only the new messages are prefilled) vs. the whole history re-prefilled.

Without ``--model`` a random F16 GGUF (d 768, 8 layers, about 114 MB) is written once into the
cache directory: random weights, real compute. Replies are forced to ``--tokens`` tokens (end of
generation ignored) so every run does the same work. ``--n-gpu-layers`` is ``llm.n_gpu_layers``
(-1 = all layers on the GPU; needs a GPU build of llama-cpp-python, README "GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from voicechat.bench import percentile
from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import GenerationParams
from voicechat.llm.llama_context import BatchToken, LlamaContext
from voicechat.llm.llama_engine import LlamaCppEngine
from voicechat.llm.scheduler import LlmEvent

BENCH_SHAPE = {"dim": 768, "layers": 8, "heads": 12, "dtype": "f16", "ctx": 8192}
# Written in the random model's vocabulary words so prompts tokenize about as compactly as with a real
# model's tokenizer (out-of-vocabulary words fall back to one token per character).
SYSTEM = "you are here to help. tell people what they want to know, and be very good about it."
TOPICS = ["weather", "music", "people", "work", "time", "name", "day", "year"]


def default_model() -> Path:
    """The benchmark's random GGUF, written on first use (about a second)."""
    from voicechat.models.tiny.gguf_maker import write_random_gguf

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "voicechat"
    path = cache / "bench-llm-d768-l8-f16.gguf"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_random_gguf(tmp, **BENCH_SHAPE)
        tmp.replace(path)
    return path


class TokenTimes:
    """When each token of each session's current request arrived (listener on the scheduler thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: dict[str, list[float]] = {}

    def __call__(self, event: LlmEvent) -> None:
        if event.kind == "token":
            now = time.perf_counter()
            with self._lock:
                self._times.setdefault(event.session_id, []).append(now)

    def reset(self, session_id: str) -> None:
        with self._lock:
            self._times.pop(session_id, None)

    def first(self, session_id: str) -> float:
        with self._lock:
            return self._times[session_id][0]

    def steady_rate(self, ids: list[str]) -> float:
        """Tokens/s once every session has its first token (all of them decoding together)."""
        with self._lock:
            start = max(self._times[sid][0] for sid in ids)
            end = max(self._times[sid][-1] for sid in ids)
            count = sum(1 for sid in ids for t in self._times[sid] if t > start)
        return count / (end - start) if end > start else 0.0


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@dataclass
class Round:
    tokens_per_s: list[float] = field(default_factory=list)
    decode_tokens_per_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)

    def add(self, tokens_per_s: float, decode_tokens_per_s: float, ttft_s: list[float]) -> None:
        self.tokens_per_s.append(tokens_per_s)
        self.decode_tokens_per_s.append(decode_tokens_per_s)
        self.ttft_s += ttft_s

    def summary(self) -> dict[str, float]:
        return {
            "tokens_per_s": median(self.tokens_per_s),  # arrival to last token, prompts included
            "decode_tokens_per_s": median(self.decode_tokens_per_s),  # once every session has started
            "ttft_ms_p50": percentile(self.ttft_s, 50) * 1000,
            "ttft_ms_p95": percentile(self.ttft_s, 95) * 1000,
        }


def user_prompt(i: int) -> list[ChatMessage]:
    topic = TOPICS[i % len(TOPICS)]
    return [ChatMessage("system", SYSTEM), ChatMessage("user", f"hello, {i}: tell me about the {topic} today, please.")]


def concurrency_round(engine: LlamaCppEngine, marks: TokenTimes, n: int, tokens: int, batched: bool,
                      tag: str) -> tuple[float, float, list[float]]:
    """N sessions arriving together: aggregate tokens/s (end to end, and steady decoding once all
    have started) and each one's time to first token."""
    params = GenerationParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    ids = [f"{tag}-{i}" for i in range(n)]
    for sid in ids:
        marks.reset(sid)
    t0 = time.perf_counter()
    if batched:
        streams = [engine.stream(sid, user_prompt(i), params) for i, sid in enumerate(ids)]
        for stream in streams:
            for _ in stream:
                pass
    else:  # one request at a time: the others wait their turn
        for i, sid in enumerate(ids):
            for _ in engine.stream(sid, user_prompt(i), params):
                pass
    elapsed = time.perf_counter() - t0
    steady = marks.steady_rate(ids)
    firsts = [marks.first(sid) - t0 for sid in ids]
    for sid in ids:
        engine.release(sid)
    return n * tokens / elapsed, steady, firsts


def conversation(engine: LlamaCppEngine, marks: TokenTimes, turns: int, reply_tokens: int,
                 keep_kv: bool) -> list[dict[str, float]]:
    """One session talking for ``turns`` turns; the history grows by ~100 tokens a turn."""
    params = GenerationParams(temperature=0.0, max_tokens=reply_tokens, ignore_eos=True)
    sid = "conversation-kv" if keep_kv else "conversation-baseline"
    messages = [ChatMessage("system", SYSTEM)]
    rows = []
    for turn in range(1, turns + 1):
        topic = TOPICS[turn % len(TOPICS)]
        messages.append(ChatMessage("user", (
            f"Turn {turn}. I would like to know more about the {topic} where I live, and what people "
            f"think about it this year; also tell me what I should do about my work and time today, "
            f"because I have to think about it now. Question {turn}: what is your good advice?")))
        if not keep_kv:
            engine.release(sid)  # the peers' way: nothing kept, the whole history prefilled again
        marks.reset(sid)
        prompt_tokens = len(engine.prompt_tokens(sid, messages, params))
        t0 = time.perf_counter()
        reply = "".join(engine.stream(sid, messages, params))
        rows.append({
            "turn": turn,
            "prompt_tokens": prompt_tokens,
            "prefill_tokens": engine.last_prefill_tokens(sid) or 0,
            "ttft_ms": (marks.first(sid) - t0) * 1000,
        })
        messages.append(ChatMessage("assistant", reply.strip() or "okay"))
    engine.release(sid)
    return rows


def raw_decode_rates(model: Path, sessions: list[int], context_len: int, threads: int, n_ctx: int,
                     steps: int = 32, n_gpu_layers: int = 0) -> tuple[dict[int, float], float]:
    """The ceiling: bare ``llama_decode`` steps of N sequences already holding ``context_len`` tokens
    each (no scheduler, no sampling), so the engine's numbers can be told apart from llama.cpp's.
    Also returns the prefill rate: one 512-token prompt decoded in one batch (best of 3), tokens/s."""
    ctx = LlamaContext(model, n_ctx=n_ctx, n_seq_max=max(sessions), n_batch=512, n_threads=threads,
                       n_gpu_layers=n_gpu_layers)
    rates = {}
    try:
        prefill = min(512, n_ctx // max(sessions))
        best = float("inf")
        for _ in range(3):
            ctx.seq_rm(0)
            t0 = time.perf_counter()
            ctx.decode([BatchToken(300 + pos % 300, pos, 0, logits=pos == prefill - 1) for pos in range(prefill)])
            best = min(best, time.perf_counter() - t0)
        prefill_rate = prefill / best
        for n in sessions:
            for seq in range(n):
                ctx.seq_rm(seq)
                for start in range(0, context_len, 512):
                    chunk = range(start, min(start + 512, context_len))
                    ctx.decode([BatchToken(300 + pos % 300, pos, seq) for pos in chunk])
            t0 = time.perf_counter()
            for step in range(steps):
                ctx.decode([BatchToken(300 + step, context_len + step, seq, logits=True) for seq in range(n)])
            rates[n] = n * steps / (time.perf_counter() - t0)
    finally:
        ctx.close()
    return rates, prefill_rate


def run(model: Path, sessions: list[int], tokens: int, repeat: int, turns: int, threads: int,
        n_ctx: int, n_gpu_layers: int = 0) -> dict:
    marks = TokenTimes()
    engine = LlamaCppEngine(model, n_ctx=n_ctx, n_seq_max=max(sessions), n_threads=threads,
                            n_gpu_layers=n_gpu_layers, on_event=marks)
    try:
        concurrency_round(engine, marks, 1, 8, True, "warm-up")
        rows = []
        for n in sessions:
            batched, sequential = Round(), Round()
            for r in range(repeat):
                for mode, acc in ((True, batched), (False, sequential)):
                    acc.add(*concurrency_round(engine, marks, n, tokens, mode, f"n{n}-{mode}-{r}"))
            rows.append({"sessions": n, "batched": batched.summary(), "one_at_a_time": sequential.summary()})
        kept = conversation(engine, marks, turns, 32, keep_kv=True)
        baseline = conversation(engine, marks, turns, 32, keep_kv=False)
        stats = engine.stats()
        n_threads = engine.n_threads
        prompt_len = len(engine.prompt_tokens("raw", user_prompt(0), GenerationParams(max_tokens=tokens)))
    finally:
        engine.close()
    raw, prefill_rate = raw_decode_rates(model, sessions, prompt_len + tokens // 2, n_threads, n_ctx,
                                         n_gpu_layers=n_gpu_layers)
    for row in rows:
        row["raw_decode_tokens_per_s"] = raw[row["sessions"]]
    by_n = {row["sessions"]: row["batched"] for row in rows}
    result = {
        "model": str(model),
        "model_mb": round(model.stat().st_size / 2**20, 1),
        "threads": n_threads,
        "n_gpu_layers": n_gpu_layers,
        "tokens_per_reply": tokens,
        "repeat": repeat,
        "concurrency": rows,
        "conversation": {"kv_kept": kept, "baseline_reprefill": baseline},
        "decode_tokens_per_s_overall": round(stats.tokens_per_s, 1),
        "raw_prefill_tokens_per_s": round(prefill_rate, 1),
    }
    if 1 in by_n and max(sessions) > 1:
        top, one = by_n[max(sessions)], by_n[1]
        result["batched_speedup_max_vs_1"] = top["tokens_per_s"] / one["tokens_per_s"]
        result["batched_decode_speedup_max_vs_1"] = top["decode_tokens_per_s"] / one["decode_tokens_per_s"]
        result["raw_decode_speedup_max_vs_1"] = raw[max(sessions)] / raw[1]
    result["ttft_turn_last_vs_1"] = kept[-1]["ttft_ms"] / kept[0]["ttft_ms"]
    result["baseline_ttft_turn_last_vs_1"] = baseline[-1]["ttft_ms"] / baseline[0]["ttft_ms"]
    return result


def print_report(result: dict) -> None:
    print(f"model {result['model']} ({result['model_mb']} MB), {result['threads']} threads, "
          f"n_gpu_layers {result['n_gpu_layers']}, {result['tokens_per_reply']} tokens per reply, "
          f"median of {result['repeat']}")
    print("tok/s: end to end (arrival to last token) / steady decoding (once every session has its first token)")
    print(f"{'sessions':>8} | {'batched tok/s':>15} {'TTFT p50':>9} {'p95':>7} | "
          f"{'one-at-a-time tok/s':>19} {'TTFT p50':>9} {'p95':>7} | {'raw decode':>10}")
    for row in result["concurrency"]:
        b, s = row["batched"], row["one_at_a_time"]
        print(f"{row['sessions']:>8} | {b['tokens_per_s']:>7.1f}/{b['decode_tokens_per_s']:<7.1f} "
              f"{b['ttft_ms_p50']:>7.0f}ms {b['ttft_ms_p95']:>5.0f}ms"
              f" | {s['tokens_per_s']:>9.1f}/{s['decode_tokens_per_s']:<9.1f} "
              f"{s['ttft_ms_p50']:>7.0f}ms {s['ttft_ms_p95']:>5.0f}ms | {row['raw_decode_tokens_per_s']:>10.1f}")
    if "batched_speedup_max_vs_1" in result:
        print(f"batched speedup, most sessions vs one: {result['batched_speedup_max_vs_1']:.2f}x end to end, "
              f"{result['batched_decode_speedup_max_vs_1']:.2f}x steady decoding (target >= 3x); "
              f"bare llama_decode at the same context: {result['raw_decode_speedup_max_vs_1']:.2f}x")
    print(f"bare llama_decode prefill, one 512-token prompt: {result['raw_prefill_tokens_per_s']:.0f} tokens/s")
    print(f"{'turn':>4} {'prompt':>6} | {'KV kept: prefill':>16} {'TTFT':>8} | {'baseline: prefill':>17} {'TTFT':>8}")
    conv = result["conversation"]
    for kept, base in zip(conv["kv_kept"], conv["baseline_reprefill"], strict=True):
        print(f"{kept['turn']:>4} {kept['prompt_tokens']:>6} | {kept['prefill_tokens']:>16} {kept['ttft_ms']:>6.0f}ms"
              f" | {base['prefill_tokens']:>17} {base['ttft_ms']:>6.0f}ms")
    print(f"TTFT last turn / turn 1: KV kept {result['ttft_turn_last_vs_1']:.2f}x (target <= 1.5x), "
          f"baseline {result['baseline_ttft_turn_last_vs_1']:.2f}x")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench llm", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: a random d768 8-layer F16 model)")
    parser.add_argument("--sessions", default="1,2,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per reply")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per concurrency level (median reported)")
    parser.add_argument("--turns", type=int, default=10, help="turns of the growing conversation")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = automatic)")
    parser.add_argument("--n-ctx", type=int, default=8192, help="context size shared by all sessions")
    parser.add_argument("--n-gpu-layers", type=int, default=0,
                        help="layers offloaded to the GPU, as llm.n_gpu_layers (-1 = all; needs a GPU build)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    try:
        sessions = sorted({int(s) for s in args.sessions.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sessions must be comma-separated integers, got {args.sessions!r}")
    if not sessions or min(sessions) < 1:
        parser.error("--sessions needs positive integers")
    model = args.model or default_model()
    if not model.is_file():
        parser.error(f"--model {model}: no such GGUF file")
    if args.n_gpu_layers < -1:
        parser.error("--n-gpu-layers must be -1 (all) or more")
    result = run(model, sessions, args.tokens, args.repeat, args.turns, args.threads, args.n_ctx, args.n_gpu_layers)
    print_report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
