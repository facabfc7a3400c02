"""`python run.py`: the LAN server (and optionally the text console) until SIGINT/SIGTERM.

The main thread owns the lifecycle: it starts the SessionManager and the
VoiceServer, prints how to join (URL with token, QR code, certificate
fingerprint), then waits on an event that the signal handlers set. Shutdown
runs in order (server: tell clients and close; sessions: stop and join;
engines: free models) and ends well inside 10 seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TextIO

from voicechat.assembly import conversation_store, memory_limits, pipeline_options, server_config, session_limits
from voicechat.config.loading import Settings
from voicechat.engines.protocols import Engines
from voicechat.local.audio_io import AudioIO
from voicechat.memory.gc_pauses import freeze_startup_heap
from voicechat.memory.monitor import MemoryMonitor
from voicechat.models.sets import ActiveModelSet
from voicechat.server.access import qr_text
from voicechat.server.outbox_signal import OutboxSignal
from voicechat.server.server import ServerError, VoiceServer
from voicechat.server.tls import TlsError, cert_fingerprint
from voicechat.session.manager import SessionManager

log = logging.getLogger(__name__)


def banner(server: VoiceServer) -> str:
    """How to join: every URL (token included), the first one as a QR code, the certificate's fingerprint."""
    urls = server.urls()
    lines = ["", "voicechat is listening. Open this on a device on your network:"]
    lines += [f"  {url}" for url in urls]
    if not server.is_local_only():
        lines += ["", qr_text(urls[0])]
    if server.cert_file is not None:
        lines += [
            "The certificate is self-signed unless you configured one: the browser will warn once.",
            f"  its SHA-256 fingerprint: {cert_fingerprint(server.cert_file)}",
        ]
    if "set" in server.config.models:
        lines.append(f"Model set: {server.config.models['set']}")
    lines.append("Ctrl-C stops the server.")
    return "\n".join(lines)


def leftover_threads() -> list[str]:
    """Threads other than the main one still alive (after shutdown there should be none)."""
    main = threading.main_thread()
    return sorted(t.name for t in threading.enumerate() if t is not main and t.is_alive())


def wait_for_stop(stop: threading.Event) -> None:
    """Block the main thread until a signal handler sets ``stop``, whichever thread the signal reached.

    Linux may deliver a process-directed SIGTERM to any thread, and CPython runs
    Python handlers only in the main thread: a main thread asleep in
    ``Event.wait()`` wakes only for a signal delivered to itself, so the first
    SIGTERM was sometimes lost. The C-level handler, on whatever thread, writes
    to the wakeup fd; the main thread, blocked reading it, wakes and runs the handler.
    """
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    try:
        while not stop.is_set():
            os.read(reader, 64)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(reader)
        os.close(writer)


def open_local_audio(settings: Settings, audio_in: str | None, audio_out: str | None, no_tui: bool) -> AudioIO | None:
    """The terminal UI's audio: a WAV file, the sound card, or None (a headless box, or --no-tui).

    Raises AudioDeviceError when a named device does not exist.
    """
    from voicechat.local.audio_io import FileIO, SoundDeviceIO
    from voicechat.local.devices import has_input_device

    if audio_in:
        return FileIO(Path(audio_in), Path(audio_out) if audio_out else None,
                      output_rate=settings.audio.output_sample_rate)
    if no_tui:
        return None
    if not has_input_device():
        print("voicechat: no microphone found: serving the LAN only (see `python run.py devices`)", file=sys.stderr)
        return None
    return SoundDeviceIO(settings.audio.input_device, settings.audio.output_device)


def serve(
    settings: Settings, engines: Engines, console: bool = False, out: TextIO = sys.stdout,
    audio: AudioIO | None = None,
) -> int:
    """Run until a signal, the console's end or the TUI's quit key; 0 on a clean stop, 2 when it cannot start."""
    # websockets logs every plain HTTP answer (page, health, metrics) as a "rejected" handshake.
    logging.getLogger("voicechat.server.websockets").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    options = pipeline_options(settings)
    store = conversation_store(settings)
    if store is not None:
        store.prune()
    manager = SessionManager(engines, session_limits(settings), options, store=store,
                             memory=MemoryMonitor(memory_limits(settings)))
    manager.transport_factory = OutboxSignal  # a session restored from disk is served like a new one
    model_set = engines.extra.get("model_set")
    server = VoiceServer(manager, options, server_config(settings, model_set if isinstance(model_set, ActiveModelSet)
                                                         else None))
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    manager.start()
    if settings.memory.gc_freeze:
        freeze_startup_heap()  # what is loaded now lives as long as the process: keep it out of full collections
    try:
        try:
            server.start()
        except (ServerError, TlsError) as err:
            print(f"voicechat: {err}", file=sys.stderr)
            return 2
        print(banner(server), file=out, flush=True)
        if audio is not None:
            from voicechat.local.tui.app import TuiApp

            devices = (settings.audio.input_device or "default", settings.audio.output_device or "default")
            return TuiApp(manager, options, server, audio, stop, echo=settings.audio.echo,
                          devices=devices).run()
        if console:
            from voicechat.local.console import run_console

            run_console(manager, options)
        else:
            wait_for_stop(stop)
        return 0
    finally:
        started = time.monotonic()
        server.stop()
        manager.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped in %.2f s", time.monotonic() - started)
