"""Prometheus metrics for one server (its own registry: no process-global state).

Counters that follow the conversation (turns, stage latencies, errors) are fed
by ``observe(event)`` from whichever transport pumps a session's events; the
rest (sessions, queue evictions, threads, memory and memory pressure, saved
conversations, circuit breakers) is read from the SessionManager and the
process at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from voicechat.core.events import ErrorEvent, Event, TurnMetrics
from voicechat.engines.circuit_breaker import BreakerState, CircuitBreaker
from voicechat.engines.protocols import Engines
from voicechat.engines.stuck_calls import STUCK_CALLS
from voicechat.llm.work import PREFILL_BOUNDS, STEP_BOUNDS_S, LlmStats
from voicechat.server.protocol import turn_latencies_ms
from voicechat.session.manager import SessionManager
from voicechat.stt.frontend import FrontEndStats
from voicechat.stt.scheduler import SttStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
MEMORY_LEVEL_VALUE = {"ok": 0, "soft": 1, "hard": 2}


def engine_breakers(engines: Engines) -> dict[str, CircuitBreaker]:
    """The circuit breakers of the shared engines that have one, by stage."""
    found = {}
    for stage, engine in (("stt", engines.transcriber), ("llm", engines.llm), ("tts", engines.tts)):
        breaker = getattr(engine, "breaker", None)
        if isinstance(breaker, CircuitBreaker):
            found[stage] = breaker
    return found


class _LiveCollector(Collector):
    """Values read at scrape time from the session registry, the engines and the process."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.process = psutil.Process()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self.manager.snapshot()
        yield GaugeMetricFamily("voicechat_sessions_active", "Sessions currently open", value=snap["sessions"])
        yield GaugeMetricFamily("voicechat_sessions_max", "Sessions admitted at most", value=snap["max_sessions"])
        for name, help_text in (
            ("created", "Sessions created"), ("closed", "Sessions closed"),
            ("refused", "Sessions refused (server full)"),
            ("forced_terminations", "Sessions whose threads did not stop in time and were abandoned"),
        ):
            yield CounterMetricFamily(f"voicechat_sessions_{name}", help_text, value=snap[name])
        states = GaugeMetricFamily("voicechat_sessions_by_state", "Open sessions per turn state", labels=["state"])
        counts: dict[str, int] = {}
        for s in snap["per_session"]:  # type: ignore[union-attr]
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        for state in ("listening", "user_speaking", "thinking", "assistant_speaking"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        evictions = CounterMetricFamily(
            "voicechat_queue_evictions", "Items evicted from full bounded queues", labels=["queue"]
        )
        for queue, n in sorted(self.manager.queue_evictions().items()):
            evictions.add_metric([queue], n)
        yield evictions
        yield GaugeMetricFamily("voicechat_threads", "Threads in the process", value=threading.active_count())
        yield GaugeMetricFamily(
            "voicechat_process_rss_bytes", "Resident memory of the process", value=self.process.memory_info().rss
        )
        breakers = GaugeMetricFamily(
            "voicechat_engine_circuit_state", "Engine circuit breaker: 0 closed, 1 half-open, 2 open",
            labels=["stage"],
        )
        for stage, breaker in engine_breakers(self.manager.engines).items():
            breakers.add_metric([stage], BREAKER_VALUE[breaker.state])
        yield breakers
        stuck = STUCK_CALLS.stats()
        yield GaugeMetricFamily(
            "voicechat_engine_calls_stuck_now", "Abandoned engine calls whose threads have not ended (hung engines)",
            value=len(stuck.stuck_now),
        )
        yield CounterMetricFamily("voicechat_engine_calls_stuck", "Engine calls ever declared stuck",
                                  value=stuck.stuck_total)
        yield CounterMetricFamily("voicechat_engine_calls_recovered", "Stuck engine calls that ended later",
                                  value=stuck.recovered_total)
        yield from _stt_metrics(self.manager.engines.transcriber)
        yield from _llm_metrics(self.manager.engines.llm)
        yield from _listening_metrics(getattr(self.manager.engines.recognizer_factory, "frontend", None))
        yield from _memory_metrics(snap.get("memory"))
        yield from _conversation_metrics(snap.get("conversations"))


def _stt_metrics(transcriber: object) -> Iterator[CounterMetricFamily]:
    """The shared STT scheduler's work by kind: transcripts, seconds busy, partials dropped, stalls."""
    stats = getattr(transcriber, "stats", None)
    if not isinstance(stats, SttStats):
        return
    done = CounterMetricFamily("voicechat_stt_transcripts", "Transcripts decoded, final or partial", labels=["kind"])
    busy = CounterMetricFamily("voicechat_stt_busy_seconds", "Seconds the STT model spent on batches, by kind",
                               labels=["kind"])
    for kind, n, seconds in (("final", stats.finals, stats.busy_final_s),
                             ("partial", stats.partials, stats.busy_partial_s)):
        done.add_metric([kind], n)
        busy.add_metric([kind], seconds)
    yield done
    yield busy
    yield from _counters((
        ("voicechat_stt_partials_dropped", "Partial requests dropped before they ran (replaced by a newer one, or "
         "shed while the model was busy)", stats.partials_dropped),
        ("voicechat_stt_stalls", "STT batches that ran past the stall limit", stats.stalls),
        ("voicechat_stt_final_wait_seconds", "Seconds finals waited in the queue, summed", stats.final_wait_s),
        ("voicechat_stt_finals_behind_partial", "Finals that arrived while partials decoded",
         stats.finals_behind_partial),
    ))


def _llm_metrics(llm: object) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
    """The in-process LLM scheduler's work: tokens by kind, admissions, steps (nothing for other engines)."""
    read = getattr(llm, "stats", None)
    stats = read() if callable(read) else None
    if not isinstance(stats, LlmStats):
        return
    tokens = CounterMetricFamily("voicechat_llm_tokens", "LLM tokens: generated, prompt tokens prefilled, prompt "
                                 "tokens reused from a session's KV, cached KV tokens dropped at admission",
                                 labels=["kind"])
    for kind, n in (("generated", stats.generated_tokens), ("prefilled", stats.prefill_tokens),
                    ("reused", stats.reused_tokens), ("dropped", stats.dropped_tokens)):
        tokens.add_metric([kind], n)
    yield tokens
    yield GaugeMetricFamily("voicechat_llm_active", "Requests holding a sequence", value=stats.active)
    yield GaugeMetricFamily("voicechat_llm_queued", "Requests waiting for a sequence", value=stats.queued)
    yield GaugeMetricFamily("voicechat_llm_cached_sessions", "Idle sessions whose KV is kept",
                            value=stats.cached_sessions)
    yield CounterMetricFamily("voicechat_llm_deferred", "Times a reply far ahead of its listener sat a step out",
                              value=stats.deferred)
    yield CounterMetricFamily("voicechat_llm_alone_steps", "Steps computed with the spare core (nothing else "
                              "was runnable)", value=stats.alone_steps)
    yield _histogram("voicechat_llm_step_seconds", "Wall time of each llama_decode step (every session's "
                     "tokens in it)", STEP_BOUNDS_S, stats.step_counts, stats.decode_s)
    yield _histogram("voicechat_llm_admission_prefill_tokens", "Prompt tokens each admitted request left to "
                     "prefill (the rest was reused from its session's KV)", PREFILL_BOUNDS, stats.prefill_counts,
                     stats.admitted_prefill)


def _histogram(name: str, help_text: str, bounds: tuple[float, ...], counts: tuple[int, ...],
               total: float) -> HistogramMetricFamily:
    """A Prometheus histogram from per-bucket counts (``counts[i]`` over ``bounds[i]``, the last past them)."""
    cumulative, running = [], 0
    for bound, n in zip((*map(floatToGoString, bounds), "+Inf"), counts, strict=True):
        running += n
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, help_text, buckets=cumulative, sum_value=total)


def _counters(rows: Iterable[tuple[str, str, float]]) -> Iterator[CounterMetricFamily]:
    """One unlabelled counter per (name, help, value)."""
    for name, help_text, value in rows:
        yield CounterMetricFamily(name, help_text, value=value)


def _listening_metrics(frontend: object) -> Iterator[CounterMetricFamily]:
    """The shared listening front end's passes and faults (``vad.frontend = "batched"`` only)."""
    stats = getattr(frontend, "stats", None)
    if not isinstance(stats, FrontEndStats):
        return
    passes = CounterMetricFamily("voicechat_vad_passes", "Listening front-end passes: every tick, and the urgent "
                                 "ones between ticks that sessions asked for", labels=["kind"])
    passes.add_metric(["tick"], stats.ticks - stats.urgent)
    passes.add_metric(["urgent"], stats.urgent)
    yield passes
    yield from _counters((
        ("voicechat_vad_chunks", "32 ms chunks judged (Silero, or silence under the quiet gate)", stats.chunks),
        ("voicechat_vad_probes", "Looks for an onset between chunks (Silero over the 32 ms ending at a loud frame)",
         stats.probes),
        ("voicechat_vad_errors", "Silero calls that failed (no verdict for that round)", stats.vad_errors),
        ("voicechat_vad_overruns", "Ticks that started late because a pass ran over", stats.overruns),
        ("voicechat_vad_listener_errors", "Session listener calls that raised", stats.listener_errors),
    ))


def _memory_metrics(memory: object) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The memory monitor's level and what it did (nothing without a monitor)."""
    if not isinstance(memory, dict):
        return
    yield GaugeMetricFamily("voicechat_memory_pressure_level", "Memory pressure: 0 ok, 1 soft, 2 hard",
                            value=MEMORY_LEVEL_VALUE[memory["level"]])
    if memory["system_percent"] is not None:
        yield GaugeMetricFamily("voicechat_memory_system_percent", "System memory in use (percent) at the last check",
                                value=memory["system_percent"])
    actions = CounterMetricFamily(
        "voicechat_memory_pressure_actions",
        "What memory pressure caused: histories trimmed, messages trimmed, sessions dropped, sessions refused",
        labels=["action"],
    )
    for action, n in sorted(memory["actions"].items()):
        actions.add_metric([action], n)
    yield actions


def _conversation_metrics(store: object) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The conversation store's writes, failures and restores (nothing when conversations are not saved)."""
    if not isinstance(store, dict):
        return
    for name, key, help_text in (
        ("records_saved", "records", "Conversation records appended to disk"),
        ("save_errors", "errors", "Conversation records the disk refused"),
        ("restored", "restored", "Saved conversations restored by a resume"),
        ("pruned", "pruned", "Saved conversations deleted after their retention time"),
    ):
        yield CounterMetricFamily(f"voicechat_conversations_{name}", help_text, value=store[key])
    yield GaugeMetricFamily("voicechat_conversation_write_seconds_max", "Longest append of one record (the "
                            "caller waits for it)", value=store["write_ms_max"] / 1000.0)
    yield GaugeMetricFamily("voicechat_conversation_fsync_seconds_max", "Longest fsync of a conversation file (on "
                            "the sync thread)", value=store["sync_ms_max"] / 1000.0)


class ServerMetrics:
    """The server's registry and the conversation counters."""

    def __init__(self, manager: SessionManager) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_LiveCollector(manager))
        r = self.registry
        self.turns = Counter("voicechat_turns", "Replies heard (turn metrics sent: played out, or cut after their "
                             "first audio)", registry=r)
        self.latency = Histogram(
            "voicechat_stage_latency_seconds", "Per-turn latency by stage", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter("voicechat_errors", "Errors reported by sessions, per stage", ["stage"], registry=r)
        self.protocol_errors = Counter(
            "voicechat_protocol_errors", "Frames or messages refused, per error code", ["code"], registry=r
        )
        self.connections = Gauge("voicechat_ws_connections", "Open WebSocket connections", registry=r)
        self.connections_total = Counter(
            "voicechat_ws_connections_opened", "WebSocket connections accepted", registry=r
        )
        self.closes = Counter(
            "voicechat_ws_closes", "WebSocket connections closed by the server, per close code", ["code"], registry=r
        )
        self.audio_in = Counter("voicechat_audio_frames_received", "Client audio frames received", registry=r)
        self.audio_out = Counter("voicechat_audio_frames_sent", "Reply audio frames sent", registry=r)
        self.http = Counter("voicechat_http_requests", "HTTP requests, per path and status", ["path", "status"],
                            registry=r)

    def observe(self, event: Event) -> None:
        """Count one session event on its way to a client."""
        if isinstance(event, TurnMetrics):
            self.turns.inc()
            for stage, ms in turn_latencies_ms(event).items():
                self.latency.labels(stage).observe(ms / 1000.0)
        elif isinstance(event, ErrorEvent):
            self.errors.labels(event.stage).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
