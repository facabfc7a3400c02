"""What the SessionManager needs of a conversation store, whichever backend it is (files, Redis).

``ConversationBackend`` and ``ConversationJournal`` are the interface;
``StoreCounters`` is the bookkeeping both backends share (records, errors,
write and sync times, restores), so their snapshots, metrics and
``/health/detailed`` read the same way.

The promises every backend keeps (tested against each):

- a change is saved by the time its listener call returns (or counted as an
  error and logged), so nothing a client was told about is lost when the
  voicechat process dies;
- a reader sees whole changes only, never half of one;
- the resume token is never stored, only ``token_hash(token)``;
- a store that fails never raises into the pipeline: the session goes on,
  unsaved, and the failure is logged and counted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from voicechat.core.history import HistoryChange
from voicechat.session.conversation_format import StoredConversation

log = logging.getLogger(__name__)

SLOW_WRITE_S = 0.05  # warn (once per store) when one record takes longer: a slow disk or a far Redis


class StoreUnavailable(Exception):
    """The store cannot be read right now (its server is down); a later try may work."""


class ConversationJournal(Protocol):
    """One session's saved conversation, open for appending; called with each history change."""

    def __call__(self, change: HistoryChange) -> None:
        """Save ``change`` before returning; never raises (a failure is logged and counted)."""

    def close(self) -> None:
        """Save what is still pending if possible, then stop saving; idempotent."""

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""


class ConversationBackend(Protocol):
    """Where conversations are saved, found again by resume token, and expired."""

    stats: StoreStats

    def open_or_none(self, session_id: str, token: str) -> ConversationJournal | None:
        """The journal of ``token``'s conversation (created if new), or None when nothing can be saved."""

    def load(self, token: str) -> StoredConversation | None:
        """``token``'s saved conversation; None when there is none (or it is another token's).

        Raises StoreUnavailable when the store cannot answer now.
        """

    def prune(self) -> int:
        """Delete conversations past their retention; how many went."""

    def close(self) -> None:
        """Finish pending work and release what the store holds (threads, connections)."""

    def snapshot(self) -> dict[str, object]:
        """Counters and settings for ``/health/detailed`` and ``/metrics``."""


@dataclass
class StoreStats:
    records: int = 0
    errors: int = 0
    write_s_total: float = 0.0
    write_s_max: float = 0.0
    writes: int = 0
    syncs: int = 0
    sync_s_total: float = 0.0
    sync_s_max: float = 0.0
    restored: int = 0
    bad_lines: int = 0
    pruned: int = 0


class StoreCounters:
    """Thread-safe counters of a store; ``counter_snapshot`` is the part of its snapshot all backends share."""

    def __init__(self) -> None:
        self.stats = StoreStats()
        self._lock = threading.Lock()
        self._warned_slow = False

    def count_write(self, seconds: float, records: int = 1) -> None:
        """One write (of ``records`` records) that took ``seconds``; the first slow one is logged."""
        with self._lock:
            self.stats.records += records
            self.stats.writes += 1
            self.stats.write_s_total += seconds
            self.stats.write_s_max = max(self.stats.write_s_max, seconds)
            slow = seconds > SLOW_WRITE_S and not self._warned_slow
            self._warned_slow = self._warned_slow or slow
        if slow:
            log.warning("saving a conversation record took %.0f ms (a slow or busy disk or store)", seconds * 1000)

    def count_sync(self, seconds: float) -> None:
        with self._lock:
            self.stats.syncs += 1
            self.stats.sync_s_total += seconds
            self.stats.sync_s_max = max(self.stats.sync_s_max, seconds)

    def count_error(self, n: int = 1) -> None:
        with self._lock:
            self.stats.errors += n

    def count_restored(self, stored: StoredConversation) -> None:
        with self._lock:
            self.stats.restored += 1
            self.stats.bad_lines += stored.bad_lines

    def count_pruned(self, n: int) -> None:
        with self._lock:
            self.stats.pruned += n

    def counter_snapshot(self) -> dict[str, object]:
        with self._lock:
            s = self.stats
            return {
                "records": s.records, "errors": s.errors,
                "write_ms_mean": round(1000 * s.write_s_total / s.writes, 3) if s.writes else None,
                "write_ms_max": round(1000 * s.write_s_max, 3), "syncs": s.syncs,
                "sync_ms_mean": round(1000 * s.sync_s_total / s.syncs, 3) if s.syncs else None,
                "sync_ms_max": round(1000 * s.sync_s_max, 3), "restored": s.restored,
                "bad_lines": s.bad_lines, "pruned": s.pruned,
            }
