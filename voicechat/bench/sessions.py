"""`python run.py bench sessions`: what one idle session costs.

Creates N sessions with scripted models behind the real recognizer of the
configured listening front end (``--frontend``), then reports threads and RSS
per session, create/close latency, and the CPU the idle sessions burn over a
measuring window. ``--silent`` makes them connected microphones in a quiet
room: one feeder thread gives every session a 20 ms frame of faint noise every
20 ms, as open browser microphones do, so the window measures the per-frame
path (capture, backlog, voice activity detection) with nobody talking.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np
import psutil

from voicechat.assembly import SCRIPTED_ENGINES, build_engines, pipeline_options
from voicechat.audio import AudioFrame
from voicechat.config.loading import load_config, parse_overrides
from voicechat.session.manager import SessionLimits, SessionManager

FRAME_S = 0.02


def _quiet_room(pipelines: list, stop: threading.Event) -> None:
    """Every 20 ms, a frame of faint noise (about -60 dBFS) to every session, on the audio's schedule."""
    rng = np.random.default_rng(7)
    frames = [(rng.normal(0, 30, int(16000 * FRAME_S))).astype(np.int16).tobytes() for _ in range(16)]
    tick = time.monotonic()
    i = 0
    while not stop.is_set():
        for pipeline in pipelines:
            pipeline.feed_audio(AudioFrame(frames[i % len(frames)], 16000))
        i += 1
        tick += FRAME_S
        stop.wait(max(0.0, tick - time.monotonic()))


def run(sessions: int, seconds: float, partials: bool, frontend: str = "batched", silent: bool = False,
        extra: dict[str, str] | None = None) -> dict[str, float]:
    overrides = {**SCRIPTED_ENGINES, "stt.partials": str(partials).lower(), "vad.frontend": frontend, **(extra or {})}
    settings = load_config(None, env={}, overrides=overrides).settings
    engines = build_engines(settings)
    manager = SessionManager(engines, SessionLimits(max_sessions=sessions + 1), pipeline_options(settings))
    manager.start()
    proc = psutil.Process()
    # Imports and first-use costs are not per session, nor is the shared listening front end's thread: the
    # warm-up session stays open, so that thread lives through the whole measurement.
    warm = manager.create("warm-up")
    threads0, rss0 = threading.active_count(), proc.memory_info().rss
    create_s, close_s, ids = [], [], []
    for _ in range(sessions):
        t = time.perf_counter()
        ids.append(manager.create("bench").id)
        create_s.append(time.perf_counter() - t)
    threads1, rss1 = threading.active_count(), proc.memory_info().rss
    stop = threading.Event()
    feeder = threading.Thread(target=_quiet_room, args=([manager.get(i).pipeline for i in ids], stop))
    if silent:
        feeder.start()
        stop.wait(1.0)  # the backlogs fill and the front end settles into its tick
    cpu0, wall0 = proc.cpu_times(), time.monotonic()
    stop.wait(seconds)  # the measuring window
    cpu1, wall1 = proc.cpu_times(), time.monotonic()
    stop.set()
    if silent:
        feeder.join()
    for sid in ids:
        t = time.perf_counter()
        manager.close(sid, "bench")
        close_s.append(time.perf_counter() - t)
    leftover_threads = threading.active_count() - threads0
    manager.close(warm.id, "bench")
    manager.shutdown()
    engines.close()
    busy = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (wall1 - wall0)
    return {
        "sessions": sessions,
        "partials": partials,
        "frontend": frontend,
        "silent_microphones": silent,
        "threads_per_session": (threads1 - threads0) / sessions,
        "rss_mb_per_session": (rss1 - rss0) / sessions / 2**20,
        "create_ms_p50": statistics.median(create_s) * 1000,
        "close_ms_p50": statistics.median(close_s) * 1000,
        "idle_cpu_percent_of_one_core": busy * 100,
        "idle_cpu_percent_per_session": busy * 100 / sessions,
        "threads_left_after_close": leftover_threads,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench sessions", description=__doc__)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0, help="idle CPU measuring window")
    parser.add_argument("--no-partials", action="store_true", help="no partial transcripts (stt.partials = false)")
    parser.add_argument("--frontend", choices=["batched", "realtimestt"], default="batched", help="vad.frontend")
    parser.add_argument("--silent", action="store_true", help="feed every session a quiet room's audio in real time")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="more settings")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    extra = parse_overrides(args.set)
    result = run(args.sessions, args.seconds, not args.no_partials, args.frontend, args.silent, extra)
    for key, value in result.items():
        print(f"{key:32} {value:.2f}" if isinstance(value, float) else f"{key:32} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
