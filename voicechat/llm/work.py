"""What the LLM scheduler has done: its counters and the snapshot ``stats()`` returns (plain data).

Light on purpose (no llama.cpp import): the server's metrics read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Bounds of the scheduler's two histograms (the last bucket, past the last bound, is implicit).
STEP_BOUNDS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # one llama_decode step's wall time (s)
PREFILL_BOUNDS = (4, 16, 64, 256)  # prompt tokens an admission left to prefill (the rest came from the KV)


def bucket_of(value: float, bounds: tuple[float, ...]) -> int:
    """The index of the first bound ``value`` is at or under; ``len(bounds)`` past the last."""
    return next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))


@dataclass(frozen=True, slots=True)
class LlmStats:
    """A snapshot of the scheduler's state and of its work since it started (counters only grow).

    ``step_counts[i]``: steps that took at most ``STEP_BOUNDS_S[i]`` (and more than the bound
    before), the last entry past every bound; ``prefill_counts`` likewise over ``PREFILL_BOUNDS``
    for each admission's tokens to prefill. A healthy turn reuses its session's whole KV and
    prefills a few tokens; ``dropped_tokens`` (cached tokens its new prompt did not continue)
    and large prefills are what a broken KV reuse costs everybody (one long step blocks all).
    """

    active: int  # requests holding a sequence (prefilling or generating)
    queued: int  # requests waiting for a sequence (or not yet seen by the scheduler)
    cached_sessions: int  # idle sessions whose KV is kept for their next turn
    generated_tokens: int
    prefill_tokens: int
    steps: int
    tokens_per_s: float  # generated tokens per second of time spent decoding
    deferred: int = 0  # times a generating sequence sat a step out, far ahead of its listener (``lead``)
    alone_steps: int = 0  # steps computed with the spare core, nothing else being runnable (``threads.py``)
    admissions: int = 0  # requests given a sequence (turns, prepared replies, warm-ups)
    admitted_prefill: int = 0  # prompt tokens those admissions left to prefill (the sum over ``prefill_counts``)
    reused_tokens: int = 0  # prompt tokens kept from the sessions' KV at admission
    dropped_tokens: int = 0  # cached KV tokens removed at admission (the new prompt diverged from them)
    decode_s: float = 0.0  # seconds spent inside llama_decode
    step_counts: tuple[int, ...] = (0,) * (len(STEP_BOUNDS_S) + 1)
    prefill_counts: tuple[int, ...] = (0,) * (len(PREFILL_BOUNDS) + 1)
    replies: int = 0  # of the active and queued requests, the replies (warm-ups, one token long, not counted)


@dataclass(slots=True)
class WorkCounters:
    """The scheduler's running totals behind ``LlmStats`` (changed and read under its lock)."""

    generated: int = 0
    prefilled: int = 0
    steps: int = 0
    deferred: int = 0
    alone_steps: int = 0
    admissions: int = 0
    admitted_prefill: int = 0
    reused: int = 0
    dropped: int = 0
    decode_s: float = 0.0
    step_counts: list[int] = field(default_factory=lambda: [0] * (len(STEP_BOUNDS_S) + 1))
    prefill_counts: list[int] = field(default_factory=lambda: [0] * (len(PREFILL_BOUNDS) + 1))

    def admitted(self, prefill: int, reused: int, dropped: int) -> None:
        """A request got its sequence: ``prefill`` prompt tokens to decode, ``reused`` kept, ``dropped`` cut."""
        self.admissions += 1
        self.admitted_prefill += prefill
        self.reused += reused
        self.dropped += dropped
        self.prefill_counts[bucket_of(prefill, PREFILL_BOUNDS)] += 1

    def stepped(self, seconds: float, sampled: int, prefilled: int, deferred: int, alone: bool = False) -> None:
        """One ``llama_decode`` of ``seconds``: ``sampled`` tokens generated, ``prefilled`` prompt tokens;
        ``alone``: computed with the spare core."""
        self.steps += 1
        self.alone_steps += alone
        self.decode_s += seconds
        self.generated += sampled
        self.prefilled += prefilled
        self.deferred += deferred
        self.step_counts[bucket_of(seconds, STEP_BOUNDS_S)] += 1

    def snapshot(self, active: int, queued: int, cached_sessions: int, replies: int = 0) -> LlmStats:
        return LlmStats(
            active=active, queued=queued, cached_sessions=cached_sessions, replies=replies,
            generated_tokens=self.generated, prefill_tokens=self.prefilled, steps=self.steps,
            tokens_per_s=self.generated / self.decode_s if self.decode_s else 0.0, deferred=self.deferred,
            alone_steps=self.alone_steps,
            admissions=self.admissions, admitted_prefill=self.admitted_prefill, reused_tokens=self.reused,
            dropped_tokens=self.dropped,
            decode_s=self.decode_s, step_counts=tuple(self.step_counts), prefill_counts=tuple(self.prefill_counts),
        )
