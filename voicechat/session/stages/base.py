"""Base classes for stage workers and the narrow view they have of their pipeline.

A worker owns one daemon thread. Its owner (SpeechPipelineManager) starts it,
stops it by closing its inbox (which wakes a blocked ``get`` at once) and
joins it with a timeout. Workers never poll: they block on their inbox.
"""

from __future__ import annotations

import logging
import threading
from typing import Generic, Protocol, TypeVar

from voicechat.engines.thread_names import set_native_name
from voicechat.session.bounded_queue import BoundedLRUQueue, QueueClosed

T = TypeVar("T")
log = logging.getLogger(__name__)


class StageHost(Protocol):
    """What a worker may ask of the pipeline that owns it."""

    session_id: str

    def is_current(self, generation: int) -> bool: ...

    def report_error(self, stage: str, error: BaseException, generation: int | None = None) -> None: ...


class Worker:
    """One named daemon thread running ``run_loop`` until stopped."""

    stage = "worker"

    def __init__(self, host: StageHost) -> None:
        self.host = host
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self._main, name=f"{self.stage}-{host.session_id[:8]}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to stop; subclasses also wake whatever it blocks on."""
        self.stop_event.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True if the thread has ended."""
        if self.thread.ident is not None:
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def _main(self) -> None:
        set_native_name(f"ses-{self.stage}")
        try:
            self.run_loop()
        except Exception as exc:  # a bug in a stage must not pass silently
            log.exception("%s crashed", self.thread.name)
            self.host.report_error(self.stage, exc)

    def run_loop(self) -> None:
        raise NotImplementedError


class QueueWorker(Worker, Generic[T]):
    """A worker that handles items from its inbox one at a time."""

    def __init__(self, host: StageHost, inbox: BoundedLRUQueue[T]) -> None:
        super().__init__(host)
        self.inbox = inbox

    def stop(self) -> None:
        super().stop()
        self.inbox.close()

    def run_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                item = self.next_item()
            except QueueClosed:
                return
            if item is None or self.stop_event.is_set():
                continue
            try:
                self.handle(item)
            except Exception as exc:
                log.warning("%s: %s failed: %s", self.thread.name, type(item).__name__, exc)
                self.host.report_error(self.stage, exc, getattr(item, "generation", None))

    def next_item(self) -> T | None:
        """Block for the next item (override to add a deadline)."""
        return self.inbox.get()

    def handle(self, item: T) -> None:
        raise NotImplementedError
