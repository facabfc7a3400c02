"""`python run.py bench tts`: time to first chunk and real-time factor of the TTS pool.

Runs N sentence jobs through a real TTSPool twice: one job at a time on one
worker (the latency a lone user sees), then K jobs in flight on K workers (a
busy server). Time to first chunk is measured from ``synthesize()`` to the first
chunk the caller receives, queueing included. Real-time factor = synthesis wall
time / seconds of audio produced (below 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from voicechat.bench import percentile
from voicechat.engines.protocols import VoiceSettings
from voicechat.tts.pool import PoolEngine, TTSPool

SENTENCES = (
    "Sure, I can help you with that.",
    "The weather tomorrow looks sunny with a light breeze in the afternoon.",
    "Your next train leaves at half past six from platform four.",
    "Here is a simple recipe: fry the onions, add the carrots, then pour in the stock.",
    "I did not catch that, could you say it again?",
    "Three plus four is seven.",
    "That is a great question, and the short answer is yes.",
    "Goodbye, and have a lovely evening.",
)


@dataclass(frozen=True, slots=True)
class JobTiming:
    first_chunk_s: float
    total_s: float
    audio_s: float


def run_jobs(pool: TTSPool, jobs: int, in_flight: int, voice: VoiceSettings) -> tuple[list[JobTiming], float]:
    """``jobs`` sentences with ``in_flight`` callers at once; returns timings and wall time."""
    lock = threading.Lock()
    next_job = iter(range(jobs))
    timings: list[JobTiming] = []

    def caller(n: int) -> None:
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            start = time.perf_counter()
            first, size = None, 0
            for chunk in pool.synthesize(f"bench-{n}", SENTENCES[i % len(SENTENCES)], voice, first_in_reply=True):
                if first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
            timing = JobTiming(first or 0.0, time.perf_counter() - start, size / 2 / pool.sample_rate)
            with lock:
                timings.append(timing)

    threads = [threading.Thread(target=caller, args=(n,), name=f"bench-tts-{n}") for n in range(in_flight)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return timings, time.perf_counter() - wall


def summarize(timings: list[JobTiming], wall_s: float) -> dict[str, float]:
    firsts = [t.first_chunk_s for t in timings]
    audio = sum(t.audio_s for t in timings)
    return {
        "jobs": len(timings),
        "first_chunk_ms_p50": percentile(firsts, 50) * 1000,
        "first_chunk_ms_p95": percentile(firsts, 95) * 1000,
        "rtf_per_job_p50": statistics.median(t.total_s / t.audio_s for t in timings if t.audio_s),
        "rtf_aggregate": wall_s / audio if audio else float("nan"),
        "audio_s": audio,
        "wall_s": wall_s,
    }


def default_voice(args: argparse.Namespace) -> str:
    if args.voice:
        return args.voice
    if args.engine == "piper":
        from voicechat.models.tiny.make_piper import DEFAULT_DIR, TINY_VOICE

        return str(DEFAULT_DIR / f"{TINY_VOICE}.onnx")
    return "af_heart" if args.engine == "kokoro" else "en-us"


def engine_factory(args: argparse.Namespace, voice: str) -> Callable[[], PoolEngine]:
    if args.engine == "espeak":
        from voicechat.tts.espeak_engine import EspeakEngine

        return lambda: EspeakEngine(voice, chunk_ms=args.chunk_ms)
    if args.engine == "piper":
        from voicechat.tts.piper_engine import PiperEngine, PiperVoices

        voices = PiperVoices(args.piper_voice_dir)
        return lambda: PiperEngine(voice, args.piper_voice_dir, chunk_ms=args.chunk_ms, voices=voices)
    from voicechat.tts.kokoro_engine import KokoroEngine

    return lambda: KokoroEngine(voice, args.kokoro_dir, chunk_ms=args.chunk_ms)


def run(args: argparse.Namespace) -> dict[str, object]:
    voice = default_voice(args)
    factory = engine_factory(args, voice)
    result: dict[str, object] = {"engine": args.engine, "voice": voice, "workers": args.workers,
                                 "chunk_ms": args.chunk_ms, "jobs": args.jobs}
    for label, workers in (("single", 1), ("parallel", args.workers)):
        pool = TTSPool(factory, workers=workers)
        try:
            run_jobs(pool, min(2, args.jobs), 1, VoiceSettings(voice))  # warm-up: imports, first spawn, caches
            timings, wall = run_jobs(pool, args.jobs, workers, VoiceSettings(voice))
        finally:
            pool.close()
        result[label] = summarize(timings, wall)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench tts", description=__doc__)
    parser.add_argument("--engine", choices=("espeak", "piper", "kokoro"), default="espeak")
    parser.add_argument("--workers", type=int, default=2, help="K: pool workers and jobs in flight (parallel run)")
    parser.add_argument("--jobs", type=int, default=40, help="sentences per run")
    parser.add_argument("--chunk-ms", type=int, default=20)
    parser.add_argument("--voice", default="", help="voice (default: en-us; the tiny voice for piper; af_heart)")
    parser.add_argument("--piper-voice-dir", default="models/piper")
    parser.add_argument("--kokoro-dir", default="models/kokoro-82m")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.jobs < 1:
        parser.error("--workers and --jobs must be at least 1")
    result = run(args)
    print(f"engine {result['engine']} ({result['voice']}), chunk {args.chunk_ms} ms, {args.jobs} sentences per run")
    print(f"{'run':22} {'TTFC p50 ms':>12} {'TTFC p95 ms':>12} {'RTF/job p50':>12} {'RTF total':>10}")
    for label, workers in (("single", 1), ("parallel", args.workers)):
        r = result[label]
        assert isinstance(r, dict)
        name = f"{label} (K={workers})"
        print(f"{name:22} {r['first_chunk_ms_p50']:12.1f} {r['first_chunk_ms_p95']:12.1f} "
              f"{r['rtf_per_job_p50']:12.4f} {r['rtf_aggregate']:10.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
