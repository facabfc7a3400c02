"""A reply's turn metrics: sent once, and for a cut reply only where its listener heard something."""

from voicechat.core.events import EndOfTurn
from voicechat.core.reply_tracker import ReplyTracker
from voicechat.session.live_reply import LiveReply


def reply(**stamps: float) -> LiveReply:
    return LiveReply(3, 2, "hi", ReplyTracker(2, 16000), dict(stamps), EndOfTurn(250.0, audio=0.9, words=0.8))


def test_metrics_go_out_once() -> None:
    live = reply(voice_end=1.0, first_audio=1.6)
    metrics = live.metrics()
    assert metrics is not None and metrics.generation == 2 and not metrics.interrupted
    assert metrics.stamps == {"voice_end": 1.0, "first_audio": 1.6} and metrics.end_of_turn == live.end_of_turn
    assert live.metrics() is None and live.metrics(interrupted=True) is None  # cut after they went out: not again


def test_a_cut_reply_reports_only_once_its_first_audio_went_out() -> None:
    assert reply(voice_end=1.0, first_token=1.3).metrics(interrupted=True) is None  # nothing reached the listener
    cut = reply(voice_end=1.0, first_audio=1.6).metrics(interrupted=True)
    assert cut is not None and cut.interrupted and not cut.prepared
