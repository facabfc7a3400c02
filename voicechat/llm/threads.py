"""How many threads llama.cpp computes each step with: a spare core is taken while nothing else wants it.

llama.cpp's threads wait for each other at every layer, so one of them descheduled by a busy
neighbour stalls the whole step: on 2 shared cores, 2 threads ran ten times slower than 1 while
another process was busy, and a reply's 20-token prefill took 1.6 s with Whisper decoding beside
it. The automatic setting therefore leaves a core for speech on a small machine. But a voice
turn's critical path is serial (transcript, then the reply's prefill, its first sentence, its
first audio): while the prefill runs, speech recognition and synthesis are idle and the spare
core sits unused. ``StepThreads`` gives a step ``alone`` threads when the kernel says nothing
else is runnable, and ``shared`` threads otherwise. Long steps, and steps of several requests
(several conversations at once: their speech wakes often), always get ``shared``: a neighbour
that wakes during one would stall it longest. The check is per step, so a step that guessed
wrong is the only one that pays.

The kernel's count (``procs_running`` in ``/proc/stat``, Linux) includes the asking thread, and
this context's own worker threads while they poll for the next step (ggml lets them spin a few
milliseconds before they sleep: ``SPIN_S``); those are not neighbours. Where the count cannot
be read, every step gets ``shared``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PROC_STAT = "/proc/stat"
SPIN_S = 0.005  # ggml's workers poll this long after a step (measured: counted runnable 5 ms after, not 10)
MAX_ALONE_TOKENS = 32  # steps with more tokens (long prefills) keep the shared threads
SMALL_MACHINE_CPUS = 4  # up to this many CPUs, one is left for speech (and taken back while it idles)


def default_threads(cpus: int | None = None) -> int:
    """One core left for speech (STT/TTS run beside the LLM) on a small machine; half the CPUs
    (about the physical cores) on a big one."""
    cpus = cpus or os.cpu_count() or 2
    return max(1, cpus - 1) if cpus <= SMALL_MACHINE_CPUS else cpus // 2


def runnable_threads(path: str = PROC_STAT) -> int | None:
    """The kernel's count of runnable threads, the caller included; None where it cannot be read."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(b"procs_running "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class StepThreads:
    """Threads for one step: ``alone`` while nothing else is runnable, else ``shared`` (pure)."""

    shared: int
    alone: int
    max_alone_tokens: int = MAX_ALONE_TOKENS

    @classmethod
    def automatic(cls, n_threads: int = 0, cpus: int | None = None) -> StepThreads:
        """``llm.n_threads``: a number is kept for every step; 0 takes the spare core on a small machine."""
        if n_threads > 0:
            return cls(n_threads, n_threads)
        cpus = cpus or os.cpu_count() or 2
        shared = default_threads(cpus)
        return cls(shared, cpus if cpus <= SMALL_MACHINE_CPUS else shared)

    def may_go_alone(self, n_tokens: int, requests: int = 1) -> bool:
        """Whether a step of ``n_tokens`` batch tokens of ``requests`` requests could take the spare core
        at all (the kernel is asked only then)."""
        return self.alone > self.shared and n_tokens <= self.max_alone_tokens and requests <= 1

    def choose(self, runnable: int | None, own_polling: int, n_tokens: int, requests: int = 1) -> int:
        """Threads for a step of ``n_tokens`` batch tokens of ``requests`` requests, given the kernel's
        ``runnable`` count (None: unknown), of which ``own_polling`` are this context's workers still
        polling after the last step."""
        if runnable is None or not self.may_go_alone(n_tokens, requests):
            return self.shared
        neighbours = runnable - 1 - own_polling
        return self.alone if neighbours <= 0 else self.shared


class ThreadSetting(Protocol):
    def set_threads(self, n: int) -> None: ...


class StepThreadsOnContext:
    """Applies ``StepThreads`` to a context before each step (the scheduler's thread only)."""

    def __init__(self, ctx: ThreadSetting, policy: StepThreads, *,
                 read: Callable[[], int | None] = runnable_threads,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ctx = ctx
        self.policy = policy
        self._read = read
        self._clock = clock
        self.threads = policy.shared  # what the context computes with now
        self._last_end = float("-inf")

    def before_step(self, n_tokens: int, requests: int = 1) -> int:
        """Set the context's threads for a step of ``n_tokens`` of ``requests`` requests; returns them."""
        runnable = self._read() if self.policy.may_go_alone(n_tokens, requests) else None
        polling = self.threads - 1 if self._clock() - self._last_end < SPIN_S else 0
        threads = self.policy.choose(runnable, polling, n_tokens, requests)
        if threads != self.threads:
            self._ctx.set_threads(threads)
            self.threads = threads
        return threads

    def after_step(self) -> None:
        self._last_end = self._clock()
