"""Conversations in Redis: what the JSONL files keep, in a server several voicechat processes share.

One Redis list per conversation, keyed by the hash of its resume token
(``<prefix>{<sha256 hex>}``; the token itself is never sent), holding the same
records as a journal file (``conversation_format``): the header, then one
element per history change. A second key beside it (``…:writers``, a hash)
remembers how many records each journal has appended, so a change resent after
an ambiguous failure (a timeout after Redis ran it) is never appended twice.
Both keys carry a TTL of ``retention_days``, renewed by every change: the file
store's "unchanged for that long is deleted", kept by Redis itself.

Every change is one Lua script (atomic: a reader sees all of it or none,
and the AOF logs it as one MULTI/EXEC that a crash cannot tear), sent on the
thread that changed the history, before the listener call returns, like the
file store's ``write()``. How long Redis then keeps it is its persistence
settings' promise (``appendonly``/``appendfsync``, docs/reliability.md); a
server without AOF is warned about once.

Redis down or unreachable: the change stays in the journal's memory (at most
``max_pending`` records a session), the failure is logged once per outage and
counted, and the session goes on. For ``retry_after_s`` no call is tried (so a
dead server costs one timeout, not one per change); the next change after that
sends everything that waited, in order, and the store logs that it is back.
There is no thread: connections come from one bounded pool, every call has a
timeout (``timeout_s``), and ``close`` releases them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from voicechat.core.history import HistoryChange
from voicechat.session.conversation_format import (
    StoredConversation,
    change_record,
    encode_record,
    header_record,
    parse_records,
    token_hash,
)
from voicechat.session.store_api import StoreCounters, StoreUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "voicechat:conversation:"
# KEYS[1] the records, KEYS[2] records appended per writer; ARGV: ttl seconds (0: keep), header record,
# writer id, number of the first record given (from 1), the records. Returns how many records were appended
# (the header of a new conversation included; records this writer had appended already are skipped).
APPEND_SCRIPT = """
local new = redis.call('EXISTS', KEYS[1]) == 0
if new then redis.call('RPUSH', KEYS[1], ARGV[2]) end
local done = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
local first, n = tonumber(ARGV[4]), #ARGV - 4
local skip = math.max(0, done - first + 1)
if n > skip then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 5 + skip))
  redis.call('HSET', KEYS[2], ARGV[3], first + n - 1)
end
if new or n > skip then
  local ttl = tonumber(ARGV[1])
  for _, key in ipairs(KEYS) do
    if ttl > 0 then redis.call('EXPIRE', key, ttl) else redis.call('PERSIST', key) end
  end
end
return (new and 1 or 0) + math.max(0, n - skip)
"""


def redacted(url: str) -> str:
    """``url`` without its password, for logs and ``/health``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class RedisJournal:
    """One session's conversation in Redis; call it with each history change (a ``ConversationJournal``)."""

    def __init__(self, store: RedisConversationStore, keys: tuple[str, str], header: bytes) -> None:
        self.store, self.keys = store, keys
        self._header = header
        self._writer = secrets.token_hex(8)
        self._pending: list[bytes] = []  # records not yet in Redis, oldest first
        self._first = 1  # number of the first pending record (of this writer)
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, change: HistoryChange) -> None:
        self.write(encode_record(change_record(change, self.store.clock())))

    def write(self, record: bytes) -> bool:
        """Send ``record`` (after any that wait); True when it is in Redis. Never raises."""
        with self._lock:
            if self._closed:
                return False
            self._pending.append(record)
            if len(self._pending) > self.store.max_pending:
                self._pending.pop(0)  # the oldest waiting change is given up: counted, and said once
                self._first += 1
                self.store.count_dropped()
            return self._flush(force=False)

    def flush(self, force: bool = False) -> bool:
        """Send what waits (and the header of a new conversation); ``force`` ignores the retry pause."""
        with self._lock:
            return self._flush(force)

    def _flush(self, force: bool) -> bool:
        """Send what waits; a failure (or a skipped try) counts one error. Lock held."""
        waiting = len(self._pending)
        if not (force or self.store.may_try()):
            self.store.count_error()
            return False
        started = time.perf_counter()
        try:
            appended = self.store.append(self.keys, self._header, self._writer, self._first, self._pending)
        except redis.RedisError as err:
            self.store.failed(err)
            return False
        self.store.succeeded(time.perf_counter() - started, appended)
        self._first += waiting
        self._pending.clear()
        return True

    @property
    def pending(self) -> int:
        """Changes waiting for Redis (read without the lock: a flush may be waiting on Redis)."""
        return len(self._pending)

    def close(self) -> None:
        """One last try to send what waits (not during a known outage), then stop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pending and not self._flush(force=False):
                log.error("conversation %s…: %d change(s) could not be saved before its session closed",
                          self.keys[0][-12:], len(self._pending))
        self.store.forget(self)

    @property
    def closed(self) -> bool:
        return self._closed


class RedisConversationStore(StoreCounters):
    """Conversations in the Redis at ``url`` (a ``ConversationBackend``); nothing is sent until used."""

    def __init__(
        self, url: str, *, retention_days: float = 0.0, timeout_s: float = 0.5, retry_after_s: float = 1.0,
        max_pending: int = 1000, max_connections: int = 16, prefix: str = KEY_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.url, self.retention_days, self.prefix, self.clock = url, retention_days, prefix, clock
        self.retry_after_s, self.max_pending = retry_after_s, max_pending
        # Waits at most timeout_s for a free connection; each command at most timeout_s; one immediate retry
        # on a broken connection (one Redis dropped when it restarted) is safe: appends are idempotent.
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1))
        self._redis = redis.Redis(connection_pool=self._pool)
        self._append = self._redis.register_script(APPEND_SCRIPT)
        self._state = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._durability: str | None = None  # Redis's appendfsync, "off" without AOF; None until asked
        self._journals: set[RedisJournal] = set()
        self._dropped = self._outages = 0

    # -- the ConversationBackend interface ----------------------------------------------
    def keys_for(self, token: str) -> tuple[str, str]:
        """The conversation's record list and its writers hash (one hash slot: ``{…}``)."""
        base = f"{self.prefix}{{{token_hash(token)}}}"
        return base, base + ":writers"

    def open(self, session_id: str, token: str) -> RedisJournal:
        """``token``'s journal; its header is sent now, or with the first change that reaches Redis."""
        header = encode_record(header_record(session_id, token, self.clock()))
        journal = RedisJournal(self, self.keys_for(token), header)
        with self._state:
            self._journals.add(journal)
        journal.flush()
        return journal

    def open_or_none(self, session_id: str, token: str) -> RedisJournal:
        """Always a journal: while Redis is away it keeps the changes and sends them when it is back."""
        return self.open(session_id, token)

    def load(self, token: str) -> StoredConversation | None:
        """``token``'s conversation, read in one command; raises StoreUnavailable when Redis does not answer."""
        key = self.keys_for(token)[0]
        try:
            records = self._redis.lrange(key, 0, -1)
        except redis.RedisError as err:
            self.failed(err, count=False)
            raise StoreUnavailable(f"Redis at {redacted(self.url)}: {err}") from None
        self.succeeded(None, 0)
        if not records:
            return None
        stored = parse_records(records, token_hash(token))
        if stored is None:
            log.warning("saved conversation %s… has no valid header: ignored", key[-12:])
            return None
        self.count_restored(stored)
        if stored.bad_lines:
            log.warning("saved conversation %s…: %d garbled record(s) skipped", key[-12:], stored.bad_lines)
        return stored

    def prune(self) -> int:
        """Nothing to do: Redis expires conversations itself (their TTL is ``retention_days``)."""
        return 0

    def close(self) -> None:
        """Close the pool's connections (journals still open keep what they could not send)."""
        self._pool.disconnect()

    def snapshot(self) -> dict[str, object]:
        with self._state:
            journals = list(self._journals)
            state = {"store": "redis", "redis": redacted(self.url), "available": self._down_since is None,
                     "redis_appendfsync": self._durability, "outages": self._outages, "dropped": self._dropped}
        return {**state, "pending": sum(j.pending for j in journals), **self.counter_snapshot()}

    # -- used by the journals --------------------------------------------------------------
    def append(self, keys: tuple[str, str], header: bytes, writer: str, first: int, records: list[bytes]) -> int:
        """Append ``records`` (numbered from ``first`` for ``writer``) in one atomic script; raises RedisError."""
        ttl = max(0, round(self.retention_days * 86400))
        return int(self._append(keys=list(keys), args=[ttl, header, writer, first, *records]))

    def may_try(self) -> bool:
        """False during the pause after a failure (the change waits instead of paying another timeout)."""
        with self._state:
            return self._down_since is None or time.monotonic() >= self._retry_at

    def failed(self, err: redis.RedisError, count: bool = True) -> None:
        """A call failed (counted as an error if ``count``); the first failure of an outage is logged."""
        if count:
            self.count_error()
        with self._state:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self._outages += 1
            self._retry_at = time.monotonic() + self.retry_after_s
        if first:
            log.error("conversations cannot be saved: Redis at %s: %s (sessions go on; their changes wait in "
                      "memory and are saved when it is back)", redacted(self.url), err)

    def succeeded(self, seconds: float | None, records: int) -> None:
        """A call worked: count the write, and say once that an outage is over."""
        if seconds is not None:
            self.count_write(seconds, records)
        with self._state:
            down_since, self._down_since = self._down_since, None
            ask = self._durability is None
            if ask:
                self._durability = "unknown"  # asked once, by this thread
        if down_since is not None:
            log.warning("Redis at %s is back after %.1f s: conversations are saved again",
                        redacted(self.url), time.monotonic() - down_since)
        if ask:
            self._ask_durability()

    def count_dropped(self) -> None:
        with self._state:
            self._dropped += 1
            first = self._dropped == 1
        if first:
            log.error("a session's unsaved changes exceeded %d while Redis was away: the oldest are given up",
                      self.max_pending)

    def forget(self, journal: RedisJournal) -> None:
        with self._state:
            self._journals.discard(journal)

    def _ask_durability(self) -> None:
        """Read Redis's persistence settings once, and warn when an acknowledged change could be lost."""
        try:
            aof = self._redis.info("persistence").get("aof_enabled")
            fsync = self._redis.config_get("appendfsync").get("appendfsync") if aof else "off"
        except redis.RedisError as err:  # CONFIG may be disabled (managed Redis): not knowing is fine
            log.info("cannot read Redis's persistence settings: %s", err)
            fsync = "unknown"
        with self._state:
            self._durability = str(fsync)
        if fsync == "off":
            log.warning("Redis at %s has appendonly off: saved conversations are lost if Redis restarts "
                        "(docs/reliability.md)", redacted(self.url))
