"""`python run.py bench stt`: finals of N sessions decoded in one batch vs one by one.

Every session's utterance is a different espeak-ng sentence. The same model,
in the same run, decodes them (a) as one batch, the way the shared scheduler
does when N users end their turns together, and (b) one after another, the way
a per-user pipeline would. Rounds alternate so machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from voicechat.audio import pcm16_to_float
from voicechat.engines.protocols import SpeechInput
from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k
from voicechat.stt.whisper_model import FasterWhisperModel


def measure(model: FasterWhisperModel, sessions: int, rounds: int) -> dict[str, object]:
    inputs = [
        SpeechInput(f"s{i}", pcm16_to_float(speech_16k(SAMPLE_SENTENCES[i % len(SAMPLE_SENTENCES)])), True, "en")
        for i in range(sessions)
    ]
    model.transcribe_batch(inputs[:1])  # warm up
    batched: list[float] = []
    serial: list[float] = []
    same = True
    for _ in range(rounds):
        t = time.perf_counter()
        together = model.transcribe_batch(inputs)
        batched.append(time.perf_counter() - t)
        t = time.perf_counter()
        alone = [model.transcribe_batch([item])[0] for item in inputs]
        serial.append(time.perf_counter() - t)
        same = same and together == alone
    b, s = statistics.median(batched), statistics.median(serial)
    return {
        "sessions": sessions,
        "rounds": rounds,
        "batched_s": round(b, 4),
        "one_by_one_s": round(s, 4),
        "speedup": round(s / b, 2),
        "same_texts": same,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench stt", description=__doc__)
    parser.add_argument("--model", default=None, help="CTranslate2 Whisper directory (default: the tiny one)")
    parser.add_argument("--sessions", default="8", help="comma-separated session counts, e.g. 1,4,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="cpu_threads for CTranslate2 (0 = automatic)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="as stt.device")
    parser.add_argument("--compute-type", default="default",
                        help="as stt.compute_type (auto: float16 on a GPU, int8 on a CPU; default: the model's own)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument(
        "--max-tokens", type=int, default=32,
        help="tokens decoded per utterance (random models never stop by themselves; a spoken sentence is ~20-30)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.model is None:
        from voicechat.models.tiny import tiny_whisper_path

        args.model = str(tiny_whisper_path())
    model = FasterWhisperModel(
        args.model, device=args.device, compute_type=args.compute_type, cpu_threads=args.threads,
        beam_size=args.beam_size, max_new_tokens=args.max_tokens,
    )
    results = [measure(model, int(n), args.rounds) for n in args.sessions.split(",")]
    for r in results:
        print(
            f"{r['sessions']} sessions: batched {r['batched_s'] * 1000:.0f} ms, one by one "
            f"{r['one_by_one_s'] * 1000:.0f} ms, speedup {r['speedup']}x, same texts: {r['same_texts']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            ct2 = model.model.model
            report = {"model": args.model, "beam_size": args.beam_size, "max_tokens": args.max_tokens,
                      "device": ct2.device, "compute_type": ct2.compute_type}
            json.dump({**report, "results": results}, f, indent=2)
    return 0
