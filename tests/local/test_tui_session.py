"""The terminal UI's session driven by the file audio backend: speech in, transcript and reply on screen, voice out."""

from __future__ import annotations

import io
import threading

import numpy as np
from rich.console import Console
from support.helpers import SENTENCES, utterance, write_wav

from voicechat.audio import read_wav
from voicechat.core.events import TurnState
from voicechat.local.audio_io import FileIO
from voicechat.local.session import LocalSession
from voicechat.local.tui.model import HeaderInfo, TuiModel
from voicechat.local.tui.view import render


def screen_text(model: TuiModel) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    header = HeaderInfo({"stt": "scripted"}, ["http://127.0.0.1:8765/#token=t"], "", 1, 0.0, None, "in", "out")
    console.print(render(model, header))
    return console.export_text()


def test_spoken_turn_from_a_wav_file_shows_and_speaks_the_reply(make_manager, tmp_path):
    text = SENTENCES[2]
    out = tmp_path / "out.wav"
    audio = FileIO(write_wav(tmp_path / "in.wav", utterance(text)), out, output_rate=24000)
    manager = make_manager()
    model = TuiModel()
    changed = threading.Event()
    turn_over = threading.Event()

    def on_change() -> None:
        changed.set()
        if model.turns() >= 1 and model.state is TurnState.LISTENING:
            turn_over.set()

    local = LocalSession(manager, manager.options, audio, model, on_change)
    local.start()
    try:
        assert turn_over.wait(60), screen_text(model)
        screen = screen_text(model)
    finally:
        local.stop()
    assert text in screen
    assert f"You said: {text.rstrip('.?!')}" in screen
    assert "voice→voice" in screen
    users = [line.text for line in model.lines if line.role == "user"]
    assert users == [text]
    played, rate = read_wav(out)
    assert rate == 24000
    assert np.abs(played.astype(np.int32)).max() > 1000, "the speaker file is silent"
    assert local.audio_seconds_out > 0.5
    assert len(manager) == 0  # stop() closed the session
    left = [t.name for t in threading.enumerate() if t.name.startswith(("local-events", "fileio-"))]
    assert not left, left  # the pump and the file endpoint's threads were joined
