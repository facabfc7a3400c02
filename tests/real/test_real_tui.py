"""The terminal UI's session on the file audio backend with the starter set: a WAV file speaks, a WAV file listens."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from support.helpers import write_wav
from support.real import assert_reply_does_not_loop, same_words, spoken

from voicechat.audio import read_wav
from voicechat.config.loading import Settings
from voicechat.core.events import TurnState
from voicechat.local.audio_io import FileIO
from voicechat.local.session import LocalSession
from voicechat.local.tui.model import TuiModel

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_a_question_spoken_into_the_microphone_file_is_answered_into_the_speaker_file(
    make_real_manager, settings: Settings, tmp_path: Path
) -> None:
    question = "What is the capital of France?"
    speaker = tmp_path / "speaker.wav"
    audio = FileIO(write_wav(tmp_path / "microphone.wav", spoken(question)), speaker, output_rate=24000)
    manager = make_real_manager()
    model = TuiModel()
    turn_over = threading.Event()

    def on_change() -> None:  # the reply has played out and the session listens again
        if model.turns() >= 1 and model.state is TurnState.LISTENING:
            turn_over.set()

    local = LocalSession(manager, manager.options, audio, model, on_change)
    local.start()
    try:
        assert turn_over.wait(150), [(line.role, line.text) for line in model.lines]
    finally:
        local.stop()
    users = [line.text for line in model.lines if line.role == "user"]
    assert len(users) == 1 and same_words(users[0], question), users
    replies = [line for line in model.lines if line.role == "assistant"]
    assert len(replies) == 1 and replies[0].final and not replies[0].interrupted, replies
    assert_reply_does_not_loop(replies[0].text, settings.llm.max_spoken_sentences)
    played, rate = read_wav(speaker)
    assert rate == 24000 and len(played) > rate // 2, f"{len(played)} samples in the speaker file"
    assert np.abs(played.astype(np.int32)).max() > 1000, "the speaker file is silent"
    assert local.audio_seconds_out > 0.5
