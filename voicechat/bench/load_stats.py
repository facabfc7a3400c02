"""What the load benchmark measures per turn, and how a run is summarised.

Pure data and arithmetic (no sockets, no threads), so the definitions the
numbers in docs/benchmarks.md rest on are tested on their own:

- ``v2v``: the end of the user's speech in the stream (the moment the frame
  holding the last voiced sample left the client) to the first reply audio
  frame received by the client;
- ``overhead``: ``v2v`` minus the least end-of-turn silence the configured rule
  waits (the fixed silence, or ``vad.min_silence_s`` where the turn ends on its
  signals) minus the engines' configured delays: what the framework itself adds;
- ``barge_in``: the onset of the interrupting speech (its first frame left the
  client) to the last sign of the stale reply at the client: its last audio
  frame or the ``flush_playback`` that tells the player to drop it, whichever
  came later.

All times are ``time.monotonic()`` seconds. On Linux that clock is shared by
every process, so the server's own stamps (``turn_metrics``) line up with the
client's and the overhead can be broken down by where it went.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from voicechat.bench import percentile
from voicechat.bench.accuracy import accuracy

# Server stamps in turn order (see TurnMetrics in docs/protocol.md).
STAMP_ORDER = ("speech_end", "transcript_final", "first_token", "first_sentence", "first_audio")


@dataclass
class TurnRecord:
    """One user utterance and what came back for it."""

    session: int
    index: int
    sentence: str
    onset: float  # first speech frame sent
    speech_end: float  # frame with the last voiced sample sent
    transcript: str | None = None
    generation: int | None = None
    first_audio: float | None = None  # first reply audio frame received
    completed: bool = False  # the reply finished, or was interrupted on purpose after its first audio
    interrupted_at: float | None = None  # onset of the speech that interrupted this reply
    stale_until: float | None = None  # last stale audio frame or flush_playback received
    stamps: dict[str, float] = field(default_factory=dict)  # the server's turn_metrics stamps
    barged: bool = False  # this utterance itself interrupted a reply
    end_of_turn: dict[str, float | None] | None = None  # the server's turn_metrics end_of_turn
    reply: str = ""  # the reply's text as received (assistant_text_delta), cut where the reply was
    stall_ms: float | None = None  # silence heard inside the reply's audio (load_client.playback_stalls)

    @property
    def v2v_ms(self) -> float | None:
        return None if self.first_audio is None else (self.first_audio - self.speech_end) * 1000

    @property
    def barge_in_ms(self) -> float | None:
        if self.interrupted_at is None or self.stale_until is None:
            return None
        return max(0.0, self.stale_until - self.interrupted_at) * 1000

    def breakdown_ms(self) -> dict[str, float]:
        """Where v2v went: client -> endpoint decision -> each server stage -> client."""
        if self.first_audio is None or "speech_end" not in self.stamps:
            return {}
        points = [("speech_sent", self.speech_end)]
        points += [(name, self.stamps[name]) for name in STAMP_ORDER if name in self.stamps]
        points.append(("received", self.first_audio))
        return {f"{a}->{b}": (tb - ta) * 1000 for (a, ta), (b, tb) in zip(points, points[1:], strict=False)}

    def timeline_ms(self) -> dict[str, float]:
        """Every server stamp of the turn (and the first audio received) as ms after the last voiced sample
        was sent, in time order: where the wait went, prepared replies included (their stamps overlap)."""
        if self.first_audio is None or not self.stamps:
            return {}
        points = dict(self.stamps, received=self.first_audio)
        return {name: (at - self.speech_end) * 1000 for name, at in sorted(points.items(), key=lambda kv: kv[1])}


@dataclass(frozen=True)
class Delays:
    """What the turn is expected to take on purpose: the endpointing silence and engine delays."""

    end_of_turn_silence_s: float
    stt_s: float = 0.0
    llm_first_token_s: float = 0.0
    tts_first_chunk_s: float = 0.0

    @property
    def total_ms(self) -> float:
        return (self.end_of_turn_silence_s + self.stt_s + self.llm_first_token_s + self.tts_first_chunk_s) * 1000


def quantiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 rounded to 0.1 ms; ``None`` where nothing was measured."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": round(percentile(values, q), 1) for q in (50, 95, 99)}


def stall_summary(stalls_ms: Sequence[float]) -> dict[str, object]:
    """Replies (generations with audio), how many had a hole inside (``playback_stalls``), and the holes' ms."""
    held = [ms for ms in stalls_ms if ms > 0]
    return {"replies": len(stalls_ms), "stalled": len(held), "ms": quantiles(held), "total_ms": round(sum(held), 1)}


def summarise_turns(turns: Iterable[TurnRecord], delays: Delays) -> dict[str, object]:
    """Latency figures of a run: quantiles of v2v, overhead and barge-in, plus the stage breakdown."""
    turns = list(turns)
    v2v = [t.v2v_ms for t in turns if t.v2v_ms is not None]
    barge = [t.barge_in_ms for t in turns if t.barge_in_ms is not None]
    stages: dict[str, list[float]] = {}
    timeline: dict[str, list[float]] = {}
    for turn in turns:
        for name, ms in turn.breakdown_ms().items():
            stages.setdefault(name, []).append(ms)
        for name, ms in turn.timeline_ms().items():
            timeline.setdefault(name, []).append(ms)
    timeline_order = sorted(timeline, key=lambda name: percentile(timeline[name], 50))
    return {
        "turns": sum(t.completed for t in turns),
        "turns_started": len(turns),
        "v2v_ms": quantiles(v2v),
        "overhead_ms": quantiles([ms - delays.total_ms for ms in v2v]),
        "barge_in_ms": quantiles(barge),
        "accuracy": accuracy((t.sentence, t.transcript) for t in turns if t.transcript is not None).as_dict(),
        "barge_ins": len(barge),
        # the silence after the last voiced sample when the server ended each turn (turn_metrics.end_of_turn):
        # a p95 at vad.max_silence_s means one turn in twenty waited the longest pause (its judges doubted it)
        "end_of_turn_silence_ms": quantiles([t.end_of_turn["silence_ms"] for t in turns if t.end_of_turn
                                             and t.end_of_turn.get("silence_ms") is not None]),
        # The framework without the VAD's decision: the server's end-of-speech stamp to the audio received.
        "server_path_ms": quantiles([(t.first_audio - t.stamps["speech_end"]) * 1000 for t in turns
                                     if t.first_audio is not None and "speech_end" in t.stamps]),
        "overhead_ms_by_turn": {
            kind: quantiles([t.v2v_ms - delays.total_ms for t in turns if t.v2v_ms is not None and t.barged == barged])
            for kind, barged in (("after_silence", False), ("interrupting", True))
        },
        "breakdown_ms_p50": {name: quantiles(values)["p50"] for name, values in stages.items()},
        "breakdown_ms_p95": {name: quantiles(values)["p95"] for name, values in stages.items()},
        # each stamp after the last voiced sample was sent: p50 / p95 and how many turns had it
        "timeline_ms": {name: [quantiles(timeline[name])["p50"], quantiles(timeline[name])["p95"],
                               len(timeline[name])] for name in timeline_order},
    }


def cpu_by_group(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], process_cpu_s: float, wall_s: float
) -> dict[str, float]:
    """Percent of one core per thread group over a phase, from two per-thread snapshots (tid -> (name, s)).

    A group is the thread's OS name up to its first digit or the end ("tts-pool-3" -> "tts-pool-").
    Threads that ended during the phase took their CPU time with them: ``process_cpu_s`` (the whole
    process's CPU seconds over the phase) minus the live threads' is reported as ``ended threads``.
    """
    groups: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        group = name.rstrip("0123456789") or name
        groups[group] = groups.get(group, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    groups["ended threads"] = max(0.0, process_cpu_s - sum(groups.values()))
    return {name: round(100 * s / wall_s, 1) for name, s in sorted(groups.items(), key=lambda kv: -kv[1])
            if round(100 * s / wall_s, 1) > 0}


def capacity(runs: Sequence[dict[str, object]], overhead_p95_ms: float = 80.0) -> int | None:
    """Largest session count whose run kept overhead p95 within the bound with no dropped frames or errors."""
    good = [
        int(run["sessions"]) for run in runs  # type: ignore[call-overload]
        if _p95(run) is not None and _p95(run) <= overhead_p95_ms  # type: ignore[operator]
        and run.get("dropped_frames") == 0 and run.get("errors") == 0
    ]
    return max(good) if good else None


def _p95(run: dict[str, object]) -> float | None:
    overhead = run.get("overhead_ms")
    return overhead.get("p95") if isinstance(overhead, dict) else None
