"""SessionManager: admission, resume, idle timeout, grace expiry."""

import threading
import time

import pytest
from support.engines import scripted_engines

from voicechat.audio import AudioFrame
from voicechat.session.conversation_store import ConversationStore
from voicechat.session.manager import AdmissionError, ResumeError, SessionLimits, SessionManager
from voicechat.session.pipeline import PipelineOptions
from voicechat.session.redis_store import RedisConversationStore


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
    for wrong in ("wrong token", "\u0080 non-ASCII", "\udc80"):  # never a TypeError from compare_digest
        with pytest.raises(ResumeError):
            manager.resume(wrong)
    resumed = manager.resume(s.resume_token)
    assert resumed is s and resumed.connected
    assert resumed.pipeline.history.turns[0].content == "remember me"
    with pytest.raises(ResumeError, match="still connected"):
        manager.resume(s.resume_token)
    assert manager.resume(s.resume_token, take_over=True) is s and s.attachment == 2
    manager.detach(s.id, attachment=1)  # the connection that was taken over closes late: ignored
    assert s.connected


def test_the_users_mute_is_kept_across_a_resume_and_the_detached_session_listens_to_nothing(make_manager):
    manager = make_manager(limits=SessionLimits(resume_grace_s=30))
    s = manager.create("test")
    for muted in (True, False):
        manager.set_muted(s, muted)
        manager.detach(s.id)
        assert s.pipeline.capture.muted, "nobody is there to listen to"
        assert manager.resume(s.resume_token) is s
        assert (s.muted, s.pipeline.capture.muted) == (muted, muted)


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


# -- saved conversations --------------------------------------------------------------


@pytest.fixture(params=["files", "redis"])
def stored_manager(request, tmp_path):
    """Managers over one conversation directory, or one Redis, as successive server runs would have."""
    made: list[SessionManager] = []
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else ""

    def make(options: PipelineOptions | None = None, **limits) -> SessionManager:
        store = RedisConversationStore(redis_url) if redis_url else ConversationStore(tmp_path)
        manager = SessionManager(scripted_engines(), SessionLimits(**limits), options, store=store)
        manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown()
        manager.engines.close()


def test_a_restarted_manager_restores_a_conversation_by_its_token(stored_manager):
    first = stored_manager()
    s = first.create("ws")
    s.pipeline.history.add_user("remember me")
    s.pipeline.history.add_assistant("I will")
    first.shutdown()  # the server stops

    second = stored_manager()
    with pytest.raises(ResumeError, match="expired or unknown"):
        second.resume("not a token anyone has")
    restored = second.resume(s.resume_token)
    assert restored.restored and restored.resume_token == s.resume_token and restored.id != s.id
    assert [(m.role, m.content) for m in restored.pipeline.history.turns] == [
        ("user", "remember me"), ("assistant", "I will")]
    assert second.resume(s.resume_token, take_over=True) is restored  # now it is live: a normal resume
    restored.pipeline.history.add_user("and this")  # the restored session goes on saving
    second.shutdown()
    third = stored_manager()
    assert [m.content for m in third.resume(s.resume_token).pipeline.history.turns][-1] == "and this"
    assert third.snapshot()["conversations"]["restored"] == 1


def test_a_session_past_its_grace_is_restored_from_disk(stored_manager):
    manager = stored_manager(resume_grace_s=0.2)
    s = manager.create("ws")
    s.pipeline.history.add_user("still here?")
    manager.detach(s.id)
    assert manager.wait_until_gone(s.id, timeout=10)
    assert manager.resume(s.resume_token).pipeline.history.turns[0].content == "still here?"


def test_concurrent_resumes_of_one_saved_conversation_make_one_session(stored_manager):
    first = stored_manager()
    token = first.create("ws").resume_token
    first.shutdown()
    second = stored_manager()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(second.resume(token, take_over=True)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 4 and len({id(r) for r in results}) == 1 and len(second) == 1


def test_a_restore_refused_for_lack_of_room_is_a_resume_error(stored_manager):
    first = stored_manager()
    token = first.create("ws").resume_token
    first.shutdown()
    full = stored_manager(max_sessions=1)
    full.create("ws")
    with pytest.raises(ResumeError, match="saved but cannot be restored now: server full"):
        full.resume(token)


def test_closing_mid_reply_saves_what_was_heard(stored_manager):
    from voicechat.core.events import ReplyDone

    manager = stored_manager(PipelineOptions(playback_reports=True))
    s = manager.create("ws")
    s.pipeline.send_text("tell me a long story")
    deadline = time.monotonic() + 10
    while not isinstance(done := s.pipeline.outbox.get(timeout=max(0.0, deadline - time.monotonic())), ReplyDone):
        pass  # until all of the reply's audio is out (it plays on until the client says it finished)
    s.pipeline.report_playback(done.generation, done.total_samples // 2)  # the client played half of it
    manager.close(s.id, "test")
    assert s.journal is not None and s.journal.closed
    stored = manager.store.load(s.resume_token)
    assert stored is not None
    assert [c.kind for c in stored.changes] == ["user", "assistant"]  # the part of the reply heard so far
    heard = stored.changes[1].text
    assert heard and done.text.startswith(heard) and len(heard) < len(done.text)


def test_an_unwritable_store_leaves_sessions_working(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    manager = SessionManager(scripted_engines(), store=ConversationStore(blocked / "conversations"))
    try:
        s = manager.create("ws")
        s.pipeline.history.add_user("unsaved but fine")
        assert s.journal is None and manager.store.stats.errors == 1
    finally:
        manager.shutdown()
        manager.engines.close()
