"""`python run.py bench load`: many concurrent browser sessions against the real server.

Starts `run.py` on loopback in its own process (the same code path as
`serve`), then N simulated browsers speak the WebSocket protocol to it: each
streams distinct speech at real-time pace in 20 ms frames with an open
microphone, for several turns, interrupting some replies on purpose.
Reports v2v, overhead and barge-in latency (definitions in load_stats.py),
transcript accuracy, dropped frames, queue evictions, the server's CPU (per
thread group), memory per session and threads; ``--churn`` adds
connect/speak/leave cycles and reports what they left behind. Several
``--sessions`` values (``10,30,50``) give the capacity curve; ``--shards 1,2`` spreads
the sessions over one and two server processes in turn.

Engines: ``scripted`` (test doubles, the framework's own cost: espeak-ng sentences),
``tiny`` (the shipped random models), ``starter`` (the real starter model set,
``models.set = starter``; the users ask questions in Piper's joe voice, which the
real Whisper can transcribe).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil

from voicechat.bench.load_client import ClientResult, MicrophoneBank, SimulatedUser, Utterance, utterance
from voicechat.bench.load_plan import LoadPlan, plan_variants
from voicechat.bench.load_server import BenchServer, ServerGroup, evictions
from voicechat.bench.load_stats import capacity, cpu_by_group, quantiles, stall_summary, summarise_turns
from voicechat.bench.onset_floor import onset_floor_ms
from voicechat.models.store import PROJECT_ROOT
from voicechat.speech_samples import SAMPLE_QUESTIONS, SAMPLE_SENTENCES, piper_speech_16k, speech_16k

CHURN_PARALLEL = 10
# Real models serve a burst of ten users ending their turns together with timeouts: warm them with two.
WARM_PARALLEL_REAL = 2
# Users start over this many seconds (about one turn), so that their turns do not all end in step.
START_SPREAD_S = 4.0
SAMPLES = ("v2v_samples_ms", "barge_in_samples_ms", "turn_samples")  # per-turn data: in --json, not printed


def script(engines: str = "scripted", gains: int = 4) -> list[Utterance]:
    """What the users say, at a few levels: the 20 espeak-ng sample sentences (the scripted STT knows them),
    or for real models the sample questions in the starter set's Piper voice."""
    if engines == "starter":
        speech = dict(zip(SAMPLE_QUESTIONS, piper_speech_16k(SAMPLE_QUESTIONS, voice_dir=PROJECT_ROOT / "models/piper"),
                          strict=True))
    else:
        speech = {text: speech_16k(text) for text in SAMPLE_SENTENCES}
    return [utterance(text, pcm, 1.0 - 0.12 * (i % gains)) for i, (text, pcm) in enumerate(speech.items())]


async def _load_phase(server: BenchServer | ServerGroup, plan: LoadPlan, n: int,
                      speech: list[Utterance]) -> dict[str, object]:
    connected = [asyncio.Event() for _ in range(n)]
    go = asyncio.Event()
    users = [
        SimulatedUser(
            i, *server.address(i), speech, turns=max(plan.min_turns, 1000), min_turns=plan.min_turns,
            barge_every=plan.barge_every, start_delay_s=(i / max(n, 1)) * START_SPREAD_S,
            deadline_s=plan.seconds, check_text=plan.engines == "scripted",
        )
        for i in range(n)
    ]
    bank = MicrophoneBank()
    tasks = [asyncio.create_task(u.run(connected[i], go, bank)) for i, u in enumerate(users)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), 120)
    loaded_rss = server.rss_mb()
    me = psutil.Process()
    metrics0 = server.metrics()
    threads0, stt0, llm0 = server.thread_cpu(), stt_work(metrics0), llm_work(metrics0)
    cpu0, mine0, wall0 = server.cpu_seconds(), sum(me.cpu_times()[:2]), time.monotonic()
    bank_task = asyncio.create_task(bank.run())
    go.set()
    results: list[ClientResult] = await asyncio.gather(*tasks)
    wall = time.monotonic() - wall0
    server_cpu_s, threads1, metrics1 = server.cpu_seconds() - cpu0, server.thread_cpu(), server.metrics()
    stt1, llm1 = stt_work(metrics1), llm_work(metrics1)
    bank_task.cancel()
    await asyncio.gather(bank_task, return_exceptions=True)
    return {
        "results": results, "rss_loaded": max(loaded_rss, server.rss_mb()), "late_ticks": bank.late_ticks,
        "cpu": server_cpu_s / wall * 100, "client_cpu": (sum(me.cpu_times()[:2]) - mine0) / wall * 100,
        "cpu_by_thread": cpu_by_group(threads0, threads1, server_cpu_s, wall),
        "stt_work": {key: round(stt1.get(key, 0) - stt0.get(key, 0), 2) for key in stt1},
        "llm_work": {key: round(llm1.get(key, 0) - llm0.get(key, 0), 2) for key in llm1},
    }


def stt_work(metrics: dict[str, float]) -> dict[str, float]:
    """The STT scheduler's counters from a /metrics scrape: transcripts and busy seconds by kind, drops, stalls."""
    found = {}
    for kind in ("final", "partial"):
        found[f"{kind}s"] = metrics.get(f"voicechat_stt_transcripts_total{{kind={kind}}}", 0.0)
        found[f"{kind}_busy_s"] = metrics.get(f"voicechat_stt_busy_seconds_total{{kind={kind}}}", 0.0)
    found["partials_dropped"] = metrics.get("voicechat_stt_partials_dropped_total", 0.0)
    found["stalls"] = metrics.get("voicechat_stt_stalls_total", 0.0)
    found["final_wait_s"] = metrics.get("voicechat_stt_final_wait_seconds_total", 0.0)
    found["finals_behind_partial"] = metrics.get("voicechat_stt_finals_behind_partial_total", 0.0)
    return found


def llm_work(metrics: dict[str, float]) -> dict[str, float]:
    """The LLM scheduler's counters from a /metrics scrape (empty for engines without them): tokens by kind,
    admissions and those that prefilled over 64 tokens, steps, seconds decoding and steps over 0.25 s."""
    if "voicechat_llm_step_seconds_count" not in metrics:
        return {}
    found = {kind: metrics.get(f"voicechat_llm_tokens_total{{kind={kind}}}", 0.0)
             for kind in ("generated", "prefilled", "reused", "dropped")}
    admissions = metrics["voicechat_llm_admission_prefill_tokens_count"]
    steps = metrics["voicechat_llm_step_seconds_count"]
    found["admissions"] = admissions
    found["admissions_over_64"] = admissions - metrics["voicechat_llm_admission_prefill_tokens_bucket{le=64.0}"]
    found["steps"] = steps
    found["decode_s"] = metrics["voicechat_llm_step_seconds_sum"]
    found["steps_over_250ms"] = steps - metrics["voicechat_llm_step_seconds_bucket{le=0.25}"]
    found["alone_steps"] = metrics.get("voicechat_llm_alone_steps_total", 0.0)
    return found


async def _churn(server: BenchServer | ServerGroup, cycles: int, speech: list[Utterance],
                 parallel: int = CHURN_PARALLEL) -> list[str]:
    """``cycles`` times: connect, speak, leave as soon as the reply starts; ``parallel`` at once."""
    errors: list[str] = []
    counter = iter(range(cycles))

    async def cycler() -> None:
        for i in counter:
            user = SimulatedUser(i, *server.address(i), speech, turns=1, barge_every=0, leave_mid_reply=True,
                                 check_text=False)
            errors.extend((await user.run()).errors)

    await asyncio.gather(*(cycler() for _ in range(min(parallel, cycles))))
    return errors


def run_one(plan: LoadPlan, n: int, churn: int, speech: list[Utterance]) -> dict[str, object]:
    """One fresh server (or ``plan.shards`` of them): warm-up, N sessions under load, churn, then what is left."""
    with tempfile.TemporaryDirectory(prefix="voicechat-bench-") as tmp, _servers(plan, n, Path(tmp)) as server:
        # Imports, first-use costs and the server's bounded worker pools are not per session: one
        # round of parallel sessions first, then the baseline.
        warm = CHURN_PARALLEL if plan.engines == "scripted" else WARM_PARALLEL_REAL
        warm_errors = asyncio.run(_churn(server, warm, speech, warm))
        server.wait_sessions(0)
        threads_before, native_before = server.settled_threads(), server.threads()
        rss_before, metrics0 = server.rss_mb(), server.metrics()
        phase = asyncio.run(_load_phase(server, plan, n, speech))
        results: list[ClientResult] = phase["results"]  # type: ignore[assignment]
        server.wait_sessions(0)
        rss_before_churn = server.rss_mb()
        churn_errors = asyncio.run(_churn(server, churn, speech)) if churn else []
        left = server.wait_sessions(0)
        threads_after, native_after = server.settled_threads(), server.threads()
        rss_after, metrics1 = server.rss_mb(), server.metrics()
    stderr = server.stderr_tail(200)
    lines = stderr.splitlines()
    crashed = ["\n".join(lines[i : i + 25]) for i, line in enumerate(lines) if re.search(r"Traceback|CRITICAL", line)]
    ev0, ev1 = evictions(metrics0), evictions(metrics1)
    evicted = {q: ev1.get(q, 0) - ev0.get(q, 0) for q in ev1}
    rate_dropped = int(metrics1.get("voicechat_protocol_errors_total{code=rate_limited}", 0)
                       - metrics0.get("voicechat_protocol_errors_total{code=rate_limited}", 0))
    errors = [e for r in results for e in r.errors]
    turns = [t for r in results for t in r.turns]
    summary = summarise_turns(turns, plan.delays)
    return {
        "sessions": n,
        "engines": plan.engines,
        "turns": summary["turns"],
        "errors": len(errors) + len(crashed) + len(warm_errors) + (left != 0),
        "overhead_ms": summary["overhead_ms"],
        "v2v_ms": summary["v2v_ms"],
        "barge_in_ms": summary["barge_in_ms"],
        "dropped_frames": evicted.get("capture", 0) + rate_dropped + sum(r.audio_gaps for r in results),
        "evicted_items": sum(evicted.values()),
        "reply_stalls": stall_summary([ms for r in results for ms in r.stalls_ms]),
        "server_cpu_percent": round(float(phase["cpu"]), 1),  # type: ignore[arg-type]
        "accuracy": summary["accuracy"],
        "cpu_by_thread_percent": phase["cpu_by_thread"],
        "stt_work": phase["stt_work"],
        "llm_work": phase["llm_work"],
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
        "rss_mb_per_session": round((float(phase["rss_loaded"]) - rss_before) / n, 2),  # type: ignore[arg-type]
        "threads_before": sum(threads_before.values()),
        "threads_after": sum(threads_after.values()),
        "leaked_threads": sum(threads_after.values()) - sum(threads_before.values()),
        "thread_groups_changed": {
            name: threads_after.get(name, 0) - threads_before.get(name, 0)
            for name in sorted(threads_before.keys() | threads_after.keys())
            if threads_after.get(name, 0) != threads_before.get(name, 0)
        },
        "native_threads_before": native_before,
        "native_threads_after": native_after,
        # The churn's own growth: from after the load phase (whose peak the allocator keeps) to the end.
        "churn": {"cycles": churn, "errors": len(churn_errors), "rss_growth_mb": round(rss_after - rss_before_churn, 1),
                  "rss_mb_before_churn": round(rss_before_churn, 1)} if churn else None,
        "turns_started": summary["turns_started"],
        "barge_ins": summary["barge_ins"],
        "late_barge_ins": sum(r.late_barges for r in results),  # began after the reply had played out
        "end_of_turn_silence_ms": summary["end_of_turn_silence_ms"],
        "overhead_ms_by_turn": summary["overhead_ms_by_turn"],
        "server_path_ms": summary["server_path_ms"],
        "client_cpu_percent": round(float(phase["client_cpu"]), 1),  # type: ignore[arg-type]
        "client_late_ticks": phase["late_ticks"],
        "evicted_by_queue": evicted,
        "breakdown_ms_p50": summary["breakdown_ms_p50"],
        "breakdown_ms_p95": summary["breakdown_ms_p95"],
        "timeline_ms": summary["timeline_ms"],
        "delays_ms": plan.delays.total_ms,
        "error_samples": (errors + churn_errors + crashed + warm_errors)[:10],
        "v2v_samples_ms": [round(t.v2v_ms, 1) for t in turns if t.v2v_ms is not None],
        "turn_samples": [
            {"session": t.session, "turn": t.index, "said": t.sentence, "heard": t.transcript, "reply": t.reply[:160],
             "stall_ms": t.stall_ms, "barged": t.barged,
             "interrupted": t.interrupted_at is not None,
             "v2v_ms": round(t.v2v_ms, 1) if t.v2v_ms is not None else None,
             "breakdown_ms": {k: round(v, 1) for k, v in t.breakdown_ms().items()},
             "timeline_ms": {k: round(v, 1) for k, v in t.timeline_ms().items()}, "end_of_turn": t.end_of_turn}
            for t in turns
        ],
        "barge_in_samples_ms": [round(t.barge_in_ms, 1) for t in turns if t.barge_in_ms is not None],
    }


def run(plan: LoadPlan, sessions: list[int], churn: int, frontends: list[str] | None = None,
        compare: tuple[str, list[str]] | None = None, remote: dict[str, str] | None = None,
        shards: list[int] | None = None) -> dict[str, object]:
    """The first N with churn (the headline figures), then the rest of the capacity sweep.

    With several variants (front ends, and/or the values of one setting to ``compare``), each N runs
    on each variant in turn (alternating, so that they see the same machine state) and the result
    holds one such report per variant under "frontends", keyed by its label. With ``remote`` (the
    settings that point the server at engine servers, ``deploy/engine_servers.py``) every variant runs
    in-process and remote.
    """
    speech = script(plan.engines)
    variants = plan_variants(plan, frontends or [plan.frontend], compare, shards)
    if remote is not None:
        extra = tuple(f"{k}={v}" for k, v in remote.items())
        variants = {f"{label} {where}".strip(): replace(v, extra=(*v.extra, *extra) if where == "remote" else v.extra)
                    for label, v in variants.items() for where in ("in-process", "remote")}
    runs: dict[str, list[dict[str, object]]] = {label: [] for label in variants}
    for i, n in enumerate(sessions):
        for label, variant in variants.items():
            runs[label].append(run_one(variant, n, churn if i == 0 else 0, speech))
    reports = {label: _report(label_runs) for label, label_runs in runs.items()}
    for label, variant in variants.items():
        if variant.frontend == "batched":
            reports[label]["barge_in_floor_ms"] = quantiles(onset_floor_ms(speech, *variant.onset_rules))
    if len(reports) == 1:
        return next(iter(reports.values()))
    return {"frontends": reports, "errors": sum(int(r["errors"]) for r in reports.values())}  # type: ignore[call-overload]


def _servers(plan: LoadPlan, n: int, tmp: Path) -> BenchServer | ServerGroup:
    settings, scripted = plan.server_settings(n + CHURN_PARALLEL + 2), plan.engines == "scripted"
    if plan.shards == 1:
        return BenchServer(tmp, settings, scripted=scripted)
    dirs = [tmp / f"shard{k}" for k in range(plan.shards)]
    for d in dirs:
        d.mkdir()
    return ServerGroup([BenchServer(d, settings, scripted=scripted) for d in dirs])


def _report(runs: list[dict[str, object]]) -> dict[str, object]:
    result = dict(runs[0])
    if len(runs) > 1:
        result["sweep"] = list(runs)  # each with its own per-turn samples (in --json only)
        result["capacity"] = capacity(runs)
    return result


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"takes positive integers separated by commas, not {text!r}")
    return values


def _frontends(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in ("batched", "realtimestt") for v in values):
        raise argparse.ArgumentTypeError(f"--frontend takes batched, realtimestt or both, not {text!r}")
    return values


def _compare(text: str) -> tuple[str, list[str]]:
    key, _, values = text.partition("=")
    options = [v.strip() for v in values.split(",") if v.strip()]
    if not key.strip() or len(options) < 2:
        raise argparse.ArgumentTypeError(f"--compare takes KEY=VALUE1,VALUE2[,...], not {text!r}")
    return key.strip(), options


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", choices=["scripted", "tiny", "starter"], default="scripted",
                        help="scripted test doubles, the shipped tiny random models, or the real starter set")
    parser.add_argument("--sessions", type=_counts, default=[30], help="N, or N1,N2,... for the capacity curve")
    parser.add_argument("--seconds", type=float, default=20.0, help="clients start new turns for this long")
    parser.add_argument("--turns", type=int, default=3, help="turns each client speaks at least")
    parser.add_argument("--churn", type=int, default=0, help="connect/speak/leave cycles after the load phase")
    parser.add_argument("--barge-every", type=int, default=2, help="interrupt every Nth reply (0: never)")
    parser.add_argument("--stt-delay", type=float, default=0.0, help="scripted STT delay per transcript (s)")
    parser.add_argument("--llm-delay", type=float, default=0.0, help="scripted LLM delay to first token (s)")
    parser.add_argument("--tts-delay", type=float, default=0.0, help="scripted TTS delay to first audio (s)")
    parser.add_argument("--silence", type=float, default=0.6, help="end-of-turn silence, vad.post_speech_silence_s")
    parser.add_argument("--frontend", type=_frontends, default=["batched"],
                        help="vad.frontend: batched, realtimestt, or both (batched,realtimestt: alternating per N)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more server settings")
    parser.add_argument("--compare", type=_compare, metavar="KEY=V1,V2",
                        help="run each N with each value of one setting, alternating "
                        "(e.g. vad.end_of_turn=smart,silence)")
    parser.add_argument("--remote", action="store_true",
                        help="also run the engines in their own servers (llama_cpp.server, faster-whisper-server, "
                        "wyoming-piper: deploy/engine_servers.py), alternating with in-process (--engines starter)")
    parser.add_argument("--shards", type=_counts, default=[1], metavar="K[,K2...]",
                        help="server processes the sessions are spread over (client i -> process i mod K), each "
                        "with its own engines; several values alternate like --frontend")
    parser.add_argument("--json", help="write the result to this file")
    parser.add_argument("--plot", help="write a PNG: latency distribution and the capacity curve")
    args = parser.parse_args(argv)
    plan = LoadPlan(args.engines, args.seconds, args.turns, args.barge_every, args.stt_delay, args.llm_delay,
                    args.tts_delay, args.silence, tuple(args.set))
    if args.remote and args.engines != "starter":
        parser.error("--remote serves the starter models: use it with --engines starter")
    if args.remote:
        from voicechat.deploy.engine_servers import engine_servers, settings_of

        with tempfile.TemporaryDirectory(prefix="voicechat-engines-") as tmp, engine_servers(Path(tmp)) as servers:
            result = run(plan, args.sessions, args.churn, args.frontend, args.compare, settings_of(servers),
                         args.shards)
    else:
        result = run(plan, args.sessions, args.churn, args.frontend, args.compare, shards=args.shards)
    reports = result.get("frontends", {args.frontend[0]: result})  # type: ignore[union-attr]
    for label, report in reports.items():  # type: ignore[union-attr]
        printable = {k: v for k, v in report.items() if k not in SAMPLES and k != "sweep"}
        print(f"== {label}")
        print(json.dumps(printable, indent=2))
        floor = report.get("barge_in_floor_ms")
        if floor:
            print(f"barge-in floor (the audio Silero needs at onset, these utterances): p50 {floor['p50']} ms, "
                  f"p95 {floor['p95']} ms")
        for row in report.get("sweep", []):
            print(f"N={row['sessions']:4} overhead p95 {row['overhead_ms']['p95']} ms, barge-in p95 "
                  f"{row['barge_in_ms']['p95']} ms, dropped {row['dropped_frames']}, errors {row['errors']}, "
                  f"stalled replies {row['reply_stalls']['stalled']}/{row['reply_stalls']['replies']}, "
                  f"cpu {row['server_cpu_percent']} %")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        from voicechat.bench.load_plot import plot

        plot(next(iter(reports.values())), Path(args.plot))  # type: ignore[attr-defined]
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
