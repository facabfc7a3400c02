"""The TUI screen as text: what a user sees for a given model and header."""

from __future__ import annotations

import io
import re

from rich.console import Console

from voicechat.core.events import (
    AssistantTextDelta,
    EndOfTurn,
    FinalTranscript,
    FlushPlayback,
    PartialTranscript,
    ReplyDone,
    StateChanged,
    TurnMetrics,
    TurnState,
)
from voicechat.local.tui.model import HeaderInfo, TuiModel
from voicechat.local.tui.view import render
from voicechat.server.access import qr_text

URL = "https://192.168.1.20:8443/#token=abcdef0123456789"
QR = qr_text(URL)
QR_ROW = QR.splitlines()[3]  # a row with a finder pattern: unlike anything else on screen


def header(**changes: object) -> HeaderInfo:
    info = HeaderInfo(
        models={"stt": "whisper-small.en", "llm": "qwen2.5-1.5b", "tts": "kokoro"},
        join_urls=[URL],
        qr=QR,
        sessions=3,
        cpu_percent=12.4,
        gpu="RTX 4090",
        input_device="USB mic",
        output_device="speakers",
    )
    for key, value in changes.items():
        setattr(info, key, value)
    return info


def screen(model: TuiModel, info: HeaderInfo | None = None, width: int = 100, height: int = 45,
           styles: bool = False) -> str:
    console = Console(record=True, width=width, height=height, file=io.StringIO(), color_system="truecolor")
    console.print(render(model, info or header()))
    return console.export_text(styles=styles)


def conversation() -> TuiModel:
    model = TuiModel()
    model.apply(FinalTranscript("What is the weather like?", 0))
    model.apply(AssistantTextDelta("It is sunny ", 1))
    model.apply(AssistantTextDelta("and warm.", 1))
    model.apply(ReplyDone(1, "It is sunny and warm.", 100))
    model.apply(TurnMetrics(1, {
        "voice_end": 0.4, "speech_end": 1.0, "transcript_final": 1.212, "first_token": 1.5, "first_sentence": 1.6,
        "first_audio": 1.7,
    }))
    return model


def test_transcript_reply_and_per_turn_latency() -> None:
    text = screen(conversation())
    assert "you What is the weather like?" in text
    assert "assistant It is sunny and warm." in text
    # voice to voice from the last voiced sample (0.4), through the end-of-turn decision (1.0)
    assert "end 600 · stt 212 · llm 288 · sentence 100 · tts 100 · voice→voice 1300 ms" in text


def test_a_judged_end_of_turn_says_what_the_judges_said() -> None:
    model = conversation()
    model.apply(FinalTranscript("Thanks.", 1))
    model.apply(ReplyDone(2, "You are welcome.", 100))
    model.apply(TurnMetrics(2, {"voice_end": 2.0, "speech_end": 2.25, "first_audio": 2.6},
                            end_of_turn=EndOfTurn(250.0, audio=None, words=0.41)))
    assert "end 250 (words 0.41) · voice→voice 600 ms" in screen(model)


def test_status_line_state_level_latency_and_keys() -> None:
    model = conversation()
    model.apply(StateChanged(TurnState.ASSISTANT_SPEAKING, 1, TurnState.THINKING))
    model.set_level(-30.0)
    text = screen(model)
    assert "● speaking" in text
    assert "━" * 6 in text and "-30 dB" in text
    assert "last turn" in text and "median of 1" in text
    latency_row = next(row for row in text.splitlines() if "last turn" in row)
    assert latency_row.split()[2:] == ["600", "212", "288", "100", "100", "1300"]
    footer = text.rstrip().splitlines()[-1]
    for key in ("m mute", "t push-to-talk", "c clear", "v voice", "+/- speed", "q quit"):
        assert key in footer
    assert "space" not in footer, "space only talks in push-to-talk mode"


def test_states_have_their_own_words() -> None:
    model = TuiModel()
    for state, words in (
        (TurnState.LISTENING, "listening"), (TurnState.USER_SPEAKING, "you're speaking"),
        (TurnState.THINKING, "thinking"), (TurnState.ASSISTANT_SPEAKING, "speaking"),
    ):
        model.apply(StateChanged(state, 0, TurnState.LISTENING))
        assert f"● {words}" in screen(model)
    assert "no turns yet" in screen(model)


def test_muted_and_push_to_talk_indicators() -> None:
    model = TuiModel()
    model.muted = True
    model.push_to_talk = True
    model.voice, model.speed = "af_bella", 1.25
    text = screen(model)
    assert "muted" in text and "m unmute" in text
    assert "push-to-talk: space to talk" in text and "space talk" in text
    assert "v voice af_bella" in text and "speed 1.25×" in text
    model.talking = True
    assert "push-to-talk: talking" in screen(model)


def test_partial_text_is_dim_italic_after_the_stable_prefix() -> None:
    model = TuiModel()
    model.apply(PartialTranscript("stop, wait a", 0, stable="stop,"))
    text = screen(model, styles=True)
    assert "stop,\x1b[2;3m wait a" in text


def test_interrupted_reply_is_marked() -> None:
    model = conversation()
    model.apply(FinalTranscript("tell me a story", 1))
    model.apply(AssistantTextDelta("Once upon a time", 2))
    model.apply(FlushPlayback(3))
    text = screen(model)
    assert "Once upon a time …(interrupted)" in text
    assert "sunny and warm. …(interrupted)" not in text


def test_qr_code_shown_when_wide_and_hidden_when_narrow() -> None:
    wide = screen(conversation(), width=100)
    assert QR_ROW in wide
    assert URL in wide
    narrow = screen(conversation(), width=60)
    assert QR_ROW not in narrow and "▄▄▄▄▄" not in narrow
    assert URL in narrow, "the join URL stays when the QR code goes"
    assert "you What is the weather like?" in narrow


def test_qr_code_hidden_when_the_screen_is_too_short() -> None:
    text = screen(conversation(), height=24)
    assert QR_ROW not in text
    assert "It is sunny and warm." in text


def test_header_facts() -> None:
    text = screen(TuiModel(), header(gpu=None, join_urls=[], qr=""))
    for fact in ("stt whisper-small.en", "llm qwen2.5-1.5b", "tts kokoro", "cpu 12%", "gpu none", "sessions 3",
                 "mic USB mic", "speaker speakers", "LAN server off"):
        assert fact in text


def test_conversation_shows_the_most_recent_lines_that_fit() -> None:
    model = TuiModel()
    for i in range(60):
        model.apply(FinalTranscript(f"message number {i}", i))
    text = screen(model, height=30)
    assert "message number 59" in text
    assert "message number 0" not in text and not re.search(r"message number 1\b", text)
    shown = [int(n) for n in re.findall(r"message number (\d+)", text)]
    assert shown == list(range(shown[0], 60)), "a contiguous run of the newest lines"
    assert len(text.rstrip("\n").splitlines()) == 30, "the screen fills the height exactly"


def test_width_argument_overrides_the_console() -> None:
    console = Console(record=True, width=120, height=40, file=io.StringIO())
    console.print(render(conversation(), header(), width=60))
    text = console.export_text()
    assert max(len(row) for row in text.splitlines()) <= 60
    assert QR_ROW not in text
