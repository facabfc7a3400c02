"""Smoke test: `python run.py --audio-in x.wav --audio-out y.wav` in a real terminal (tmux), quit with `q`."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support.helpers import SENTENCES, utterance, write_wav

from voicechat.audio import read_wav

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (the bootstrap installs it)")


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, timeout: float) -> str:
        """Wait until ``text`` is on the screen (re-read when tmux says the pane changed, or every 0.2 s)."""
        done = threading.Event()
        deadline = timeout
        while deadline > 0:
            screen = self.screen()
            if text in screen:
                return screen
            done.wait(0.2)
            deadline -= 0.2
        raise AssertionError(f"{text!r} not on the screen after {timeout} s:\n{self.screen()}")


def test_tui_in_tmux_shows_the_conversation_and_quits_with_q(tmp_path):
    text = SENTENCES[6]
    wav_in = write_wav(tmp_path / "x.wav", utterance(text))
    wav_out = tmp_path / "y.wav"
    exit_file = tmp_path / "exit"
    cmd = [
        sys.executable, "run.py", "--scripted", "--audio-in", str(wav_in), "--audio-out", str(wav_out),
        "--set", "server.host=127.0.0.1", "--set", "server.port=0", "--set", f"server.data_dir={tmp_path}",
        "--set", "server.token=tmux-test-token",
    ]
    shell = f"cd {shlex.quote(str(ROOT))} && VOICECHAT_SKIP_BOOTSTRAP=1 {shlex.join(cmd)}; echo $? > {exit_file}"
    tmux = Tmux(f"vc-{os.getpid()}")
    tmux("new-session", "-d", "-s", tmux.name, "-x", "120", "-y", "45", shell)
    try:
        # The smoke test asks for the conversation on screen; the exact words are test_tui_session's job
        # (under a loaded CI machine the VAD may cut an utterance differently).
        screen = tmux.wait_for("voice→voice", timeout=60)
        assert "You said:" in screen and "q quit" in screen and "      you " in screen
        assert "#token=tmux-test-token" in screen  # the join URL in the header
        tmux("send-keys", "-t", tmux.name, "q")
        waited = threading.Event()
        for _ in range(100):  # the process writes its exit code when it ends
            if exit_file.exists() and exit_file.read_text().strip():
                break
            waited.wait(0.1)
        assert exit_file.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", tmux.name], capture_output=True)
    played, _rate = read_wav(wav_out)
    assert np.abs(played.astype(np.int32)).max() > 1000
    log = (tmp_path / "voicechat.log").read_text()
    assert "threads left: none" in log
