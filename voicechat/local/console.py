"""Text console: talk to one session by typing (`run --console`).

It runs a real session (SessionManager, SpeechPipelineManager, all four stage
workers); typed lines go in as text input, the reply streams out as text and
its audio is counted.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from typing import TextIO

from voicechat.core.events import AssistantTextDelta, AudioChunk, ErrorEvent, ReplyDone, TurnMetrics
from voicechat.session.bounded_queue import QueueClosed
from voicechat.session.manager import SessionManager
from voicechat.session.pipeline import PipelineOptions, SpeechPipelineManager


def _print_events(pipeline: SpeechPipelineManager, out: TextIO, turn_done: threading.Event) -> None:
    audio_s = 0.0
    while True:
        try:
            event = pipeline.outbox.get()
        except QueueClosed:
            return
        if isinstance(event, AssistantTextDelta):
            out.write(event.text)
        elif isinstance(event, AudioChunk):
            audio_s += event.samples / event.sample_rate
        elif isinstance(event, ErrorEvent):
            out.write(f"\n[error in {event.stage}: {event.message}]\n")
        elif isinstance(event, ReplyDone):
            # A text console shows the whole reply: report it as fully "heard".
            pipeline.report_playback(event.generation, event.total_samples, finished=True)
            out.write(f"\n[{audio_s:.1f} s of speech]\n")
            audio_s = 0.0
        elif isinstance(event, TurnMetrics):
            first = event.latency_ms("transcript_final", "first_audio")
            if first is not None:
                out.write(f"[first audio after {first:.0f} ms]\n")
            turn_done.set()
        out.flush()


def run_console(
    manager: SessionManager, options: PipelineOptions, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    session = manager.create("console", options=replace(options, playback_reports=True))
    turn_done = threading.Event()
    printer = threading.Thread(
        target=_print_events, args=(session.pipeline, out, turn_done), name="console-printer", daemon=True
    )
    printer.start()
    out.write("voicechat console: type a message and press Enter (empty line or Ctrl-D quits)\n")
    try:
        for line in stdin:
            text = line.strip()
            if not text:
                break
            turn_done.clear()
            session.pipeline.send_text(text)
            turn_done.wait(timeout=120)
    except KeyboardInterrupt:
        pass
    finally:
        manager.close(session.id, "console closed")
        printer.join(timeout=5)
    return 0
