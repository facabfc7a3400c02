"""SessionManager: the registry of live sessions and their lifecycle.

Admission (``max_sessions``), lookup, resume after a dropped connection
(within ``resume_grace_s``, by a secret resume token), idle timeout, and
forced termination: a session is always removed, even when one of its threads
will not stop; such threads are logged by name and counted.

A reaper thread sleeps until the next deadline (idle or grace) on a condition
variable instead of polling; any change to the registry wakes it to recompute.

With a conversation store (``ConversationBackend``: JSONL files or Redis),
every session's history changes go to its journal, and ``resume`` of a token
no live session has restores the saved conversation into a new session (same
token): a restart loses no conversation, and with a shared store (Redis)
another process can resume it. With a MemoryMonitor, soft pressure trims
histories and drops disconnected sessions (their conversations stay saved),
hard pressure refuses new sessions.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from voicechat.engines.protocols import Engines
from voicechat.memory.monitor import Level, MemoryMonitor
from voicechat.session.conversation_format import StoredConversation, token_hash
from voicechat.session.pipeline import PipelineOptions, SpeechPipelineManager, StopReport
from voicechat.session.record import (
    NOT_RESUMABLE,
    AdmissionError,
    ManagerStats,
    ResumeError,
    Session,
    SessionLimits,
    same_token,
)
from voicechat.session.store_api import ConversationBackend, StoreUnavailable

__all__ = ["AdmissionError", "ManagerStats", "ResumeError", "Session", "SessionLimits", "SessionManager"]

log = logging.getLogger(__name__)


class SessionManager:
    """Creates, finds, resumes and closes sessions; owns the reaper thread."""

    def __init__(
        self,
        engines: Engines,
        limits: SessionLimits | None = None,
        options: PipelineOptions | None = None,
        *,
        store: ConversationBackend | None = None,
        memory: MemoryMonitor | None = None,
    ) -> None:
        self.engines = engines
        self.limits = limits or SessionLimits()
        self.options = options or PipelineOptions(join_timeout_s=self.limits.join_timeout_s)
        self.store = store
        self.memory = memory
        # Makes a restored session's transport object (the WebSocket server's OutboxSignal), which is
        # also its pipeline's on_event callback: a restore has no connection yet to make one.
        self.transport_factory: Callable[[], object] | None = None
        self.stats = ManagerStats()
        self._sessions: dict[str, Session] = {}
        self._pending = 0  # admitted, pipeline still being built
        self._closing: dict[str, Session] = {}  # removed from lookup, threads still stopping
        self._restoring: set[str] = set()  # token hashes whose saved conversation is being restored
        self._pressure = False
        self._cond = threading.Condition()
        self._running = False
        self._reaper: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._reaper = threading.Thread(target=self._reap_loop, name="session-reaper", daemon=True)
        self._reaper.start()
        if self.memory is not None:
            self.memory.start(self._on_memory_level)

    def shutdown(self, reason: str = "server shutting down") -> list[StopReport]:
        """Stop the reaper and the memory monitor, close every session, sync the saved conversations."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self.memory is not None:
            self.memory.stop()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        reports = [r for sid in self.ids() if (r := self.close(sid, reason)) is not None]
        if self.store is not None:
            self.store.close()
        return reports

    # -- registry --------------------------------------------------------------
    def create(
        self,
        kind: str = "ws",
        on_event: Callable[[], None] | None = None,
        options: PipelineOptions | None = None,
    ) -> Session:
        """Admit and start a new session, or raise AdmissionError with the reason."""
        return self._create(kind, on_event, options, secrets.token_urlsafe(24))

    def _create(
        self, kind: str, on_event: Callable[[], None] | None, options: PipelineOptions | None,
        resume_token: str, stored: StoredConversation | None = None, transport: object | None = None,
    ) -> Session:
        refusal = self.memory.refusal() if self.memory is not None else None
        with self._cond:
            in_use = len(self._sessions) + len(self._closing) + self._pending
            if refusal is None and in_use >= self.limits.max_sessions:
                refusal = f"server full: {self.limits.max_sessions} of {self.limits.max_sessions} sessions in use"
            if refusal is not None:
                self.stats.refused += 1
                raise AdmissionError(refusal)
            self._pending += 1
        session_id = secrets.token_hex(8)
        journal = None
        try:
            pipeline = SpeechPipelineManager(session_id, self.engines, options or self.options, on_event)
            if stored is not None:
                pipeline.history.replay(stored.changes)  # already on disk: not journaled again
            journal = self.store.open_or_none(session_id, resume_token) if self.store is not None else None
            pipeline.history.listener = journal
            pipeline.start()
        except BaseException:
            if journal is not None:
                journal.close()
            with self._cond:
                self._pending -= 1
            raise
        session = Session(session_id, resume_token, kind, pipeline, transport=transport, journal=journal,
                          restored=stored is not None)
        with self._cond:
            self._pending -= 1
            self._sessions[session_id] = session
            self.stats.created += 1
            self._cond.notify_all()
        log.info("session %s (%s) created", session_id, kind)
        return session

    def get(self, session_id: str) -> Session | None:
        with self._cond:
            return self._sessions.get(session_id)

    def ids(self) -> list[str]:
        with self._cond:
            return list(self._sessions)

    def __len__(self) -> int:
        with self._cond:
            return len(self._sessions)

    def wait_until_gone(self, session_id: str, timeout: float) -> bool:
        """Block until ``session_id`` is fully closed (or ``timeout``); True if it is."""
        with self._cond:
            return self._cond.wait_for(
                lambda: session_id not in self._sessions and session_id not in self._closing, timeout
            )

    def detach(self, session_id: str, attachment: int | None = None) -> None:
        """The transport lost its connection: keep the session resumable for a while.

        With ``attachment``, only if no newer connection has resumed the session since.
        """
        with self._cond:
            session = self._sessions.get(session_id)
            if session is None or (attachment is not None and attachment != session.attachment):
                return
            session.connected = False
            session.disconnected_at = time.monotonic()
            session.pipeline.set_muted(True)
            self._cond.notify_all()
        session.pipeline.listener_left()
        if self.limits.resume_grace_s <= 0:
            self.close(session_id, "disconnected")

    def set_muted(self, session: Session, muted: bool) -> None:
        """The user's mute: kept with the session, so a resumed connection finds it as the user left it."""
        with self._cond:
            session.muted = muted
            if session.connected:
                session.pipeline.set_muted(muted)

    def resume(self, resume_token: str, take_over: bool = False, *, options: PipelineOptions | None = None) -> Session:
        """Reattach a session by its token (constant-time compare), or restore its saved conversation.

        ``take_over``: also when its old connection has not noticed it is gone yet
        (a page reloaded at once, a phone that changed networks); the token proves
        it is the same user, and the caller must close the old connection.
        When no live session has the token but the store has its conversation
        (the server restarted, or the grace expired), a new session with the same
        token starts with that history (``options`` for its pipeline; default:
        the manager's). A session of that token still closing is waited for.
        """
        digest = token_hash(resume_token)
        deadline = time.monotonic() + self.limits.join_timeout_s + 2
        with self._cond:
            while True:
                session = self._live(resume_token)
                if session is not None:
                    return self._reattach(session, take_over)
                busy = digest in self._restoring or any(
                    same_token(s.resume_token, resume_token) for s in self._closing.values())
                left = deadline - time.monotonic()
                if not busy or left <= 0:
                    break
                self._cond.wait(left)
            if busy:
                raise ResumeError("that session is still closing; try again")
            if self.store is None:
                raise ResumeError(NOT_RESUMABLE)
            self._restoring.add(digest)
        try:
            return self._restore(resume_token, options)
        finally:
            with self._cond:
                self._restoring.discard(digest)
                self._cond.notify_all()

    def _live(self, resume_token: str) -> Session | None:
        for session in self._sessions.values():
            if same_token(session.resume_token, resume_token):
                return session
        return None

    def _reattach(self, session: Session, take_over: bool) -> Session:
        """Mark ``session`` connected again (lock held)."""
        if session.connected and not take_over:
            raise ResumeError("session is still connected elsewhere")
        session.attachment += 1
        session.connected = True
        session.disconnected_at = None
        session.pipeline.set_muted(session.muted)  # the user's choice, not the detached session's mute
        session.pipeline.last_activity = time.monotonic()
        self._cond.notify_all()
        return session

    def _restore(self, resume_token: str, options: PipelineOptions | None) -> Session:
        assert self.store is not None
        try:
            stored = self.store.load(resume_token)
        except StoreUnavailable as err:
            raise ResumeError(f"saved conversations cannot be read right now; try again ({err})") from None
        if stored is None:
            raise ResumeError(NOT_RESUMABLE)
        transport = self.transport_factory() if self.transport_factory is not None else None
        on_event = transport if callable(transport) else None
        try:
            session = self._create("ws", on_event, options, resume_token, stored, transport)
        except AdmissionError as err:
            raise ResumeError(f"the conversation is saved but cannot be restored now: {err}") from None
        log.info("session %s: restored the conversation of session %s (%d saved changes)",
                 session.id, stored.session_id, len(stored.changes))
        return session

    def close(self, session_id: str, reason: str = "closed") -> StopReport | None:
        """Forced termination: the session is removed whatever its threads do."""
        return self._close(session_id, reason)

    def _close(self, session_id: str, reason: str, only_disconnected: bool = False) -> StopReport | None:
        with self._cond:
            session = self._sessions.get(session_id)
            if session is None or (only_disconnected and session.connected):
                return None
            del self._sessions[session_id]
            self._closing[session_id] = session
        try:
            session.pipeline.listener_left()  # a reply cut off here keeps what was heard (and saves it)
        except Exception:
            log.exception("session %s: ending its reply failed", session_id)
        report = session.pipeline.stop(self.limits.join_timeout_s)
        if session.journal is not None:
            session.journal.close()
        queues = session.pipeline.queue_stats()
        with self._cond:
            for name, q in queues.items():
                self.stats.evicted_closed[name] = self.stats.evicted_closed.get(name, 0) + q["evicted"]
            self._closing.pop(session_id, None)
            self._cond.notify_all()
            self.stats.closed += 1
            self.stats.close_reasons[reason] = self.stats.close_reasons.get(reason, 0) + 1
            if report.stuck_threads:
                self.stats.forced_terminations += 1
                self.stats.stuck_threads.extend(report.stuck_threads)
        if report.stuck_threads:
            log.error(
                "session %s: threads did not stop within %.1fs and were abandoned: %s",
                session_id, self.limits.join_timeout_s, ", ".join(report.stuck_threads),
            )
        log.info("session %s closed (%s) in %.2fs", session_id, reason, report.seconds)
        return report

    # -- reaper ----------------------------------------------------------------
    def _expired(self, now: float) -> tuple[list[tuple[str, str]], float | None]:
        """Sessions past a deadline, and the seconds until the next deadline."""
        due: list[tuple[str, str]] = []
        next_in: float | None = None
        for session in self._sessions.values():
            if session.connected:
                left = self.limits.idle_timeout_s - (now - session.pipeline.last_activity)
                reason = "idle timeout"
            else:
                left = self.limits.resume_grace_s - (now - (session.disconnected_at or now))
                reason = "resume grace expired"
            if left <= 0:
                due.append((session.id, reason))
            elif next_in is None or left < next_in:
                next_in = left
        return due, next_in

    def _reap_loop(self) -> None:
        while True:
            with self._cond:
                if not self._running:
                    return
                due, next_in = self._expired(time.monotonic())
                if not due:
                    # Activity only pushes deadlines later, so sleeping until
                    # the earliest one computed now never misses an expiry.
                    self._cond.wait(timeout=next_in)
                    continue
            for session_id, reason in due:
                self.close(session_id, reason)

    # -- memory pressure ---------------------------------------------------------
    def _on_memory_level(self, level: Level) -> None:
        if level >= Level.SOFT:
            self._pressure = True
            self.relieve_memory()
        elif self._pressure:
            self._pressure = False
            for session in self._live_sessions():
                session.pipeline.history.set_budget(session.pipeline.options.history_max_tokens)
            log.info("memory pressure over: history budgets restored")

    def relieve_memory(self) -> tuple[int, int]:
        """Trim every history to the pressure budget and close disconnected sessions.

        Returns (messages trimmed, sessions dropped). Dropped sessions' conversations
        stay in the store, so their clients can still resume them later.
        """
        budget = self.memory.limits.pressure_history_tokens if self.memory is not None else 512
        closed = sum(self._close(s.id, "memory pressure", only_disconnected=True) is not None
                     for s in self._live_sessions() if not s.connected)
        trimmed_histories = trimmed = 0
        for session in self._live_sessions():
            history = session.pipeline.history
            dropped = history.set_budget(min(budget, history.max_tokens))
            trimmed_histories += dropped > 0
            trimmed += dropped
        if self.memory is not None:
            self.memory.count("histories_trimmed", trimmed_histories)
            self.memory.count("messages_trimmed", trimmed)
            self.memory.count("sessions_dropped", closed)
        if trimmed or closed:
            log.warning("memory pressure: trimmed %d message(s) from %d histories, dropped %d disconnected "
                        "session(s)", trimmed, trimmed_histories, closed)
        return trimmed, closed

    def _live_sessions(self) -> list[Session]:
        with self._cond:
            return list(self._sessions.values())

    # -- health ----------------------------------------------------------------
    def queue_evictions(self) -> dict[str, int]:
        """Items evicted per queue name since start, live and closed sessions together."""
        with self._cond:
            totals = dict(self.stats.evicted_closed)
            live = [s.pipeline for s in self._sessions.values()]
        for pipeline in live:
            for name, q in pipeline.queue_stats().items():
                totals[name] = totals.get(name, 0) + q["evicted"]
        return totals

    def snapshot(self) -> dict[str, object]:
        with self._cond:
            sessions = list(self._sessions.values())
            stats = self.stats
            return {
                "sessions": len(sessions),
                "max_sessions": self.limits.max_sessions,
                "created": stats.created,
                "closed": stats.closed,
                "refused": stats.refused,
                "forced_terminations": stats.forced_terminations,
                "stuck_threads": list(stats.stuck_threads),
                "memory": self.memory.snapshot() if self.memory is not None else None,
                "conversations": self.store.snapshot() if self.store is not None else None,
                "per_session": [
                    {
                        "id": s.id, "kind": s.kind, "state": s.pipeline.state.value,
                        "connected": s.connected, "idle_s": round(s.idle_s, 1), "restored": s.restored,
                        "queues": s.pipeline.queue_stats(), "errors": dict(s.pipeline.errors),
                    }
                    for s in sessions
                ],
            }
