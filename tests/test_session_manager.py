"""SessionManager: admission, resume, idle timeout, grace expiry."""

import pytest

from voicechat.audio import AudioFrame
from voicechat.session_manager import AdmissionError, ResumeError, SessionLimits


def test_admission_refuses_beyond_max_sessions(make_manager):
    manager = make_manager(limits=SessionLimits(max_sessions=2))
    manager.create("test")
    manager.create("test")
    with pytest.raises(AdmissionError, match="2 of 2 sessions"):
        manager.create("test")
    assert manager.stats.refused == 1
    assert len(manager) == 2


def test_closing_frees_a_slot_and_is_idempotent(make_manager):
    manager = make_manager(limits=SessionLimits(max_sessions=1))
    s = manager.create("test")
    assert manager.close(s.id) is not None
    assert manager.close(s.id) is None
    manager.create("test")


def test_resume_within_grace_keeps_the_conversation(make_manager):
    manager = make_manager(limits=SessionLimits(resume_grace_s=30))
    s = manager.create("test")
    s.pipeline.history.add_user("remember me")
    manager.detach(s.id)
    with pytest.raises(ResumeError):
        manager.resume("wrong token")
    resumed = manager.resume(s.resume_token)
    assert resumed is s and resumed.connected
    assert resumed.pipeline.history.turns[0].content == "remember me"
    with pytest.raises(ResumeError, match="still connected"):
        manager.resume(s.resume_token)
    assert manager.resume(s.resume_token, take_over=True) is s and s.attachment == 2
    manager.detach(s.id, attachment=1)  # the connection that was taken over closes late: ignored
    assert s.connected


def test_disconnected_session_is_closed_when_grace_expires(make_manager):
    manager = make_manager(limits=SessionLimits(resume_grace_s=0.3))
    s = manager.create("test")
    manager.detach(s.id)
    assert manager.wait_until_gone(s.id, timeout=10)
    assert manager.stats.close_reasons == {"resume grace expired": 1}
    with pytest.raises(ResumeError):
        manager.resume(s.resume_token)


def test_idle_session_is_reaped_and_activity_keeps_one_alive(make_manager):
    manager = make_manager(limits=SessionLimits(idle_timeout_s=0.5))
    idle, busy = manager.create("test"), manager.create("test")
    busy.pipeline.feed_audio(AudioFrame(bytes(640), 16000))
    assert manager.wait_until_gone(idle.id, timeout=10)
    assert manager.stats.close_reasons.get("idle timeout", 0) >= 1


def test_snapshot_reports_sessions_and_queues(make_manager):
    manager = make_manager()
    s = manager.create("test")
    snap = manager.snapshot()
    assert snap["sessions"] == 1
    (entry,) = snap["per_session"]
    assert entry["id"] == s.id and entry["state"] == "listening"
    assert set(entry["queues"]) == {"capture", "reply", "sentence", "events"}


def test_sessions_write_nothing_to_stdout(make_manager, capfd):
    """RealtimeSTT prints on every recorder close; a terminal UI owns stdout, so those lines go to its logger."""
    manager = make_manager()
    session = manager.create("test")
    manager.close(session.id)
    assert capfd.readouterr().out == ""
