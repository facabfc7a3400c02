"""`python run.py bench faults`: does one session's faulting engine slow the other sessions down?

N sessions take voice turns together, round after round, over scripted engines
with realistic delays (STT per utterance, LLM time to first token and per token,
TTS time to first chunk and per chunk) behind the real shared STT scheduler and
the sessions' call guards. In each fault mode one session's calls to one engine
hang (past the call timeout) or raise, on every other round; the rounds between
show that the same session goes on normally. A hung call returns at the end of
its round (late, long after its turn was ended), or with ``--hangs-stay`` only
at the end of the mode: then each hung STT call holds one of the scheduler's
spare workers for good.
The other sessions' latencies (speech end -> first reply audio, and -> reply
done) are compared with a run without faults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from voicechat.audio import AudioFrame
from voicechat.core.events import ErrorEvent, Event, ReplyDone, StateChanged, TurnMetrics, TurnState
from voicechat.engines.circuit_breaker import CircuitBreaker
from voicechat.engines.protocols import Engines, RecognizerCallbacks
from voicechat.engines.scripted.base import FaultPlan
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.stt import EnergyRecognizer, ScriptedTranscriber
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.engines.stuck_calls import STUCK_CALLS
from voicechat.session.bounded_queue import QueueClosed
from voicechat.session.manager import Session, SessionLimits, SessionManager
from voicechat.session.pipeline import PipelineOptions
from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k, with_silence
from voicechat.stt.scheduler import SttScheduler

MODES = ("none", "stt-hang", "llm-hang", "tts-hang", "stt-fail", "llm-fail", "tts-fail")


@dataclass(frozen=True)
class Delays:
    """Scripted compute times, roughly a small CPU deployment's (seconds)."""

    stt_s: float = 0.15
    llm_first_s: float = 0.25
    llm_token_s: float = 0.03
    tts_first_s: float = 0.08
    tts_chunk_s: float = 0.015  # per 40 ms chunk: about 2.5x faster than real time
    reply_words: int = 24


class Recorder:
    """Drains one session's outbox on a thread; waits on conditions, never polls."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[tuple[float, Event]] = []
        self.round_start = 0  # index of the first event of the current round
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name="bench-recorder", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                event = self.session.pipeline.outbox.get()
            except QueueClosed:
                return
            with self._cond:
                self.events.append((time.monotonic(), event))
                self._cond.notify_all()

    def start_round(self) -> None:
        with self._cond:
            self.round_start = len(self.events)

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate([e for _, e in self.events]), timeout)


def turn_over(n: int) -> Callable[[list[Event]], bool]:
    """Turn ``n`` ended: its error or reply is in, and the session is listening again."""
    def check(events: list[Event]) -> bool:
        ended = sum(isinstance(e, ReplyDone) for e in events)
        ended += sum(isinstance(e, ErrorEvent) and e.stage == "stt" for e in events)
        states = [e.state for e in events if isinstance(e, StateChanged)]
        return ended >= n and bool(states) and states[-1] is TurnState.LISTENING
    return check


def build(delays: Delays, plans: dict[str, FaultPlan], timeout_s: float, references: dict) -> Engines:
    lenient = {"failure_threshold": 50, "window_s": 60.0, "cooldown_s": 5.0}  # one faulting session is no outage
    stt = SttScheduler(
        ScriptedTranscriber(references, delay_s=delays.stt_s, faults=plans["stt"]),
        call_timeout_s=timeout_s, breaker=CircuitBreaker("speech recogniser", **lenient),
    )

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> EnergyRecognizer:
        return EnergyRecognizer(session_id, stt, callbacks)

    llm = ScriptedLLM(delays.llm_first_s, delays.llm_token_s, delays.reply_words, faults=plans["llm"],
                      breaker=CircuitBreaker("language model", **lenient))
    tts = ScriptedTTS(24000, delays.tts_first_s, delays.tts_chunk_s, faults=plans["tts"],
                      breaker=CircuitBreaker("speech synthesizer", **lenient))
    return Engines(stt, recognizer, llm, tts)


@dataclass
class ModeResult:
    mode: str
    faults_injected: int = 0
    fault_errors: dict[str, int] = field(default_factory=dict)
    faulty_turns_ok: int = 0  # the faulting session's turns between faults that completed normally
    other_turns: int = 0
    other_turns_ok: int = 0
    v2v_s: list[float] = field(default_factory=list)  # other sessions: speech end -> first audio
    done_s: list[float] = field(default_factory=list)  # other sessions: speech end -> reply done
    stuck_threads: int = 0  # hung call threads declared stuck (each came back at the end of its round)
    other_errors: int = 0  # error events of the sessions without faults
    seconds: float = 0.0


def run_mode(
    mode: str, sessions: int, rounds: int, timeout_s: float, delays: Delays, audio: list, hangs_stay: bool = False
) -> ModeResult:
    stage, _, kind = mode.partition("-")
    plans = {s: FaultPlan() for s in ("stt", "llm", "tts")}
    engines = build(delays, plans, timeout_s, {SAMPLE_SENTENCES[i]: a for i, a in enumerate(audio)})
    options = PipelineOptions(llm_call_timeout_s=timeout_s, tts_call_timeout_s=timeout_s, abort_grace_s=0.5)
    manager = SessionManager(engines, SessionLimits(max_sessions=sessions, join_timeout_s=2.0), options)
    manager.start()
    result = ModeResult(mode)
    started = time.monotonic()
    stuck_before = STUCK_CALLS.stats().stuck_total
    try:
        live = [manager.create("bench") for _ in range(sessions)]
        recorders = [Recorder(s) for s in live]
        faulty = live[0]
        for plan in plans.values():
            plan.session = faulty.id
        for n in range(1, rounds + 1):
            inject = mode != "none" and n % 2 == 1
            if inject:
                plan = plans[stage]
                if kind == "hang":
                    plan.hang_on_call = plan.calls + 1
                else:
                    plan.fail_on_call = plan.calls + 1
                result.faults_injected += 1
            for rec in recorders:
                rec.start_round()
            _speak_round(live, audio, n)
            for i, rec in enumerate(recorders):
                if not rec.wait_for(turn_over(n), timeout=timeout_s * 4 + 30):
                    raise RuntimeError(f"{mode}: session {i} did not finish turn {n}")
            _score(result, recorders, inject)
            if inject and kind == "hang" and not hangs_stay:
                plans[stage].release()  # the hung call comes back, late
                plans[stage].rearm()
        result.stuck_threads = STUCK_CALLS.stats().stuck_total - stuck_before
    finally:
        for plan in plans.values():
            plan.release()
        manager.shutdown()
        engines.close()
    result.seconds = time.monotonic() - started
    return result


def _speak_round(live: list[Session], audio: list, n: int) -> None:
    """Every session says its sentence, a little apart (as people do), in 100 ms frames."""
    def speak(i: int, session: Session) -> None:
        threading.Event().wait(0.15 * i)
        pcm = audio[(i + n) % len(audio)]
        for k in range(0, len(pcm), 1600):
            session.pipeline.feed_audio(AudioFrame(pcm[k : k + 1600].tobytes(), 16000))

    threads = [threading.Thread(target=speak, args=(i, s), name="bench-speaker") for i, s in enumerate(live)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _score(result: ModeResult, recorders: list[Recorder], injected: bool) -> None:
    for i, rec in enumerate(recorders):
        events = rec.events[rec.round_start :]
        done = [(t, e) for t, e in events if isinstance(e, ReplyDone)]
        errors = [e for _, e in events if isinstance(e, ErrorEvent)]
        if i == 0:
            if injected:
                code = errors[-1].code if errors else "none"
                result.fault_errors[code] = result.fault_errors.get(code, 0) + 1
            elif done and done[-1][1].text:
                result.faulty_turns_ok += 1
            continue
        result.other_turns += 1
        result.other_errors += len(errors)
        if not done or not done[-1][1].text or errors:
            continue
        reply = done[-1][1]
        metrics = next((e for _, e in events if isinstance(e, TurnMetrics) and e.generation == reply.generation), None)
        if metrics is None or "speech_end" not in metrics.stamps or "first_audio" not in metrics.stamps:
            continue
        result.other_turns_ok += 1
        result.v2v_s.append(metrics.stamps["first_audio"] - metrics.stamps["speech_end"])
        result.done_s.append(done[-1][0] - metrics.stamps["speech_end"])


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1], "mean": statistics.fmean(ordered),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench faults", description=__doc__)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="voice turns per session and mode (faults on odd ones)")
    parser.add_argument("--timeout", type=float, default=2.0, help="call timeout of every stage, seconds")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {','.join(MODES)}")
    parser.add_argument("--hangs-stay", action="store_true", help="hung calls return only at the end of the mode")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    audio = [with_silence(speech_16k(t), 0.3, 0.8) for t in SAMPLE_SENTENCES[: max(args.sessions, 4)]]
    delays = Delays()
    results = [
        run_mode(m, args.sessions, args.rounds, args.timeout, delays, audio, args.hangs_stay)
        for m in args.modes.split(",")
    ]
    base = next((r for r in results if r.mode == "none"), None)
    report = []
    print(f"{'mode':10} {'faults':>6} {'errors seen':24} {'recovered':>9} {'others ok':>9} "
          f"{'v2v p50':>8} {'v2v p95':>8} {'done p95':>8} {'x p95':>6} {'x max':>6} {'stuck':>5} {'err':>4}")
    for r in results:
        v2v, done = _summary(r.v2v_s), _summary(r.done_s)
        ratio_p95 = v2v["p95"] / _summary(base.v2v_s)["p95"] if base and base.v2v_s and v2v else float("nan")
        ratio_max = done["max"] / _summary(base.done_s)["max"] if base and base.done_s and done else float("nan")
        errors = ",".join(f"{k}:{v}" for k, v in sorted(r.fault_errors.items())) or "-"
        print(f"{r.mode:10} {r.faults_injected:6d} {errors:24} {r.faulty_turns_ok:9d} "
              f"{r.other_turns_ok:4d}/{r.other_turns:<4d} {v2v.get('p50', 0):8.3f} {v2v.get('p95', 0):8.3f} "
              f"{done.get('p95', 0):8.3f} {ratio_p95:6.2f} {ratio_max:6.2f} {r.stuck_threads:5d} {r.other_errors:4d}")
        report.append({**r.__dict__, "v2v": v2v, "done": done, "ratio_v2v_p95": ratio_p95,
                       "ratio_done_max": ratio_max})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sessions": args.sessions, "rounds": args.rounds, "timeout_s": args.timeout,
                       "hangs_stay": args.hangs_stay,
                       "delays": delays.__dict__, "results": report}, f, indent=2)
    return 0
