"""`bench load`: its definitions (pure) and a small real run that must be correct, not fast."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voicechat.bench import load
from voicechat.bench.load_client import SimulatedUser, Tracker, audio_gaps, playback_stalls, utterance
from voicechat.bench.load_stats import Delays, TurnRecord, capacity, quantiles, stall_summary, summarise_turns
from voicechat.server.client import Received
from voicechat.server.protocol import ServerAudio


def test_turn_latencies_follow_their_definitions() -> None:
    turn = TurnRecord(0, 0, "hi", onset=10.0, speech_end=11.0, first_audio=11.75, interrupted_at=12.0,
                      stale_until=12.09, stamps={"speech_end": 11.6, "transcript_final": 11.62, "first_audio": 11.7})
    assert turn.v2v_ms == pytest.approx(750)
    assert turn.barge_in_ms == pytest.approx(90)
    assert turn.breakdown_ms() == pytest.approx(
        {"speech_sent->speech_end": 600, "speech_end->transcript_final": 20, "transcript_final->first_audio": 80,
         "first_audio->received": 50})
    # A stale reply that had already stopped before the user spoke costs nothing, never a negative time.
    assert TurnRecord(0, 1, "x", 0, 1, interrupted_at=5.0, stale_until=4.0).barge_in_ms == 0


def test_the_summary_says_how_long_the_turns_waited_to_end() -> None:
    def turn(t: int, silence_ms: float | None) -> TurnRecord:
        ends = None if silence_ms is None else {"silence_ms": silence_ms, "audio": None, "words": 0.9}
        return TurnRecord(0, t, "hi", 0.0, 1.0, first_audio=1.5, end_of_turn=ends)

    turns = [turn(i, 300.0) for i in range(19)] + [turn(19, 1500.0), turn(20, None)]
    ends = summarise_turns(turns, Delays(0.2))["end_of_turn_silence_ms"]
    assert ends["p50"] == 300.0 and ends["p99"] > 1400  # the turn without metrics (a typed one) is left out
    assert summarise_turns([turn(0, None)], Delays(0.2))["end_of_turn_silence_ms"] == quantiles([])


def test_overhead_subtracts_silence_and_engine_delays() -> None:
    turns = [TurnRecord(0, i, "x", 0.0, 1.0, first_audio=1.0 + ms / 1000, completed=True) for i, ms in
             enumerate([700, 710, 720, 900])]
    turns.append(TurnRecord(0, 9, "x", 0.0, 1.0))  # never answered: started, not completed
    summary = summarise_turns(turns, Delays(0.6, stt_s=0.05))
    assert summary["turns"] == 4 and summary["turns_started"] == 5
    assert summary["v2v_ms"] == {"p50": 710.0, "p95": 900.0, "p99": 900.0}
    assert summary["overhead_ms"] == {"p50": 60.0, "p95": 250.0, "p99": 250.0}
    assert summary["barge_in_ms"] == quantiles([]) == {"p50": None, "p95": None, "p99": None}


def test_overhead_counts_from_the_least_silence_the_end_of_turn_rule_waits() -> None:
    plan = load.LoadPlan(silence_s=0.6, stt_delay_s=0.05)
    assert plan.delays.total_ms == pytest.approx(250)  # smart end of turn (the default): vad.min_silence_s 0.2
    assert load.LoadPlan(extra=("vad.min_silence_s=0.3",)).delays.end_of_turn_silence_s == 0.3
    assert load.LoadPlan(extra=("vad.end_of_turn=silence",)).delays.end_of_turn_silence_s == 0.6
    assert load.LoadPlan(frontend="realtimestt").delays.end_of_turn_silence_s == 0.6  # always the fixed silence


def test_capacity_is_the_largest_clean_run_within_the_bound() -> None:
    def run(n: int, p95: float, dropped: int = 0, errors: int = 0) -> dict[str, object]:
        return {"sessions": n, "overhead_ms": {"p95": p95}, "dropped_frames": dropped, "errors": errors}

    assert capacity([run(10, 20), run(30, 60), run(50, 79.9), run(70, 120)]) == 50
    assert capacity([run(10, 20), run(30, 30, dropped=3), run(50, 50, errors=1)]) == 10
    assert capacity([run(10, 100)]) is None


def test_voiced_end_is_where_the_sound_stops() -> None:
    pcm = np.concatenate([np.zeros(1600), 8000 * np.ones(3200), 100 * np.ones(160), np.zeros(4800)]).astype(np.int16)
    assert utterance("x", pcm).voiced_end == 1600 + 3200 + 160  # above -40 dB of the peak is still sound
    assert utterance("x", pcm, gain=0.5).pcm.max() == 4000


def test_tracker_digests_only_what_is_new() -> None:
    received = Received()
    seen = Tracker(received)

    def message(at: float, **fields: object) -> None:
        received.messages.append(fields)
        received.message_times.append(at)

    def audio(at: float, generation: int, start: int) -> None:
        received.audio.append((at, ServerAudio(generation, 0, start, 16000, b"\0\0" * 320)))

    message(1.0, type="final_transcript", text="hello", generation=1)
    audio(1.2, 2, 0)
    audio(1.3, 2, 320)
    assert seen.update().finals == ["hello"] and seen.first_audio_after(1) == (1.2, 2)
    message(1.5, type="flush_playback", generation=3)
    message(1.6, type="state_changed", state="listening", generation=3)
    seen.update()
    assert seen.flush_after(2) == 1.5 and seen.flush_after(3) is None
    assert seen.last_audio[2] == 1.3 and seen.listening_after(3) and not seen.listening_after(4)
    assert seen.finals == ["hello"]  # nothing counted twice


def test_a_barge_in_is_settled_by_the_flush_or_by_a_reply_that_had_played_out() -> None:
    """The client waits for the flush of the reply it spoke into; without one, the turn's final transcript
    settles it only where the reply's audio had played out before the barge-in began (nothing to flush)."""

    def case(onset: float, flush: bool, final: bool) -> tuple[SimulatedUser, TurnRecord, TurnRecord, bool]:
        received = Received()
        seen = Tracker(received)
        received.audio += [(1.0 + i * 0.02, ServerAudio(2, 0, i * 320, 16000, b"\0\0" * 320)) for i in range(50)]
        if flush:
            received.messages.append({"type": "flush_playback", "generation": 3})
            received.message_times.append(onset + 0.1)
        if final:
            received.messages.append({"type": "final_transcript", "text": "hi", "generation": 3})
            received.message_times.append(onset + 1.0)
        user = SimulatedUser(0, "ws://x", "t", [], turns=1)
        reply = TurnRecord(0, 0, "q", 0.0, 0.5, generation=2, interrupted_at=onset)
        barge = TurnRecord(0, 1, "q", onset, onset + 1.0, barged=True)
        return user, reply, barge, user._barged(seen, reply, barge, 0)

    # The reply: 50 frames of 20 ms from 1.0 s, so it plays until 2.0 s.
    user, reply, barge, settled = case(onset=1.3, flush=True, final=True)
    assert settled and reply.stale_until == 1.98 and reply.interrupted_at == 1.3 and barge.barged
    assert not case(onset=1.3, flush=False, final=False)[3]  # still waiting
    user, reply, barge, settled = case(onset=1.9, flush=False, final=True)  # within the slack of its end
    assert settled and reply.interrupted_at is None and not barge.barged and user.result.late_barges == 1
    with pytest.raises(AssertionError, match="no flush"):
        case(onset=1.3, flush=False, final=True)  # the reply was playing: the barge-in went unanswered


def test_audio_gaps_count_holes_except_in_flushed_replies() -> None:
    received = Received()
    for gen, starts in ((1, [0, 320, 960]), (2, [0, 640])):  # both have a hole; reply 2 was flushed by 3
        received.audio += [(0.0, ServerAudio(gen, 0, s, 16000, b"\0\0" * 320)) for s in starts]
    received.messages.append({"type": "flush_playback", "generation": 3})
    assert audio_gaps(received) == 1


def test_a_reply_stalls_where_its_next_frame_arrives_after_the_audio_before_it_played_out() -> None:
    """Frames of 20 ms: reply 1 arrives in a burst and then 100 ms late once; reply 2 keeps pace within the
    10 ms a client buffers; a reply's first frame never counts (that wait is voice-to-voice, not a stall)."""
    received = Received()

    def frame(at: float, gen: int, start: int) -> None:
        received.audio.append((at, ServerAudio(gen, 0, start, 16000, b"\0\0" * 320)))

    for i in range(3):
        frame(1.0, 1, i * 320)  # plays until 1.06
    frame(1.16, 1, 960)  # 100 ms after the audio ran out
    frame(1.17, 1, 1280)  # within the frame before it: no new hole
    frame(5.0, 2, 0)
    frame(5.025, 2, 320)  # 5 ms late: a jitter buffer's worth
    frame(5.04, 2, 640)
    stalls = playback_stalls(received)
    assert stalls == {1: pytest.approx(100.0), 2: 0.0}
    summary = stall_summary(list(stalls.values()))
    assert summary["replies"] == 2 and summary["stalled"] == 1 and summary["total_ms"] == pytest.approx(100.0)


@pytest.mark.timeout(240)
def test_small_load_run_is_correct(tmp_path) -> None:
    """4 sessions, a barge-in each, 20 churn cycles: every turn answered, no error, nothing left behind."""
    plan = load.LoadPlan(seconds=0.0, min_turns=4, barge_every=3)
    result = load.run_one(plan, 4, churn=20, speech=load.script())
    assert result["errors"] == 0, result["error_samples"]
    assert result["turns"] == result["turns_started"] == 16
    assert result["barge_ins"] == 4
    assert result["leaked_threads"] == 0
    assert {k: result["churn"][k] for k in ("cycles", "errors")} == {"cycles": 20, "errors": 0}
    for key in ("v2v_ms", "overhead_ms", "barge_in_ms"):
        assert result[key]["p50"] is not None and result[key]["p50"] <= result[key]["p95"] <= result[key]["p99"]
    assert result["dropped_frames"] == 0
    assert result["reply_stalls"]["replies"] >= 16 - 4  # every reply heard (the barged ones may be cut first)
    assert all(t["reply"] for t in result["turn_samples"])  # each turn knows what it was answered
    json.dumps(result)  # the --json output is plain JSON

    from voicechat.bench.load_plot import plot

    png = tmp_path / "load.png"
    plot({**result, "sweep": [result, {**result, "sessions": 8}], "capacity": 8}, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_transcripts_are_scored_after_normalising_what_whisper_writes_differently() -> None:
    from voicechat.bench.accuracy import accuracy, normalise, word_errors

    assert normalise("Set a timer for twelve minutes.") == normalise("set a timer for 12 minutes")
    assert normalise("It's twenty-one, not forty") == ["it's", "21", "not", "40"]
    assert word_errors(["a", "b", "c"], ["a", "x", "c", "d"]) == 2  # one substitution, one insertion
    scored = accuracy([("How many legs does a spider have?", "How many legs does the spider have?"),
                       ("Where do penguins live?", "Where do penguins live")])
    assert scored.as_dict() == {"transcripts": 2, "exact": 1, "wer_percent": round(100 * 1 / 11, 1)}


def test_cpu_is_split_by_thread_group_and_what_ended_is_counted_apart() -> None:
    from voicechat.bench.load_stats import cpu_by_group

    before = {1: ("vc-stt", 10.0), 2: ("tts-pool-0", 1.0), 3: ("ses-vad", 0.5)}
    after = {1: ("vc-stt", 14.0), 2: ("tts-pool-0", 2.0), 4: ("tts-pool-1", 1.0)}  # 3 ended, 4 is new
    assert cpu_by_group(before, after, process_cpu_s=7.0, wall_s=10.0) == {
        "vc-stt": 40.0, "tts-pool-": 20.0, "ended threads": 10.0}


def test_a_server_group_spreads_clients_round_robin_and_sums_what_it_observes() -> None:
    from voicechat.bench.load_server import ServerGroup

    class Server:
        def __init__(self, k: int) -> None:
            self.k = k

        def address(self, client: int) -> tuple[str, str]:
            return f"ws://shard{self.k}/ws", f"token{self.k}"

        def metrics(self) -> dict[str, float]:
            return {"voicechat_sessions_active": 1.0, f"only_on_{self.k}": 2.0}

        def settled_threads(self) -> dict[str, int]:
            return {"vc-stt": 2}

    group = ServerGroup([Server(0), Server(1)])  # type: ignore[list-item]
    assert [group.address(i) for i in range(3)] == [("ws://shard0/ws", "token0"), ("ws://shard1/ws", "token1"),
                                                    ("ws://shard0/ws", "token0")]
    assert group.metrics() == {"voicechat_sessions_active": 2.0, "only_on_0": 2.0, "only_on_1": 2.0}
    assert group.settled_threads() == {"vc-stt": 4}


@pytest.mark.timeout(240)
def test_sessions_sharded_over_two_server_processes_are_all_served() -> None:
    plan = load.LoadPlan(seconds=0.0, min_turns=3, barge_every=2, shards=2)
    result = load.run_one(plan, 4, churn=0, speech=load.script())
    assert result["errors"] == 0, result["error_samples"]
    assert result["turns"] == result["turns_started"] == 12 and result["barge_ins"] == 4
    assert result["leaked_threads"] == 0 and result["dropped_frames"] == 0


def test_variants_alternate_process_counts_and_compared_values() -> None:
    from voicechat.bench.load_plan import plan_variants

    found = plan_variants(load.LoadPlan(), ["batched"], ("vad.probe_onsets", ["false", "true"]), [1, 2])
    assert {label: (v.shards, v.extra) for label, v in found.items()} == {
        "batched 1 proc vad.probe_onsets=false": (1, ("vad.probe_onsets=false",)),
        "batched 1 proc vad.probe_onsets=true": (1, ("vad.probe_onsets=true",)),
        "batched 2 proc vad.probe_onsets=false": (2, ("vad.probe_onsets=false",)),
        "batched 2 proc vad.probe_onsets=true": (2, ("vad.probe_onsets=true",)),
    }
    assert list(plan_variants(load.LoadPlan(), ["batched"], None, [2])) == ["batched"]  # one count: no label
    assert load.LoadPlan(extra=("vad.probe_onsets=false",)).onset_rules[2] is False


def test_the_llm_schedulers_work_reaches_metrics_and_the_bench(make_manager) -> None:
    """The real scheduler's counters go through the server's /metrics text to what `bench load` reports."""
    from dataclasses import replace

    from support.engines import scripted_engines

    from voicechat.bench.load_server import parse_metrics
    from voicechat.core.history import ChatMessage
    from voicechat.engines.protocols import GenerationParams
    from voicechat.llm.llama_engine import LlamaCppEngine
    from voicechat.models.tiny import tiny_gguf_path
    from voicechat.server.metrics import ServerMetrics

    manager = make_manager(replace(scripted_engines(), llm=LlamaCppEngine(tiny_gguf_path(), n_ctx=1024, n_batch=64)))
    llm = manager.engines.llm
    params = GenerationParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    metrics = ServerMetrics(manager)
    before = load.llm_work(parse_metrics(metrics.render().decode()))
    for system in ("Be brief.", "Answer every question in French, please, and keep it short."):
        "".join(llm.stream("s", [ChatMessage("system", system), ChatMessage("user", "hello there")], params))
    work = load.llm_work(parse_metrics(metrics.render().decode()))
    stats = llm.stats()
    assert before["admissions"] == 0 and work["admissions"] == stats.admissions == 2
    assert work["generated"] == stats.generated_tokens == 16
    assert work["prefilled"] == stats.prefill_tokens and work["reused"] == stats.reused_tokens
    assert work["dropped"] == stats.dropped_tokens > 0  # the second system prompt diverged from the first
    assert work["steps"] == stats.steps and work["decode_s"] == pytest.approx(stats.decode_s)
    assert work["steps_over_250ms"] == sum(stats.step_counts[4:])
    assert work["admissions_over_64"] == sum(stats.prefill_counts[3:])
    assert load.llm_work(parse_metrics("")) == {}  # an engine without the scheduler's counters reports nothing
