"""Speakers without headphones: the assistant's own voice comes back into the microphone (simulated echo).

With the echo gate the assistant never interrupts itself; without it, it does (so the test can tell);
and a real user talking over the echo still interrupts.
"""

from __future__ import annotations

import threading

import numpy as np
from support.engines import scripted_engines
from support.helpers import SENTENCES, utterance, write_wav

from voicechat.core.events import FlushPlayback, ReplyDone, TurnState
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.local.audio_io import FileIO
from voicechat.local.echo_gate import EchoGate
from voicechat.local.session import LocalSession
from voicechat.local.tui.model import TuiModel
from voicechat.tts.espeak_engine import EspeakEngine
from voicechat.tts.pool import TTSPool


def talk(make_manager, tmp_path, mic: np.ndarray, gate: bool, until) -> tuple[TuiModel, list[object]]:
    engines = scripted_engines(llm=ScriptedLLM(reply_words=30), tts=TTSPool(lambda: EspeakEngine(), workers=1))
    manager = make_manager(engines)
    audio = FileIO(write_wav(tmp_path / "mic.wav", mic), None, output_rate=24000, echo_gain=0.5, echo_delay_ms=40)
    model, seen, done = TuiModel(), [], threading.Event()
    original = model.apply

    def apply(event) -> None:
        seen.append(event)
        original(event)
        if until(model, seen):
            done.set()

    model.apply = apply  # type: ignore[method-assign]
    local = LocalSession(manager, manager.options, audio, model, echo_gate=EchoGate() if gate else None)
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


def test_echo_gate_stops_self_interruption(make_manager, tmp_path):
    model, seen = talk(make_manager, tmp_path, utterance(SENTENCES[1]), gate=True,
                       until=lambda m, s: flushed(m, s) or reply_played_out(m, s))
    assert not flushed(model, seen), "the assistant interrupted itself"
    assert [line.text for line in model.lines if line.role == "user"] == [SENTENCES[1]]


def test_without_the_gate_the_echo_interrupts(make_manager, tmp_path):
    model, seen = talk(make_manager, tmp_path, utterance(SENTENCES[1]), gate=False,
                       until=lambda m, s: flushed(m, s) or reply_played_out(m, s))
    assert flushed(model, seen), "the simulated echo is too weak to test the gate with"


def test_a_user_talking_over_the_echo_still_interrupts(make_manager, tmp_path):
    first, second = SENTENCES[1], SENTENCES[8]
    mic = np.concatenate([utterance(first, after_s=3.0), utterance(second, before_s=0.0)])

    def both_heard(m: TuiModel, s: list[object]) -> bool:
        return flushed(m, s) and len([x for x in m.lines if x.role == "user" and x.final]) >= 2

    model, seen = talk(make_manager, tmp_path, mic, gate=True, until=both_heard)
    users = [line.text for line in model.lines if line.role == "user" and line.final]
    assert users[0] == first and users[1] == second
    assert any(line.interrupted for line in model.lines if line.role == "assistant")
