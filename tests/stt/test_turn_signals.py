"""Which judges end a turn, from the configuration (``listening_setup.turn_signals``); the fixed rule without
a model."""

import logging

from voicechat.config.loading import Settings
from voicechat.listening_setup import turn_signals
from voicechat.stt.transcript_end import words_score


def settings(**vad: object) -> Settings:
    return Settings(vad=vad)


def test_the_default_judges_by_the_language_models_words_and_loads_no_audio_model():
    signals = turn_signals(settings())
    assert signals.judge is not None and signals.llm_words and signals.audio is None
    assert signals.words is words_score  # where the language model cannot tell
    assert not signals.judge(0.1, None, 0.99)  # never before vad.min_silence_s
    assert signals.judge(0.25, None, 0.9)
    assert not signals.judge(0.25, None, 0.1) and signals.judge(1.5, None, 0.1)  # held up to max_silence_s


def test_silence_mode_has_no_judge():
    signals = turn_signals(settings(end_of_turn="silence"))
    assert signals.judge is None and signals.audio is None


def test_without_the_smart_turn_file_the_fixed_silence_runs_and_the_log_says_so(tmp_path, caplog):
    missing = tmp_path / "smart-turn-v3.2-cpu.onnx"
    with caplog.at_level(logging.WARNING):
        signals = turn_signals(settings(turn_combine="both", turn_model=str(missing)))
    assert signals.judge is None and signals.audio is None
    (record,) = [r for r in caplog.records if "Smart Turn" in r.getMessage()]
    message = record.getMessage()
    assert str(missing) in message and "models download" in message and "post_speech_silence_s" in message
