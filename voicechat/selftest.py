"""`python run.py selftest`: prove the install works, end to end, in seconds.

Builds the real engines and speaks one utterance into one real session at
real-time pace (real VAD and endpointing), then prints how long each stage
took. The models: the starter set (Whisper tiny.en, SmolLM2-135M, Piper joe)
when its files are in models/, spoken to in Piper's voice; otherwise (or with
``--tiny``) the tiny random models shipped in the package with espeak-ng, which
answer in gibberish by design: then what is tested is that every part loads
and runs, not what it says. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from voicechat.assembly import build_engines, pipeline_options, session_limits
from voicechat.audio import AudioFrame
from voicechat.config.loading import ConfigError, Settings, add_config_arguments, load_from_args
from voicechat.core.events import (
    AssistantTextDelta,
    AudioChunk,
    ErrorEvent,
    FinalTranscript,
    PartialTranscript,
    ReplyDone,
    TurnMetrics,
)
from voicechat.models.tiny import tiny_gguf_path, tiny_whisper_path
from voicechat.session.bounded_queue import QueueClosed
from voicechat.session.manager import SessionManager
from voicechat.session.pipeline import SpeechPipelineManager
from voicechat.speech_samples import SpeechSynthesisUnavailable, piper_speech_16k, speech_16k, with_silence

UTTERANCE = "Hello there, can you tell me what the weather is like today?"
FRAME = 320  # 20 ms at 16 kHz


def starter_overrides() -> dict[str, str]:
    """Config that runs the starter model set (its files must be in models/: ``models download --set starter``)."""
    from voicechat.models.sets import SETS, STARTER

    return {"models.set": STARTER, "stt.engine": "faster_whisper", "llm.backend": "llama_cpp",
            **dict(SETS[STARTER].settings)}


def choose_models(args: argparse.Namespace, user_sets: list[str], root: Path | None = None) -> tuple[Settings, str]:
    """The starter set where its files are in ``root``/models (unless --tiny), else the tiny models; and which."""
    from voicechat.models.store import PROJECT_ROOT, check_models

    if not args.tiny:
        args.set = [f"{k}={v}" for k, v in starter_overrides().items()] + user_sets
        settings = load_from_args(args).settings
        if not check_models(settings, root or PROJECT_ROOT):
            return settings, "starter"
    args.set = [f"{k}={v}" for k, v in tiny_overrides().items()] + user_sets
    return load_from_args(args).settings, "tiny"


def _speech(text: str, settings: Settings, models: str) -> np.ndarray:
    """``text`` in the starter set's Piper voice (Whisper hears it well), or espeak-ng's."""
    if models == "starter" and settings.tts.engine == "piper":
        from voicechat.models.store import PROJECT_ROOT

        return piper_speech_16k([text], settings.tts.voice, PROJECT_ROOT / settings.tts.piper_voice_dir)[0]
    return speech_16k(text)


def tiny_overrides() -> dict[str, str]:
    """Config that points every engine at the shipped tiny models and espeak-ng."""
    return {
        "stt.engine": "faster_whisper",
        "stt.model": str(tiny_whisper_path()),
        "stt.device": "cpu",
        "stt.beam_size": "1",
        "llm.backend": "llama_cpp",
        "llm.model": str(tiny_gguf_path()),
        "llm.n_gpu_layers": "0",
        "llm.max_tokens": "24",
        "tts.engine": "espeak",
        "tts.voice": "en-us",
    }


@dataclass
class Observed:
    """What the session reported, gathered by a reader thread."""

    partials: int = 0
    final: str = ""
    reply: str = ""
    audio_samples: int = 0
    audio_peak: int = 0
    sample_rate: int = 0
    metrics: TurnMetrics | None = None
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def read(self, pipeline: SpeechPipelineManager) -> None:
        while True:
            try:
                event = pipeline.outbox.get()
            except QueueClosed:
                return
            if isinstance(event, PartialTranscript):
                self.partials += 1
            elif isinstance(event, FinalTranscript):
                self.final = event.text
            elif isinstance(event, AssistantTextDelta):
                self.reply += event.text
            elif isinstance(event, AudioChunk):
                pcm = np.frombuffer(event.pcm, dtype=np.int16)
                self.audio_samples += len(pcm)
                self.sample_rate = event.sample_rate
                if len(pcm):
                    self.audio_peak = max(self.audio_peak, int(np.abs(pcm.astype(np.int32)).max()))
            elif isinstance(event, ReplyDone):
                pipeline.report_playback(event.generation, event.total_samples, finished=True)
            elif isinstance(event, TurnMetrics):
                self.metrics = event
                self.done.set()
            elif isinstance(event, ErrorEvent):
                self.errors.append(f"{event.stage}: {event.message}")
                self.done.set()


def run(argv: list[str], console: Console) -> int:
    parser = argparse.ArgumentParser(prog="run.py selftest", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--utterance", default=UTTERANCE, help="what the simulated user says")
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds to wait for the reply")
    parser.add_argument("--tiny", action="store_true", help="the shipped tiny random models even where the starter "
                        "set is present")
    args = parser.parse_args(argv)
    try:
        settings, models = choose_models(args, list(args.set or []))
        audio = with_silence(_speech(args.utterance, settings, models), 0.3, settings.vad.post_speech_silence_s + 0.8)
    except (ConfigError, SpeechSynthesisUnavailable) as exc:
        console.print(f"[red]selftest: {exc}[/red]")
        return 2

    started = time.monotonic()
    engines = build_engines(settings)
    load_s = time.monotonic() - started
    manager = SessionManager(engines, session_limits(settings), pipeline_options(settings))
    manager.start()
    observed = Observed()
    try:
        session = manager.create("selftest")
        reader = threading.Thread(target=observed.read, args=(session.pipeline,), name="selftest-reader", daemon=True)
        reader.start()
        stop = threading.Event()
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(audio), FRAME)):
            session.pipeline.feed_audio(AudioFrame(audio[i : i + FRAME].tobytes(), 16000, seq=n))
            due = t0 + (i + FRAME) / 16000 - time.monotonic()
            if due > 0 and (stop.wait(due) or observed.done.is_set()):
                break
        observed.done.wait(args.timeout)
    finally:
        manager.shutdown()
        engines.close()
    total_s = time.monotonic() - started
    _report(console, observed, engines.extra.get("load_s", {}), load_s, total_s, models, args.utterance)
    problems = _problems(observed)
    for problem in problems:
        console.print(f"[red]FAIL[/red] {problem}")
    if not problems:
        console.print(f"[green]selftest passed[/green] in {total_s:.1f} s")
    return 1 if problems else 0


def _problems(o: Observed) -> list[str]:
    problems = [f"error event: {e}" for e in o.errors]
    if not o.final:
        problems.append("no final transcript (VAD/endpointing or faster-whisper did not deliver)")
    if not o.reply:
        problems.append("no reply text from the language model")
    if o.audio_samples == 0 or o.audio_peak < 100:
        problems.append("no audible speech from text-to-speech")
    if o.metrics is None:
        problems.append("the turn did not finish (no turn metrics)")
    return problems


def _report(console: Console, o: Observed, loads: object, load_s: float, total_s: float, models: str,
            said: str) -> None:
    title = ("voicechat selftest (the starter models)" if models == "starter"
             else "voicechat selftest (tiny random models: the words are gibberish by design)")
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("ms", justify="right")
    table.add_column("detail")
    if isinstance(loads, dict):
        for name, seconds in loads.items():
            table.add_row(f"load {name}", f"{seconds * 1000:.0f}", "")
    table.add_row("load engines (total)", f"{load_s * 1000:.0f}", "")
    m = o.metrics
    steps = [
        ("end of speech -> final transcript", "speech_end", "transcript_final",
         f"{o.partials} partials, {o.final!r}" + (f" ({_heard(said, o.final)})" if models == "starter" else "")),
        ("final transcript -> first LLM token", "transcript_final", "first_token", ""),
        ("first token -> first sentence", "first_token", "first_sentence", f"reply {o.reply[:60]!r}"),
        ("first sentence -> first audio", "first_sentence", "first_audio",
         f"{o.audio_samples / max(1, o.sample_rate):.2f} s of audio at {o.sample_rate} Hz"),
        ("end of speech -> first audio (voice to voice)", "speech_end", "first_audio", ""),
    ]
    for label, start, end, detail in steps:
        ms = m.latency_ms(start, end) if m else None
        table.add_row(label, "-" if ms is None else f"{ms:.0f}", detail)
    table.add_row("whole selftest", f"{total_s * 1000:.0f}", "")
    console.print(table)


def _heard(said: str, heard: str) -> str:
    from voicechat.bench.accuracy import normalise, word_errors

    ref = normalise(said)
    return f"{word_errors(ref, normalise(heard))} of {len(ref)} words wrong"


def main(argv: list[str]) -> int:
    return run(argv, Console())
