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

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voicechat.core.history import HistoryChange

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".jsonl"
CHANGE_KINDS = ("user", "assistant", "clear", "discard_last_user")
SLOW_WRITE_S = 0.05  # warn (once per store) when one record takes longer: a slow disk, consider fsync off


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()  # any str, even a lone surrogate


@dataclass(frozen=True)
class StoredConversation:
    """What a journal file holds: who it belongs to and its history changes in order."""

    session_id: str
    created: float
    changes: list[HistoryChange]
    bad_lines: int = 0  # torn or garbled lines that were skipped


@dataclass
class StoreStats:
    records: int = 0
    errors: int = 0
    write_s_total: float = 0.0
    write_s_max: float = 0.0
    syncs: int = 0
    sync_s_total: float = 0.0
    sync_s_max: float = 0.0
    restored: int = 0
    bad_lines: int = 0
    pruned: int = 0


def parse_journal(data: bytes, token_sha256: str | None = None) -> StoredConversation | None:
    """The conversation in a journal's bytes; None without a valid header (or with another token's).

    Lines that are not valid records are skipped: a write the process did not
    finish leaves a last line that does not parse (a record is one JSON object
    on one line), and garbage anywhere costs only its own lines.
    """
    bad = 0
    header: dict[str, object] | None = None
    changes: list[HistoryChange] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            bad += 1
        elif header is None:
            if record.get("t") != "header" or not isinstance(record.get("token_sha256"), str):
                return None
            header = record
        elif (change := _change(record)) is not None:
            changes.append(change)
        else:
            bad += 1
    if header is None:
        return None
    if token_sha256 is not None and not secrets.compare_digest(str(header["token_sha256"]), token_sha256):
        return None
    created = header.get("created")
    return StoredConversation(
        str(header.get("session", "")), float(created) if isinstance(created, (int, float)) else 0.0, changes, bad
    )


def _record(line: bytes) -> dict[str, object] | None:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _change(record: dict[str, object]) -> HistoryChange | None:
    kind, text = record.get("t"), record.get("text", "")
    if kind not in CHANGE_KINDS or not isinstance(text, str):
        return None
    return HistoryChange(kind, text)  # type: ignore[arg-type]


class Journal:
    """One session's open journal; call it with each history change (a ``HistoryListener``)."""

    def __init__(self, store: ConversationStore, path: Path, fd: int) -> None:
        self.store, self.path = store, path
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._failed = False

    def __call__(self, change: HistoryChange) -> None:
        record: dict[str, object] = {"t": change.kind, "at": round(self.store.clock(), 3)}
        if change.kind in ("user", "assistant"):
            record["text"] = change.text
        self.write(record)

    def write(self, record: dict[str, object]) -> bool:
        """Append one record; False (logged once, counted) when the disk refuses."""
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
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


class ConversationStore:
    """The journals in ``directory`` (created 0700; files 0600: they hold what people said)."""

    def __init__(
        self, directory: Path, *, fsync: bool = True, retention_days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.retention_days = retention_days
        self.clock = clock
        self.stats = StoreStats()
        self.syncer = _Syncer()
        self._lock = threading.Lock()
        self._warned_slow = False

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
                journal.write({"t": "header", "v": FORMAT_VERSION, "session": session_id,
                               "created": round(self.clock(), 3), "token_sha256": token_hash(token)})
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
        with self._lock:
            self.stats.restored += 1
            self.stats.bad_lines += stored.bad_lines
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
        with self._lock:
            self.stats.pruned += pruned
        if pruned:
            log.info("pruned %d conversation(s) older than %g days", pruned, self.retention_days)
        return pruned

    # -- stats -----------------------------------------------------------------
    def count_write(self, seconds: float) -> None:
        with self._lock:
            self.stats.records += 1
            self.stats.write_s_total += seconds
            self.stats.write_s_max = max(self.stats.write_s_max, seconds)
            slow = seconds > SLOW_WRITE_S and not self._warned_slow
            self._warned_slow = self._warned_slow or slow
        if slow:
            log.warning("saving a conversation record took %.0f ms (a slow or busy disk)", seconds * 1000)

    def count_sync(self, seconds: float) -> None:
        with self._lock:
            self.stats.syncs += 1
            self.stats.sync_s_total += seconds
            self.stats.sync_s_max = max(self.stats.sync_s_max, seconds)

    def count_error(self) -> None:
        with self._lock:
            self.stats.errors += 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            s = self.stats
            return {
                "directory": str(self.directory), "fsync": self.fsync, "records": s.records, "errors": s.errors,
                "write_ms_mean": round(1000 * s.write_s_total / s.records, 3) if s.records else None,
                "write_ms_max": round(1000 * s.write_s_max, 3), "syncs": s.syncs,
                "sync_ms_mean": round(1000 * s.sync_s_total / s.syncs, 3) if s.syncs else None,
                "sync_ms_max": round(1000 * s.sync_s_max, 3), "restored": s.restored,
                "bad_lines": s.bad_lines, "pruned": s.pruned,
            }


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"

