"""The llama.cpp scheduler's events, collected and waitable, and the GGUFs to test on (tests/llm, tests/real)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from voicechat.llm.scheduler import LlmEvent
from voicechat.models import ensure, store
from voicechat.models.registry import SMOLLM2_FILE
from voicechat.models.tiny import tiny_gguf_path

WAIT_S = 30.0


class Events:
    """Scheduler events, waitable (the listener runs on the scheduler thread)."""

    def __init__(self) -> None:
        self.items: list[LlmEvent] = []
        self._cond = threading.Condition()
        self._pauses: list[tuple[str, int, threading.Event]] = []

    def __call__(self, event: LlmEvent) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()
            due = [p for p in self._pauses if event.kind == "token" and event.session_id == p[0]
                   and sum(1 for e in self.items if e.kind == "token" and e.session_id == p[0]) == p[1]]
        for _, _, release in due:  # the scheduler thread stops here, between two steps
            release.wait(WAIT_S)

    def pause_at(self, session_id: str, tokens: int) -> threading.Event:
        """Hold the scheduler thread once ``session_id`` has ``tokens`` tokens, until the returned event is set.

        What a test queues meanwhile is seen before the next step: no race with a fast model finishing first.
        """
        release = threading.Event()
        with self._cond:
            self._pauses.append((session_id, tokens, release))
        return release

    def of(self, session_id: str, kind: str) -> list[LlmEvent]:
        with self._cond:
            return [e for e in self.items if e.session_id == session_id and e.kind == kind]

    def tokens(self, session_id: str) -> list[int]:
        return [e.value for e in self.of(session_id, "token")]

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), f"timed out waiting for {what}"

    def finished(self, session_id: str) -> LlmEvent:
        self.wait(lambda: any(e.session_id == session_id and e.kind == "finished" for e in self.items),
                  f"{session_id} to finish")
        return self.of(session_id, "finished")[-1]

    def reused(self, session_id: str) -> int:
        """KV tokens the session's latest admitted request reused."""
        return int(self.of(session_id, "admitted")[-1].detail.removeprefix("reused="))


def model_path(name: str) -> Path:
    """The shipped tiny random GGUF ("tiny") or the starter SmolLM2 ("smollm2": skipped where missing, outside CI)."""
    if name == "tiny":
        return tiny_gguf_path()
    path = store.models_dir(store.PROJECT_ROOT) / SMOLLM2_FILE
    if not ensure.real_models_wanted():
        pytest.skip(f"{ensure.REAL_MODELS_ENV}=0: the real-model tests are skipped")
    if not path.is_file():
        message = ensure.problems_message([f"{path}: missing"])
        if ensure.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path
