"""Command line: `python run.py [command] [options]` (same as `python -m voicechat`).

Commands: run (default), config, test, bench, models. Configuration errors exit with code 2
and one line naming the key, the value and what is allowed, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from voicechat.config.loading import ConfigError, add_config_arguments, config_main, load_from_args

ROOT = Path(__file__).resolve().parent.parent


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="Run the voicechat assistant.")
    add_config_arguments(parser)
    parser.add_argument(
        "--scripted", action="store_true",
        help="use scripted engines (no model files needed): a quick way to try the pipeline",
    )
    audio = parser.add_argument_group("local audio (terminal UI)")
    audio.add_argument("--input-device", help="microphone: name, part of a name, or index (see `run.py devices`)")
    audio.add_argument("--output-device", help="speaker: name, part of a name, or index")
    audio.add_argument("--audio-in", metavar="FILE.wav", help="use a WAV file as the microphone (no sound hardware)")
    audio.add_argument("--audio-out", metavar="FILE.wav", help="write what the speaker would play to a WAV file")
    audio.add_argument("--half-duplex", action="store_true",
                       help="never let speech interrupt the assistant (vad.barge_in=false): for loud speakers")
    audio.add_argument("--no-tui", action="store_true", help="serve the LAN only, even when a microphone exists")
    parser.add_argument(
        "--console", action="store_true",
        help="also talk to one session by typing in this terminal (the LAN server runs beside it)",
    )
    return parser


def run_main(argv: list[str]) -> int:
    from voicechat.engines.protocols import EngineError
    from voicechat.models.store import MissingModelError

    args = _run_parser().parse_args(argv)
    if args.scripted:
        from voicechat.assembly import SCRIPTED_ENGINES

        args.set = [*(f"{k}={v}" for k, v in SCRIPTED_ENGINES.items()), *(args.set or [])]
    for flag, key in (("input_device", "audio.input_device"), ("output_device", "audio.output_device")):
        if getattr(args, flag):
            args.set = [*(args.set or []), f"{key}={getattr(args, flag)}"]
    if args.half_duplex:
        args.set = [*(args.set or []), "vad.barge_in=false"]
    try:
        loaded = load_from_args(args)
        from voicechat.assembly import build_engines
        from voicechat.memory.malloc_arenas import limit_malloc_arenas
        from voicechat.models.startup import prepare_models

        limit_malloc_arenas(loaded.settings.memory.malloc_arenas)  # before any thread (download bars, engines)
        prepared = prepare_models(loaded)  # first start: fetch the model set, or run the starter set
        settings = prepared.settings
        engines = build_engines(settings)
        engines.extra["model_set"] = prepared.active
    except ConfigError as err:
        print(f"voicechat: config error: {err}", file=sys.stderr)
        return 2
    except (MissingModelError, EngineError) as err:
        print(err if isinstance(err, MissingModelError) else f"voicechat: cannot start: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    import time

    from voicechat.local.devices import AudioDeviceError
    from voicechat.serve import leftover_threads, open_local_audio, serve

    try:
        audio = None if args.console else open_local_audio(settings, args.audio_in, args.audio_out, args.no_tui)
    except (AudioDeviceError, OSError) as err:
        engines.close()
        print(f"voicechat: {err}", file=sys.stderr)
        return 2
    log_file = settings.logging.file
    if audio is not None and not log_file:  # the full-screen UI owns the terminal: log to a file
        from voicechat.server.access import default_data_dir

        data_dir = default_data_dir(settings.server.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        log_file = str(data_dir / "voicechat.log")
    logging.basicConfig(
        level=settings.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=log_file or None,
    )
    try:
        return serve(settings, engines, console=args.console, audio=audio)
    finally:
        started = time.monotonic()
        engines.close()
        left = leftover_threads()
        logging.getLogger("voicechat").info(
            "engines closed in %.2f s; threads left: %s", time.monotonic() - started, ", ".join(left) or "none"
        )


def test_main(argv: list[str]) -> int:
    """Run the test suite with pytest (settings in setup.cfg), once the starter model set is here.

    The real-model tests (tests/real) use the starter set: it is fetched into models/ when missing
    or damaged (voicechat/models/ensure.py). A failed fetch does not stop the run: those tests then
    fail and say which file is wrong and which command fixes it.
    """
    from voicechat.models.ensure import ensure_set, problems_message, real_models_wanted

    if real_models_wanted():
        from rich.console import Console

        console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        try:
            problems = ensure_set(console=console)
        except KeyboardInterrupt:
            return 130
        if problems:
            console.print(f"voicechat: {problems_message(problems)}\nvoicechat: running the tests; the "
                          f"real-model tests will fail", markup=False)
    cmd = [sys.executable, "-m", "pytest", *argv]
    return subprocess.call(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def bench_main(argv: list[str]) -> int:
    """`bench NAME ...`: run one benchmark (see docs/benchmarks.md)."""
    benches = {
        "sessions": "voicechat.bench.sessions", "stt": "voicechat.bench.stt",
        "tts": "voicechat.bench.tts", "llm": "voicechat.bench.llm", "load": "voicechat.bench.load",
        "faults": "voicechat.bench.faults", "turns": "voicechat.bench.turns", "echo": "voicechat.bench.echo",
        "weights": "voicechat.bench.llm_weights",
    }
    if not argv or argv[0] not in benches:
        print(f"usage: run.py bench {{{','.join(benches)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(benches[argv[0]]).main(argv[1:])


def selftest_main(argv: list[str]) -> int:
    """`selftest`: the real engines on the shipped tiny models, one spoken turn, a timing table."""
    from voicechat.selftest import main

    return main(argv)


def devices_main(argv: list[str]) -> int:
    """`devices`: the sound devices sounddevice sees, with the defaults marked."""
    from voicechat.local.devices import format_devices, list_devices

    devices = list_devices()
    print(format_devices(devices) if devices else "no sound devices found (a headless box: the LAN server still works)")
    return 0


def models_main(argv: list[str]) -> int:
    """`models list|download|verify`: the model manager (see voicechat/models/cli.py)."""
    from voicechat.models.cli import main

    return main(argv)


def layout_main(argv: list[str]) -> int:
    from voicechat.deploy.layout import main

    return main(argv)


COMMANDS = {
    "run": run_main, "config": config_main, "test": test_main, "bench": bench_main, "models": models_main,
    "selftest": selftest_main, "devices": devices_main, "layout": layout_main,
}


# Commands that may load a GGUF into llama.cpp (``run`` is also the default command).
LLM_COMMANDS = ("run", "selftest", "bench")


def import_llama_cpp_first() -> bool:
    """Load llama-cpp-python's libraries before numpy is imported; True when it was loaded here.

    On an H200 with llama-cpp-python 0.3.36 built for CUDA, every process that had imported numpy
    (and jinja2) before llama_cpp crashed (SIGSEGV) in llama_model_load_from_file, CPU layers too,
    while the same loads with llama_cpp imported first all ran (docs/benchmarks.md, "GPU (one
    H200)"). The cause is not established; the same order dependence is reported upstream
    (llama-cpp-python issue 1581). Once numpy is in, loading llama_cpp now would not help.
    """
    if "numpy" in sys.modules or "llama_cpp" in sys.modules:
        return False
    try:
        import llama_cpp  # noqa: F401  (its libraries load here, numpy after them)
    except Exception:  # noqa: BLE001  not installed or not loadable: the LLM's own load says why
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in LLM_COMMANDS or argv[0] not in (*COMMANDS, "-h", "--help"):
        import_llama_cpp_first()
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print("usage: run.py [run|config|test|selftest|bench|models|devices|layout] [options]\n")
        print("  run       talk to the assistant (default command)")
        print("  config    print the effective configuration and where each value came from")
        print("  test      run the test suite (pytest arguments pass through)")
        print("  selftest  check the install: real engines on tiny bundled models, one spoken turn")
        print("  bench     run a benchmark: bench sessions|stt|tts|llm|load|faults|turns|echo|weights [options] "
              "(docs/benchmarks.md)")
        print("  models    list, download or verify model files: models list|download [NAME...|--set SET]|verify")
        print("  devices   list microphones and speakers (for --input-device / --output-device)")
        print("  layout    try the scale-out layout here: Redis, N replicas, haproxy (docs/deploy.md)")
        return 0
    return run_main(argv)
