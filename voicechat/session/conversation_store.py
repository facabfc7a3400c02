"""Conversations on disk: one append-only JSONL journal per session, so a restart loses nothing.

A file is named after a hash of the session's resume token (the name reveals
nothing a client could resume with) and holds a header record, then one record
per history change, each a single ``write()`` of one line, fsynced by default.
Reading keeps every complete line that parses and skips the rest, so a crash
mid-write (a torn last line) or junk appended later never costs an earlier
turn; appending to such a file first ends the torn line, so the next record
starts on a line of its own.

Each record is written (one ``write()``: it survives the process crashing)
on the thread that changed the history, which may be the event loop or hold a
session's lock; the fsync that makes it survive a power cut follows on one
sync thread, because under load an fsync took up to 38 ms where the write took
microseconds (docs/reliability.md). A failing disk is logged and counted, never
raised into the pipeline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from voicechat.core.history import HistoryChange
from voicechat.session.conversation_format import (
    StoredConversation,
    change_record,
    encode_record,
    header_record,
    parse_journal,
    token_hash,
)
from voicechat.session.store_api import StoreCounters

__all__ = ["ConversationStore", "Journal", "StoredConversation", "parse_journal", "token_hash"]

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


class Journal:
    """One session's open journal; call it with each history change (a ``HistoryListener``)."""

    def __init__(self, store: ConversationStore, path: Path, fd: int) -> None:
        self.store, self.path = store, path
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._failed = False

    def __call__(self, change: HistoryChange) -> None:
        self.write(change_record(change, self.store.clock()))

    def write(self, record: dict[str, object]) -> bool:
        """Append one record; False (logged once, counted) when the disk refuses."""
        line = encode_record(record) + b"\n"
        with self._lock:
            if self._fd is None:
                return False
            started = time.perf_counter()
            try:
                _write_all(self._fd, line)
            except OSError as err:
                self._failure(err)
                return False
            self.store.count_write(time.perf_counter() - started)
        if self.store.fsync:
            self.store.syncer.mark(self)
        return True

    def sync(self) -> None:
        """fsync what was written, on a duplicate of the fd: writers never wait for the disk."""
        with self._lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        started = time.perf_counter()
        try:
            os.fsync(fd)
        except OSError as err:
            with self._lock:
                self._failure(err)
            return
        finally:
            os.close(fd)
        self.store.count_sync(time.perf_counter() - started)

    def close(self) -> None:
        """Close the file (its last records synced first)."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.store.fsync:
                os.fsync(fd)
        except OSError as err:
            self._failure(err)
        finally:
            os.close(fd)

    def _failure(self, err: OSError) -> None:
        self.store.count_error()
        if not self._failed:
            self._failed = True
            log.error("conversation %s: cannot save: %s (the conversation goes on unsaved)", self.path.name, err)

    @property
    def closed(self) -> bool:
        return self._fd is None


class _Syncer:
    """One thread that fsyncs journals soon after they are written; started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._dirty: set[Journal] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def mark(self, journal: Journal) -> None:
        with self._cond:
            if not self._stopping:
                self._dirty.add(journal)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="conversation-sync", daemon=True)
                    self._thread.start()
                self._cond.notify()
                return
        journal.sync()  # the store is closed: sync here

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._dirty or self._stopping)
                batch, self._dirty = self._dirty, set()
                if not batch:
                    return  # stopping, and nothing left to sync
            for journal in batch:
                journal.sync()

    def stop(self, timeout: float = 10.0) -> None:
        """Sync what is pending, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ConversationStore(StoreCounters):
    """The journals in ``directory`` (created 0700; files 0600: they hold what people said)."""

    def __init__(
        self, directory: Path, *, fsync: bool = True, retention_days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.retention_days = retention_days
        self.clock = clock
        self.syncer = _Syncer()
        super().__init__()

    def close(self) -> None:
        """Sync what is pending and stop the sync thread (journals opened later sync as they write)."""
        self.syncer.stop()

    def path_for(self, token: str) -> Path:
        return self.directory / f"{token_hash(token)[:32]}{SUFFIX}"

    def open(self, session_id: str, token: str) -> Journal:
        """The journal of ``token``'s conversation, for appending (a header first if it is new).

        Raises OSError when the directory or file cannot be made.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path_for(token)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
        journal = Journal(self, path, fd)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                journal.write(header_record(session_id, token, self.clock()))
            elif not _ends_with_newline(path, size):
                _write_all(fd, b"\n")  # end a torn last line so the next record starts on its own
        except OSError:
            journal.close()
            raise
        return journal

    def open_or_none(self, session_id: str, token: str) -> Journal | None:
        """``open``, or None (logged, counted) when the disk refuses: the session goes on unsaved."""
        try:
            return self.open(session_id, token)
        except OSError as err:
            self.count_error()
            log.error("session %s: its conversation will not be saved: %s", session_id, err)
            return None

    def load(self, token: str) -> StoredConversation | None:
        """The saved conversation of ``token``, or None (none saved, unreadable, or another token's)."""
        path = self.path_for(token)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.error("cannot read saved conversation %s: %s", path.name, err)
            return None
        stored = parse_journal(data, token_hash(token))
        if stored is None:
            log.warning("saved conversation %s has no valid header: ignored", path.name)
            return None
        self.count_restored(stored)
        if stored.bad_lines:
            log.warning("saved conversation %s: %d torn or garbled line(s) skipped", path.name, stored.bad_lines)
        return stored

    def prune(self) -> int:
        """Delete journals unchanged for ``retention_days`` (0: keep all); returns how many went."""
        if self.retention_days <= 0 or not self.directory.is_dir():
            return 0
        cutoff = self.clock() - self.retention_days * 86400
        pruned = 0
        for path in self.directory.glob(f"*{SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    pruned += 1
            except OSError as err:
                log.warning("cannot prune %s: %s", path.name, err)
        self.count_pruned(pruned)
        if pruned:
            log.info("pruned %d conversation(s) older than %g days", pruned, self.retention_days)
        return pruned

    def snapshot(self) -> dict[str, object]:
        return {"store": "files", "directory": str(self.directory), "fsync": self.fsync, **self.counter_snapshot()}


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"

