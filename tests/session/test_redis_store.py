"""RedisConversationStore against a real redis-server: the file store's promises, and Redis coming and going."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from voicechat.core.history import ConversationHistory, HistoryChange
from voicechat.session.conversation_format import encode_record, header_record, token_hash
from voicechat.session.redis_store import KEY_PREFIX, RedisConversationStore, redacted
from voicechat.session.store_api import StoreUnavailable

pytestmark = pytest.mark.timeout(60)
TOKEN = "resume-token-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def make_store(redis_server) -> Iterator:
    """RedisConversationStores on the test's redis-server, closed after the test."""
    stores: list[RedisConversationStore] = []

    def make(**kwargs) -> RedisConversationStore:
        stores.append(RedisConversationStore(redis_server.url, **kwargs))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def journaled(store: RedisConversationStore, token: str = TOKEN) -> ConversationHistory:
    history = ConversationHistory("system", 10_000)
    history.listener = store.open("sess1", token)
    return history


def restored(store: RedisConversationStore, token: str = TOKEN) -> ConversationHistory:
    stored = store.load(token)
    assert stored is not None
    history = ConversationHistory("system", 10_000)
    history.replay(stored.changes)
    return history


def test_a_conversation_replays_into_the_same_history(make_store):
    store = make_store()
    history = journaled(store)
    history.add_user("one")
    history.add_assistant("reply one")
    history.add_user("more of one")
    history.discard_last_user()
    history.add_user("two ünïcode \n newline")
    assert restored(store).turns == history.turns
    history.clear()
    history.add_user("after clear")
    assert restored(store).turns == history.turns
    assert store.snapshot()["records"] == 8 and store.snapshot()["errors"] == 0  # the header and 7 changes


def test_redis_never_holds_the_token_only_its_hash(make_store, redis_server):
    store = make_store()
    journaled(store).add_user("secret words")
    client = redis_server.client()
    digest = token_hash(TOKEN)
    base = f"{KEY_PREFIX}{{{digest}}}"
    assert sorted(client.keys("*")) == [base.encode(), f"{base}:writers".encode()]
    dump = b"".join(client.lrange(store.keys_for(TOKEN)[0], 0, -1)) + b"".join(
        k + v for k, v in client.hgetall(store.keys_for(TOKEN)[1]).items())
    assert TOKEN.encode() not in dump and digest.encode() in dump


def test_unknown_or_other_tokens_find_nothing(make_store, redis_server):
    store = make_store()
    journaled(store).add_user("mine")
    assert store.load("someone else's token") is None
    # A conversation under the right key but with another token's header is not handed out.
    client = redis_server.client()
    client.rpush(store.keys_for("other token")[0], *client.lrange(store.keys_for(TOKEN)[0], 0, -1))
    assert store.load("other token") is None


def test_readers_only_ever_see_whole_changes(make_store):
    store, reader = make_store(), make_store()
    history = journaled(store)
    expected = [f"question {i} " + "x" * (i * 37 % 500 + 1) for i in range(150)]
    everything = [t for text in expected for t in (text, text.upper())]
    seen: list[int] = []
    wrong: list[object] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            stored = reader.load(TOKEN)
            if stored is None:
                continue
            texts = [c.text for c in stored.changes]
            if stored.bad_lines or texts != everything[:len(texts)]:
                wrong.append(stored)
            seen.append(len(texts))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for text in expected:
            history.add_user(text)
            history.add_assistant(text.upper())
    finally:
        done.set()
        thread.join(30)
    assert not wrong and len(seen) > 5, (wrong[:1], len(seen))
    assert [c.text for c in reader.load(TOKEN).changes] == everything


def test_a_resent_append_is_never_duplicated(make_store, redis_server):
    """A change sent again after a timeout that Redis did carry out (the reply was lost) lands once."""
    store = make_store()
    keys = store.keys_for(TOKEN)
    header = encode_record(header_record("s", TOKEN, 0.0))
    rec = [encode_record({"t": "user", "text": f"r{i}"}) for i in range(4)]
    assert store.append(keys, header, "w1", 1, rec[:2]) == 3  # the header of a new conversation and 2
    assert store.append(keys, header, "w1", 1, rec[:2]) == 0  # all of it again
    assert store.append(keys, header, "w1", 2, rec[1:4]) == 2  # partly again
    assert store.append(keys, header, "w2", 1, rec[:1]) == 1  # another writer (a resumed session) goes on
    texts = [c.text for c in store.load(TOKEN).changes]
    assert texts == ["r0", "r1", "r2", "r3", "r0"]


@pytest.mark.parametrize("days", [2.0, 0.0])
def test_retention_is_a_ttl_that_every_change_renews(make_store, redis_server, days):
    store = make_store(retention_days=days)
    history = journaled(store)
    history.add_user("hello")
    client = redis_server.client()
    for key in store.keys_for(TOKEN):
        ttl = client.ttl(key)
        assert (172_700 < ttl <= 172_800) if days else ttl == -1, (key, ttl)  # -1: no expiry
    client.expire(store.keys_for(TOKEN)[0], 10)
    history.add_user("still talking")
    assert client.ttl(store.keys_for(TOKEN)[0]) == (client.ttl(store.keys_for(TOKEN)[1]) if days else -1)
    assert store.prune() == 0  # nothing to do: Redis expires them


def test_redis_down_mid_conversation_the_session_goes_on_and_catches_up(make_store, redis_server, caplog):
    store = make_store(retention_days=1, retry_after_s=0.0)
    history = journaled(store)
    history.add_user("before")
    history.add_assistant("reply before")
    redis_server.kill()  # no chance to flush: what it acknowledged must be in its AOF
    with caplog.at_level(logging.WARNING, logger="voicechat.session.redis_store"):
        history.add_user("while down")  # must not raise into the pipeline
        history.add_assistant("reply while down")
        assert history.turns[-1].content == "reply while down"
        with pytest.raises(StoreUnavailable):
            store.load(TOKEN)
        snap = store.snapshot()
        assert snap["available"] is False and snap["errors"] == 2 and snap["pending"] == 2
        redis_server.start()  # same port and directory: it reloads its AOF
        history.add_user("after")
    down = [r for r in caplog.records if r.levelno == logging.ERROR]
    back = [r for r in caplog.records if "is back after" in r.getMessage()]
    assert len(down) == 1 and "cannot be saved" in down[0].getMessage() and len(back) == 1
    assert [m.content for m in restored(store).turns] == [
        "before", "reply before", "while down", "reply while down", "after"]
    snap = store.snapshot()
    assert snap["available"] is True and snap["pending"] == 0 and snap["outages"] == 1
    assert snap["redis_appendfsync"] == "everysec"


def test_an_unreachable_redis_costs_one_timeout_then_waits(caplog):
    """Nothing listens there: the first change fails fast, the next ones wait in memory without a call."""
    store = RedisConversationStore("redis://127.0.0.1:1/0", timeout_s=0.2, retry_after_s=60)
    try:
        with caplog.at_level(logging.ERROR, logger="voicechat.session.redis_store"):
            history = journaled(store)
            for i in range(5):
                history.add_user(f"q{i}")
        assert store.snapshot()["errors"] == 6 and store.snapshot()["pending"] == 5
        assert len(caplog.records) == 1
        history.listener.close()  # during the pause: no call, the loss is said
        assert "could not be saved" in caplog.records[-1].getMessage()
    finally:
        store.close()


def test_changes_waiting_for_redis_are_bounded(caplog):
    store = RedisConversationStore("redis://127.0.0.1:1/0", timeout_s=0.2, retry_after_s=60, max_pending=3)
    try:
        history = journaled(store)
        for i in range(10):
            history.add_user(f"q{i}")
            history.add_assistant(f"a{i}")
        assert store.snapshot()["pending"] == 3 and store.snapshot()["dropped"] == 17
    finally:
        store.close()


def test_the_password_never_shows():
    assert redacted("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert redacted("rediss://me:hunter2@db/1") == "rediss://me:***@db/1"
    assert redacted("redis://db:6379/0") == "redis://db:6379/0"
    store = RedisConversationStore("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(store.snapshot())
    store.close()


def test_history_changes_reach_the_listener_in_order(make_store):
    store = make_store()
    journal = store.open("s", TOKEN)
    for change in (HistoryChange("user", "a"), HistoryChange("clear"), HistoryChange("user", "b")):
        journal(change)
    journal.close()
    assert journal.closed
    journal(HistoryChange("user", "after close"))  # ignored, not raised
    assert [(c.kind, c.text) for c in store.load(TOKEN).changes] == [("user", "a"), ("clear", ""), ("user", "b")]


def test_the_setting_chooses_the_store(tmp_path):
    from voicechat.assembly import conversation_store
    from voicechat.config.schema import Settings
    from voicechat.session.conversation_store import ConversationStore

    assert isinstance(conversation_store(Settings(server={"data_dir": str(tmp_path)})), ConversationStore)
    store = conversation_store(Settings(sessions={"store": "redis", "redis_url": "redis://127.0.0.1:1/2",
                                                  "retention_days": 3, "redis_timeout_s": 0.25}))
    assert isinstance(store, RedisConversationStore)  # nothing connects until a conversation is saved
    assert (store.url, store.retention_days, store.snapshot()["store"]) == ("redis://127.0.0.1:1/2", 3, "redis")
    store.close()
