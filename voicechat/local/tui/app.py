"""The terminal UI: a rich Live screen over the local session, keys to steer it.

The main thread renders: on every session event (the pump thread sets an
event) and ten times a second for the level meter and the header's figures.
Keys arrive on the KeyReader's thread and become calls on the session; quit
sets the same stop event SIGINT/SIGTERM set, so every way out is one path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import psutil
from rich.console import Console
from rich.live import Live

from voicechat.engines.protocols import VoiceSettings
from voicechat.local.audio_io import AudioIO
from voicechat.local.echo_cancel import EchoMode, EchoStage
from voicechat.local.session import LocalSession
from voicechat.local.tui.keys import KeyReader, key_action
from voicechat.local.tui.model import HeaderInfo, TuiModel
from voicechat.local.tui.view import render
from voicechat.server.access import qr_text
from voicechat.server.health import GpuProbe
from voicechat.server.server import VoiceServer
from voicechat.session.manager import SessionManager
from voicechat.session.pipeline import PipelineOptions

FRAME_S = 0.1  # redraw at least this often (level meter, header figures)
VOICES = {  # what `v` cycles through, per TTS engine
    "EspeakEngine": ("en-us", "en-gb", "en-us+f3", "en-gb-scotland"),
    "PiperEngine": ("en_US-lessac-medium",),
    "KokoroEngine": ("af_heart", "af_bella", "am_adam", "bf_emma"),
}


class TuiApp:
    """Owns the local session, the key reader and the Live screen."""

    def __init__(
        self, manager: SessionManager, options: PipelineOptions, server: VoiceServer | None, audio: AudioIO,
        stop: threading.Event, *, echo: EchoMode = "speex", devices: tuple[str, str] = ("", ""),
        console: Console | None = None, voices: Sequence[str] = VOICES["EspeakEngine"],
    ) -> None:
        self.manager, self.server, self.stop_event = manager, server, stop
        self.model = TuiModel()
        self.model.voice, self.model.speed = options.voice.voice, options.voice.speed
        self.changed = threading.Event()
        self.local = LocalSession(manager, options, audio, self.model, self.changed.set,
                                  EchoStage(echo) if echo != "off" else None)
        self.console = console or Console()
        self.devices = devices
        self.voices = list(voices) or [options.voice.voice]
        self._process = psutil.Process()
        self._gpu = GpuProbe()
        # The port and this host's addresses do not change while it runs: look them up once, not per frame.
        self._urls = server.urls() if server is not None else []
        self._qr = qr_text(self._urls[0]) if self._urls and not server.is_local_only() else ""

    def run(self) -> int:
        self.local.start()
        keys = KeyReader(self.on_key)
        try:
            keys.start()
        except OSError:
            self.model.notice = "no keyboard (stdin is not a terminal): Ctrl-C or SIGTERM stops"
        try:
            with Live(self._frame(), console=self.console, auto_refresh=False, screen=True,
                      redirect_stdout=False, redirect_stderr=False) as live:
                while not self.stop_event.is_set():
                    self.changed.wait(FRAME_S)
                    self.changed.clear()
                    live.update(self._frame(), refresh=True)
        finally:
            keys.stop()
            self.local.stop()
        return 0

    # -- keys ----------------------------------------------------------------------------
    def on_key(self, key: str) -> None:
        action = key_action(key, self.model.push_to_talk)
        if action is None:
            return
        pipeline, model = self.local.pipeline, self.model
        if action == "quit":
            self.stop_event.set()
        elif action == "mute":
            model.muted = not model.muted
            model.push_to_talk = model.talking = False
            pipeline.set_muted(model.muted)
        elif action == "ptt_mode":
            model.push_to_talk = not model.push_to_talk
            model.talking = False
            model.muted = model.push_to_talk
            pipeline.set_muted(model.muted)
            model.notice = "push-to-talk: space starts and ends your turn" if model.push_to_talk else ""
        elif action == "talk":  # a terminal has no key-up: space toggles the open microphone
            model.talking = not model.talking
            pipeline.set_muted(not model.talking)
        elif action == "clear":
            pipeline.clear_history()
            model.clear()
            model.notice = "history cleared"
        elif action in ("voice", "faster", "slower"):
            if action == "voice":
                at = self.voices.index(model.voice) if model.voice in self.voices else -1
                model.voice = self.voices[(at + 1) % len(self.voices)]
            else:
                step = 0.1 if action == "faster" else -0.1
                model.speed = round(min(2.0, max(0.5, model.speed + step)), 2)
            pipeline.set_voice(VoiceSettings(model.voice, model.speed))
            model.notice = f"voice {model.voice}, speed {model.speed:.1f}× (from the next sentence)"
        self.changed.set()

    # -- screen ----------------------------------------------------------------------------
    def _frame(self):  # noqa: ANN202 - a rich renderable
        server = self.server
        gpu = self._gpu.memory()
        header = HeaderInfo(
            models=dict(server.config.models) if server else {},
            join_urls=self._urls,
            qr=self._qr,
            sessions=len(self.manager),
            cpu_percent=self._process.cpu_percent(None),
            gpu=", ".join(f"{g['name']} {g['used_mb']}/{g['total_mb']} MB" for g in gpu) if gpu else None,
            input_device=self.devices[0],
            output_device=self.devices[1],
        )
        return render(self.model, header)
