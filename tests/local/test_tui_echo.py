"""Speakers without headphones: the assistant's own voice comes back into the microphone (a simulated room).

The file backend puts a room between its speaker and its microphone (reverberation, delay, gain, soft
clipping, noise). With either echo canceller (Speex's filter and the gate, or AEC3) the assistant never
interrupts itself; with ``audio.echo = "off"``
it does (so the test can tell); and a user talking over the reply interrupts it and is transcribed. The
gate keeps its test on the file backend's plain delayed echo (in the reverberant room it interrupts itself
in some runs: docs/benchmarks.md, "Echo").
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support.engines import scripted_engines
from support.helpers import SENTENCES, utterance, write_wav

from voicechat.core.events import FlushPlayback, ReplyDone, TurnState
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.local.audio_io import FileIO
from voicechat.local.echo_cancel import EchoStage
from voicechat.local.room import RoomConfig
from voicechat.local.session import LocalSession
from voicechat.local.tui.model import TuiModel
from voicechat.tts.espeak_engine import EspeakEngine
from voicechat.tts.pool import TTSPool

# A living room's reverberation; at RT60 0.45-0.6 s AEC3 still interrupts itself now and then during the
# first reply, while it learns the room (docs/benchmarks.md, "Echo"), which would make these tests flaky.
ROOM = RoomConfig(rt60_s=0.3, delay_ms=60, gain_db=-3, noise_dbfs=-65)


def talk(make_manager, tmp_path, mic: np.ndarray, echo: str, until, room: bool = True) -> tuple[TuiModel, list[object]]:
    engines = scripted_engines(llm=ScriptedLLM(reply_words=30), tts=TTSPool(lambda: EspeakEngine(), workers=1))
    manager = make_manager(engines)
    wav = write_wav(tmp_path / "mic.wav", mic)
    audio = FileIO(wav, None, output_rate=24000, room=ROOM) if room else \
        FileIO(wav, None, output_rate=24000, echo_gain=0.5, echo_delay_ms=40)
    model, seen, done = TuiModel(), [], threading.Event()
    original = model.apply

    def apply(event) -> None:
        seen.append(event)
        original(event)
        if until(model, seen):
            done.set()

    model.apply = apply  # type: ignore[method-assign]
    stage = EchoStage(echo) if echo != "off" else None  # type: ignore[arg-type]
    assert stage is None or stage.mode == echo, "pywebrtc-audio or libspeexdsp1 is missing"
    local = LocalSession(manager, manager.options, audio, model, echo=stage)
    local.start()
    try:
        assert done.wait(60), [type(e).__name__ for e in seen][-20:]
    finally:
        local.stop()
    return model, seen


def reply_played_out(model: TuiModel, seen: list[object]) -> bool:
    return any(isinstance(e, ReplyDone) for e in seen) and model.state is TurnState.LISTENING and model.turns() >= 1


def flushed(_model: TuiModel, seen: list[object]) -> bool:
    return any(isinstance(e, FlushPlayback) for e in seen)


@pytest.mark.parametrize("echo, room", [("speex", True), ("aec", True), ("gate", False)])
def test_echo_handling_stops_self_interruption(make_manager, tmp_path, echo, room):
    model, seen = talk(make_manager, tmp_path, utterance(SENTENCES[1]), echo,
                       until=lambda m, s: flushed(m, s) or reply_played_out(m, s), room=room)
    assert not flushed(model, seen), "the assistant interrupted itself"
    assert [line.text for line in model.lines if line.role == "user"] == [SENTENCES[1]]


def test_with_echo_off_the_assistant_interrupts_itself(make_manager, tmp_path):
    model, seen = talk(make_manager, tmp_path, utterance(SENTENCES[1]), "off",
                       until=lambda m, s: flushed(m, s) or reply_played_out(m, s))
    assert flushed(model, seen), "the simulated echo is too weak to test echo handling with"


@pytest.mark.parametrize("echo, boost", [("speex", 1.0), ("aec", 1.4)])
def test_a_user_talking_over_the_reply_interrupts_and_is_transcribed(make_manager, tmp_path, echo, boost):
    """With Speex's filter the user talks at their own level, about 3 dB over the echo; AEC3 loses first words
    up to 0 dB over it (docs/benchmarks.md), so its user is 3 dB louder."""
    first, second = SENTENCES[1], SENTENCES[8]
    over = (utterance(second, before_s=0.0) * boost).astype(np.int16)
    mic = np.concatenate([utterance(first, after_s=3.0), over])

    def both_heard(m: TuiModel, s: list[object]) -> bool:
        return flushed(m, s) and len([x for x in m.lines if x.role == "user" and x.final]) >= 2

    model, seen = talk(make_manager, tmp_path, mic, echo, until=both_heard)
    users = [line.text for line in model.lines if line.role == "user" and line.final]
    assert users[0] == first and users[1] == second
    assert any(line.interrupted for line in model.lines if line.role == "assistant")
