"""A session's record in the registry, its limits, and the registry's errors.

The records the registry (``manager.py``) keeps and the errors it raises, apart
from its machinery, so the transport and the tests can name them. A ``Session``
holds its running pipeline; these dataclasses start no thread themselves.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicechat.session.pipeline import SpeechPipelineManager
    from voicechat.session.store_api import ConversationJournal


class AdmissionError(Exception):
    """A new session was refused; ``str()`` is the reason to show the client."""


class ResumeError(Exception):
    """No resumable session for that token (unknown, expired or still connected)."""


NOT_RESUMABLE = "no resumable session for that token (expired or unknown)"


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 16
    idle_timeout_s: float = 300.0
    resume_grace_s: float = 30.0
    join_timeout_s: float = 2.0


@dataclass
class Session:
    """A live conversation: its pipeline plus connection bookkeeping."""

    id: str
    resume_token: str
    kind: str
    pipeline: SpeechPipelineManager
    created_at: float = field(default_factory=time.monotonic)
    connected: bool = True
    disconnected_at: float | None = None
    # Whatever the transport keeps with the session across reconnects (the
    # WebSocket server keeps the signal that wakes its writer here).
    transport: object | None = None
    # Bumped on every resume: a connection only detaches the attachment it made,
    # so an old connection closing late cannot disconnect the one that took over.
    attachment: int = 0
    journal: ConversationJournal | None = None  # where its history changes are saved (None: not saved)
    # The user's mute (a client's ``mute``), kept across reconnects; the pipeline is also muted while detached.
    muted: bool = False
    restored: bool = False  # rebuilt from a saved conversation (after a restart)

    @property
    def idle_s(self) -> float:
        return time.monotonic() - self.pipeline.last_activity


@dataclass
class ManagerStats:
    created: int = 0
    closed: int = 0
    refused: int = 0
    forced_terminations: int = 0
    stuck_threads: list[str] = field(default_factory=list)
    close_reasons: dict[str, int] = field(default_factory=dict)
    evicted_closed: dict[str, int] = field(default_factory=dict)  # queue evictions of closed sessions


def same_token(expected: str, given: str) -> bool:
    """Constant-time comparison that also takes tokens with non-ASCII characters (compare_digest on str refuses)."""
    return secrets.compare_digest(expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass"))
