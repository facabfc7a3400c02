"""ConversationStore: journals on disk, torn writes, garbage, retention, and the history listener."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator

import pytest

from voicechat.core.history import ConversationHistory, HistoryChange
from voicechat.session.conversation_store import ConversationStore, parse_journal, token_hash

TOKEN = "resume-token-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def make_store() -> Iterator:
    """ConversationStores that are closed (their sync thread stopped) after the test."""
    stores: list[ConversationStore] = []

    def make(*args, **kwargs) -> ConversationStore:
        stores.append(ConversationStore(*args, **kwargs))
        return stores[-1]

    yield make
    for store in stores:
        store.close()
    assert not any(t.name == "conversation-sync" for t in threading.enumerate())


def journaled(store: ConversationStore, token: str = TOKEN) -> ConversationHistory:
    history = ConversationHistory("system", 10_000)
    history.listener = store.open("sess1", token)
    return history


def restored(store: ConversationStore, token: str = TOKEN) -> ConversationHistory:
    stored = store.load(token)
    assert stored is not None
    history = ConversationHistory("system", 10_000)
    history.replay(stored.changes)
    return history


def three_turns(history: ConversationHistory) -> None:
    history.add_user("one")
    history.add_assistant("reply one")
    history.add_user("two")
    history.add_assistant("reply two")
    history.add_user("three")


def test_a_journal_replays_into_the_same_history(tmp_path, make_store):
    store = make_store(tmp_path)
    history = journaled(store)
    three_turns(history)
    history.add_user("more of three")  # merged into one message, in memory and on replay
    history.discard_last_user()
    history.add_user("four")
    assert restored(store).turns == history.turns
    history.clear()
    history.add_user("after clear")
    assert restored(store).turns == history.turns == [history.turns[0]]


def test_the_file_name_does_not_reveal_the_token_and_only_its_owner_can_read_it(tmp_path, make_store):
    store = make_store(tmp_path / "conversations")
    journaled(store).add_user("secret words")
    (path,) = (tmp_path / "conversations").iterdir()
    assert TOKEN not in path.name and TOKEN not in path.read_text()
    assert path.name == token_hash(TOKEN)[:32] + ".jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    header = json.loads(path.read_text().splitlines()[0])
    assert header["t"] == "header" and header["session"] == "sess1" and header["token_sha256"] == token_hash(TOKEN)


def test_unknown_or_other_tokens_find_nothing(tmp_path, make_store):
    store = make_store(tmp_path)
    journaled(store).add_user("mine")
    assert store.load("someone else's token") is None
    # A file under the right name but with another token's header is not handed out.
    other = store.path_for("someone else's token")
    other.write_bytes(store.path_for(TOKEN).read_bytes())
    assert store.load("someone else's token") is None


def test_a_write_torn_anywhere_in_the_last_record_keeps_every_earlier_turn(tmp_path, make_store):
    store = make_store(tmp_path)
    three_turns(journaled(store))
    path = store.path_for(TOKEN)
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    for end in range(start, len(data) - 1):  # the crash: any part of the last record written
        path.write_bytes(data[:end])
        assert [m.content for m in restored(store).turns] == ["one", "reply one", "two", "reply two"], end
    path.write_bytes(data[:-1])  # all but its line end: the record is whole
    assert [m.content for m in restored(store).turns][-1] == "three"


def test_appending_after_a_torn_line_starts_a_new_line(tmp_path, make_store):
    store = make_store(tmp_path)
    three_turns(journaled(store))
    path = store.path_for(TOKEN)
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # "three" torn
    history = restored(store)
    history.listener = store.open("sess2", TOKEN)  # the restarted server goes on with the same file
    history.add_user("three again")
    history.add_assistant("reply three")
    again = store.load(TOKEN)
    assert again is not None and again.bad_lines == 1
    assert [m.content for m in restored(store).turns] == [
        "one", "reply one", "two", "reply two", "three again", "reply three"]


def test_garbage_appended_or_in_the_middle_is_skipped(tmp_path, make_store):
    store = make_store(tmp_path)
    history = journaled(store)
    history.add_user("one")
    path = store.path_for(TOKEN)
    with path.open("ab") as f:
        f.write(b"\x00\xff\xfe garbage\n[1, 2]\n{\"t\": \"user\", \"text\": 5}\n{\"t\": \"bogus\"}\n{not json\n")
    history.listener = store.open("sess1", TOKEN)
    history.add_assistant("reply one")
    with path.open("ab") as f:
        f.write(os.urandom(300).replace(b"\n", b""))  # and junk with no line end at all
    stored = store.load(TOKEN)
    assert stored is not None and stored.bad_lines == 6
    assert [c.text for c in stored.changes] == ["one", "reply one"]


def test_a_file_without_a_header_is_ignored(tmp_path, make_store):
    assert parse_journal(b'{"t":"user","text":"hi"}\n') is None
    assert parse_journal(b"") is None
    assert parse_journal(b'{"t":"header","token_sha256":"x"') is None  # torn header


def test_disk_errors_are_counted_not_raised(tmp_path, make_store):
    store = make_store(tmp_path)
    history = journaled(store)
    journal = history.listener
    assert journal is not None
    os.close(journal._fd)  # type: ignore[attr-defined]  # the disk goes away under it
    history.add_user("lost")  # must not raise into the pipeline
    assert history.turns[0].content == "lost"
    assert store.stats.errors == 1
    journal._fd = None  # type: ignore[attr-defined]  # already closed above


def test_prune_deletes_only_files_older_than_retention(tmp_path, make_store):
    now = 1_000_000_000.0
    store = make_store(tmp_path, retention_days=2, clock=lambda: now)
    old, new = "old-token", "new-token"
    store.open("a", old).close()
    store.open("b", new).close()
    os.utime(store.path_for(old), (now - 3 * 86400, now - 3 * 86400))
    os.utime(store.path_for(new), (now - 1 * 86400, now - 1 * 86400))
    assert store.prune() == 1
    assert not store.path_for(old).exists() and store.path_for(new).exists()
    assert make_store(tmp_path, retention_days=0).prune() == 0  # 0 keeps everything


def test_history_listener_hears_each_effective_change_once(tmp_path, make_store):
    heard: list[HistoryChange] = []
    history = ConversationHistory("system", 10_000, listener=heard.append)
    history.add_user("  ")  # nothing: no change
    history.discard_last_user()  # nothing to discard
    history.clear()  # already empty
    history.add_user("hello")
    history.discard_last_user()
    assert heard == [HistoryChange("user", "hello"), HistoryChange("discard_last_user")]
    history.replay([HistoryChange("user", "replayed")])  # replays are not heard again
    assert len(heard) == 2 and history.turns[0].content == "replayed"


def test_a_failing_listener_does_not_break_the_history():
    def broken(change: HistoryChange) -> None:
        raise RuntimeError("disk on fire")

    history = ConversationHistory("system", 10_000, listener=broken)
    history.add_user("still here")
    assert history.turns[0].content == "still here"


def test_set_budget_trims_oldest_first_and_reports_how_many():
    history = ConversationHistory("", 10_000)
    for i in range(10):
        history.add_user(f"question {i} " + "x" * 40)
        history.add_assistant(f"answer {i} " + "y" * 40)
    dropped = history.set_budget(60)
    assert dropped > 0 and len(history.turns) == 20 - dropped
    assert history.turns[0].role == "user" and history.token_count() <= 60
    assert history.turns[-1].content.startswith("answer 9")


def test_records_are_written_at_once_and_synced_on_the_sync_thread(tmp_path, make_store):
    store = make_store(tmp_path, fsync=True)
    history = journaled(store)
    for i in range(20):
        history.add_user(f"q{i}")
        history.add_assistant(f"a{i}")
    store.close()  # everything pending is synced
    snap = store.snapshot()
    assert snap["records"] == 41 and snap["errors"] == 0  # the header and 40 changes
    assert snap["write_ms_max"] >= snap["write_ms_mean"] > 0
    assert 1 <= snap["syncs"] <= 41 and snap["sync_ms_max"] > 0  # syncs coalesce when writes come faster


def test_a_slow_disk_does_not_hold_up_the_writer(tmp_path, make_store, monkeypatch):
    release, syncing = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def stuck_fsync(fd: int) -> None:
        syncing.set()
        release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", stuck_fsync)
    store = make_store(tmp_path)
    history = journaled(store)  # its header is written: the sync thread is now stuck in fsync
    assert syncing.wait(10)
    for i in range(10):  # would hang here if writers waited for the disk
        history.add_user(f"q{i}")
        history.add_assistant(f"a{i}")
    assert store.snapshot()["records"] == 21 and not release.is_set()
    release.set()
    store.close()
    assert len(restored(store).turns) == 20
