"""What the LLM scheduler is handed and what it reports: requests, events (plain data; stats: ``work.py``).

A ``GenRequest`` is created on the caller's thread and owned by the scheduler thread once
submitted (see ``scheduler.py``); the rest are frozen values.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from voicechat.engines.protocols import EngineError, GenerationParams
from voicechat.llm.llama_context import Sampler
from voicechat.llm.probe import EndProbe, ProbeCallback, end_of_turn, report
from voicechat.llm.text import StopMatcher, Utf8Pieces
from voicechat.llm.work import LlmStats

__all__ = ["EventKind", "GenRequest", "LlmEvent", "LlmStats", "StreamEnd"]

log = logging.getLogger(__name__)

EventKind = Literal["admitted", "token", "finished", "evicted", "discarded"]


@dataclass(frozen=True, slots=True)
class LlmEvent:
    """What the scheduler did, for tests and metrics (called on the scheduler thread: be quick).

    admitted: ``value`` = prompt tokens to prefill this turn, ``detail`` = "reused=N";
    token: ``value`` = the token id; finished: ``value`` = tokens generated, ``detail`` = reason;
    evicted: the session's cached KV was dropped to make room;
    discarded: a request was discarded, ``value`` = cached KV tokens the session keeps.
    """

    kind: EventKind
    session_id: str
    value: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    error: EngineError | None = None


@dataclass(eq=False)
class GenRequest:
    """One reply being generated; the caller reads ``out`` (str pieces, then one ``StreamEnd``)."""

    session_id: str
    prompt: list[int]
    params: GenerationParams
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    aborted: bool = False
    # The end-of-message probe (``probe.py``): the scheduler reads the logits of ``probe.rows()`` in this
    # request's prefill and calls ``on_probe(end_of_turn(parts))``, or ``on_probe(None)`` if the request
    # ends before that; exactly once either way.
    probe: EndProbe | None = None
    on_probe: ProbeCallback | None = None
    probe_parts: dict[str, float] = field(default_factory=dict)
    # Seconds of this reply's speech written ahead of what its listener has heard, now (any thread may be
    # asked; quick, no blocking). At or above the scheduler's ``defer_ahead_s`` the reply waits out steps
    # that others need (``batching.plan_step``). None: never deferred.
    lead: Callable[[], float] | None = None
    # Owned by the scheduler thread from here on.
    seq: int = -1
    kv: list[int] = field(default_factory=list)  # tokens in the sequence's KV, in order
    started_from: list[int] = field(default_factory=list)  # the session's cached KV when it was admitted
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    next_token: int | None = None  # sampled, not yet decoded
    last_token: int | None = None  # the latest sampled token (the one that ended the reply, at the end)
    generated: int = 0
    sampler: Sampler | None = None
    text: Utf8Pieces = field(default_factory=Utf8Pieces)
    stops: StopMatcher | None = None
    done: bool = False

    @property
    def probing(self) -> bool:
        """The probe is still to be read (and reported)."""
        return self.on_probe is not None and self.probe is not None

    def prefill_wanted(self, probe_step: bool = True) -> int:
        """Prompt tokens the next prefill chunk may take (scheduler thread): all pending ones, or with
        ``probe_step``, while the probe is unread, those up to its last row, so that it is reported a step
        before the rest of the prompt (the template's tail) is read."""
        if probe_step and self.probing and self.probe is not None:
            through = self.probe.rows()[-1] - len(self.kv) + 1
            if 0 < through < len(self.pending):
                return through
        return len(self.pending)

    def read_probe(self, index: int, logits: np.ndarray | None) -> None:
        """Take the logits of prompt index ``index`` (one of ``probe.rows()``; None: llama.cpp had none, which
        reports None); reports once every part is in (scheduler thread)."""
        if not self.probing or self.probe is None:
            return
        if logits is None:
            self.report_probe(None)
            return
        self.probe_parts.update(self.probe.read(index, logits))
        value = end_of_turn(self.probe_parts)
        if value is not None:
            self.report_probe(value)

    def report_probe(self, value: float | None) -> None:
        """Report the probe's value, the first time only (scheduler thread, or the caller's before submit)."""
        callback, self.on_probe = self.on_probe, None
        report(callback, value)

    def ahead_by(self, seconds: float) -> bool:
        """Whether ``lead`` says the reply is at least ``seconds`` ahead of its listener (scheduler thread).

        A lead that fails is logged and dropped: its reply is never held back for it."""
        if self.lead is None:
            return False
        try:
            return self.lead() >= seconds
        except Exception:
            log.exception("session %s: its reply's lead could not be read", self.session_id)
            self.lead = None
            return False
