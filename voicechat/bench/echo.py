"""`python run.py bench echo`: the echo canceller against the echo gate in simulated rooms (one run, side by side).

Each mode (``aec``, ``speex``, ``aec+gate``, ``gate``, ``off``) hears the same scenes
(``echo_scenes``): the local session's echo stage in 20 ms blocks, then the
product's listening rules with Silero on what it lets through, as the pipeline
does. A speech onset before the user's first sample is a self-interruption (one
between that sample and the user's voiced onset is the user, found early); the reply then
stops (a barge-in flushes the speaker) ``flush_ms`` later, and so it does when
the user is detected. Reported per mode: echo return loss enhancement on the
far-end-only replies after each room's first second, self-interruptions over
all replies, double-talk detection within 150 ms of the user's onset, exact
transcripts of the user's utterance by real Whisper (tiny.en unless ``--whisper``
names another starter model) and, of the utterances it gets right clean, how many
it still gets right over the echo (the echo stage's own loss), and the echo
stage's CPU time per second of audio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from voicechat.bench.accuracy import accuracy, normalise
from voicechat.bench.echo_scenes import RATE, Scene, build_scenes, erle_db, noise_for, room_grid
from voicechat.local.echo_cancel import EchoStage
from voicechat.local.room import rms
from voicechat.stt.listening import CHUNK, ListeningRules, ListeningState, SpeechStarted, UtteranceEnded
from voicechat.stt.silero_batch import SileroBatch, SileroStream, probe

BLOCK = 320  # the capture block: 20 ms at 16 kHz
MODES = ("aec", "speex", "aec+gate", "gate", "off")
DETECT_MS = 150.0
CONVERGE_S = 1.0


@dataclass
class Outcome:
    """One mode over every scene."""

    mode: str
    erle_db: list[float] = field(default_factory=list)  # per room, far-end-only replies after the first second
    replies: int = 0
    self_interruptions: int = 0  # replies during which speech was detected while nobody talked
    interrupted: list[str] = field(default_factory=list)  # where: "room RT60/delay/gain, reply k, at s"
    latencies_ms: list[float | None] = field(default_factory=list)  # per double-talk case; None = never detected
    late: list[str] = field(default_factory=list)  # the cases detected after DETECT_MS or never, and where
    heard: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (spoken text, the utterance's audio)
    busy_s: float = 0.0
    audio_s: float = 0.0


class _Listener:
    """The pipeline's listening rules with Silero over one stream (the front end's job, without its thread)."""

    def __init__(self, vad: SileroBatch, rules: ListeningRules) -> None:
        self.vad, self.state, self.stream = vad, ListeningState(rules), SileroStream()
        self._quiet = 10 ** (rules.quiet_dbfs / 20)
        self._pending = np.zeros(0, np.int16)
        self._last = np.zeros(0, np.float32)  # the last chunk analysed (a probe's window starts in it)

    @property
    def position(self) -> int:
        """Samples fed so far (the stream's clock)."""
        return self.state.analysed + len(self._pending)

    def feed(self, pcm: np.ndarray) -> list[object]:
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])
        events: list[object] = []
        while len(self._pending) >= CHUNK:
            chunk, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            x = self._last = chunk.astype(np.float32) / 32768.0
            if self.state.recording or rms(x) >= self._quiet:
                probability: float | None = float(self.vad.run([self.stream], x[None, :])[0])
            else:
                self.stream.skip(x)
                probability = 0.0
            events.extend(self.state.chunk(chunk.tobytes(), probability))
        if self.state.rules.probe_onsets and not self.state.recording and rms(pcm / 32768.0) >= self._quiet:
            look = probe(self.stream, self._last, self._pending.astype(np.float32) / 32768.0)
            if look is not None:  # the front end's probe of a loud block's 32 ms (``vad.probe_onsets``)
                p = float(self.vad.run([look[0]], look[1][None, :])[0])
                events.extend(self.state.probed(len(self._pending), p))
        return events


def run_scene(scene: Scene, mode: str, vad: SileroBatch, outcome: Outcome, flush_ms: float = 40.0,
              probes: bool = True) -> None:
    """Play one room's stream through one mode; add what happened to ``outcome``. ``probes``: the listening
    rules look for onsets between chunks too (``vad.probe_onsets``)."""
    base = "aec" if mode.startswith("aec") else mode
    stage = EchoStage(base, RATE, gate_after=mode == "aec+gate")  # type: ignore[arg-type]
    if stage.mode != base:
        raise SystemExit(f"bench echo's {mode} mode needs its library (see the log's warning)")
    listener = _Listener(vad, ListeningRules(probe_onsets=probes))
    history = np.zeros(int(0.5 * RATE), np.int16)  # the speaker's recent timeline (the gate's reference)
    erle_echo: list[np.ndarray] = []
    erle_out: list[np.ndarray] = []
    skip = int(CONVERGE_S * RATE)
    for index, segment in enumerate(scene.segments):
        far = segment.far.copy()
        noise = noise_for(segment, scene.room, index)
        mic, echo = segment.mic(far, scene.room, noise)
        out = np.zeros(len(far))
        start = listener.position
        ended: dict[int, np.ndarray] = {}
        flushed_at: int | None = None
        interrupted, latency, user_utterance = False, None, None
        user_start = len(far) if segment.user is None else int(np.flatnonzero(segment.user)[0])
        for pos in range(0, len(far) - BLOCK + 1, BLOCK):
            block_far = np.clip(far[pos:pos + BLOCK], -32768, 32767).astype(np.int16)
            history = np.concatenate([history[BLOCK:], block_far])
            near = np.clip(mic[pos:pos + BLOCK], -32768, 32767).astype(np.int16)
            began = time.perf_counter()
            cleaned = stage.process(near, block_far, lambda s, h=history: h[-int(s * RATE):])
            outcome.busy_s += time.perf_counter() - began
            out[pos:pos + len(cleaned)] = cleaned
            if segment.user is not None and latency is None and listener.state.recording and pos >= segment.onset:
                latency, user_utterance = 0.0, listener.state.utterance  # already listening when the user began
            for event in listener.feed(cleaned):
                if isinstance(event, SpeechStarted):
                    heard_at = event.sample - start + CHUNK
                    if segment.user is None or heard_at < user_start:
                        outcome.interrupted.append(f"{_where(scene, index)} at {heard_at / RATE:.2f} s")
                        interrupted = True
                    elif latency is None:  # on the user's soft start, before the voiced onset: no wait at all
                        latency, user_utterance = max(0, heard_at - segment.onset) * 1000 / RATE, event.utterance
                    if flushed_at is None:  # a barge-in: the reply stops
                        flushed_at = pos + BLOCK + int(flush_ms / 1000 * RATE)
                        far[flushed_at:] = 0
                        mic, echo_after = segment.mic(far, scene.room, noise)
                        echo = np.concatenate([echo[:flushed_at], echo_after[flushed_at:]])
                elif isinstance(event, UtteranceEnded):
                    ended[event.utterance] = event.audio
        outcome.audio_s += len(far) / RATE
        outcome.replies += 1
        outcome.self_interruptions += interrupted
        if segment.user is not None:
            outcome.latencies_ms.append(latency)
            if latency is None or latency > DETECT_MS:
                outcome.late.append(f"{_where(scene, index)}, {segment.voice} at {segment.level_db:+g} dB: "
                                    + ("never" if latency is None else f"{latency:.0f} ms"))
            missing = np.zeros(0, np.float32)  # never detected, or still not ended
            outcome.heard.append((segment.text, ended.get(user_utterance, missing) if user_utterance else missing))
        else:
            end = flushed_at if flushed_at is not None else len(far)
            erle_echo.append(echo[skip:end])
            erle_out.append(out[skip:end])
        skip = 0
    if erle_echo:
        value = erle_db(np.concatenate(erle_echo), np.concatenate(erle_out))
        if value is not None:
            outcome.erle_db.append(value)


def _where(scene: Scene, index: int) -> str:
    room = scene.room
    return f"{room.rt60_s}/{room.delay_ms:g}/{room.gain_db:g} reply {index}"


def transcripts(model: object, heard: list[tuple[str, np.ndarray]]) -> list[str]:
    """Whisper's transcript of each heard utterance ("" where nothing was heard)."""
    from voicechat.engines.protocols import SpeechInput

    return [model.transcribe_batch([SpeechInput("bench", audio, True, "en")])[0] if len(audio) else ""
            for _, audio in heard]


def transcript_scores(heard: list[tuple[str, np.ndarray]], texts: list[str],
                      clean: dict[str, str]) -> dict[str, object]:
    """Exact transcripts (and WER) against what was said, and of the utterances transcribed exactly when clean,
    how many still are: the echo stage's own loss, apart from what the recogniser gets wrong on the voice alone."""
    said = [spoken for spoken, _ in heard]
    score = accuracy(zip(said, texts, strict=True))
    exact = [normalise(spoken) == normalise(text) for spoken, text in zip(said, texts, strict=True)]
    clean_exact = [normalise(spoken) == normalise(clean.get(spoken, "")) for spoken in said]
    kept = sum(e and c for e, c in zip(exact, clean_exact, strict=True))
    return {"transcripts_exact": f"{score.exact}/{score.count}",
            "exact_where_clean_exact": f"{kept}/{sum(clean_exact)}",
            "wer_percent": round(100 * score.wer, 1) if score.wer is not None else None}


def summary(outcome: Outcome, scores: dict[str, object]) -> dict[str, object]:
    detected = [x for x in outcome.latencies_ms if x is not None and x <= DETECT_MS]
    known = [x for x in outcome.latencies_ms if x is not None]
    erle = outcome.erle_db
    return {
        "mode": outcome.mode,
        "erle_min_db": round(min(erle), 1) if erle else None,
        "erle_median_db": round(statistics.median(erle), 1) if erle else None,
        "rooms_erle_25db": f"{sum(e >= 25 for e in erle)}/{len(erle)}",
        "self_interruptions": f"{outcome.self_interruptions}/{outcome.replies}",
        "detected_150ms": f"{len(detected)}/{len(outcome.latencies_ms)}",
        "detection_median_ms": round(statistics.median(known)) if known else None,
        **scores,
        "cpu_percent_of_core": round(100 * outcome.busy_s / outcome.audio_s, 2) if outcome.audio_s else None,
        "interrupted": outcome.interrupted,
        "late": outcome.late,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench echo", description=__doc__)
    parser.add_argument("--rt60", default="0.3,0.45,0.6", help="room reverberation times (s)")
    parser.add_argument("--delays", default="20,60,100,150", help="speaker-to-microphone delays (ms)")
    parser.add_argument("--gains", default="-6,-3,0", help="echo gains (dB), taken in turn")
    parser.add_argument("--levels", default="-6,0,6", help="user level over the echo (dB), taken in turn")
    parser.add_argument("--noise", type=float, default=-65.0, help="room noise (dBFS)")
    parser.add_argument("--replies-per-room", type=int, default=2, help="far-end-only replies per room")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--voice-dir", default="models/piper")
    parser.add_argument("--whisper", default="models/faster-whisper-tiny.en")
    parser.add_argument("--probes", choices=["on", "off", "both"], default="on",
                        help="onsets looked for between chunks too (vad.probe_onsets); both: each mode twice")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    from voicechat.speech_samples import SAMPLE_QUESTIONS, SAMPLE_SENTENCES, piper_speech_16k, speech_16k
    from voicechat.stt.whisper_model import FasterWhisperModel

    floats = lambda text: [float(x) for x in text.split(",")]  # noqa: E731
    rooms = room_grid(floats(args.rt60), floats(args.delays), floats(args.gains), args.noise)
    replies = piper_speech_16k(SAMPLE_SENTENCES, voice_dir=args.voice_dir)
    questions = SAMPLE_QUESTIONS[: 2 * len(rooms)]
    joe = piper_speech_16k(questions[0::2], voice_dir=args.voice_dir)
    users = [u for pair in zip([("joe", q, a) for q, a in zip(questions[0::2], joe, strict=True)],
                               [("espeak", q, speech_16k(q)) for q in questions[1::2]], strict=False) for u in pair]
    scenes = build_scenes(rooms, replies, users, replies_per_room=args.replies_per_room,
                          levels_db=floats(args.levels))
    vad = SileroBatch()
    whisper = FasterWhisperModel(args.whisper, device="cpu", compute_type="int8", cpu_threads=2, window="utterance")
    clean = [(text, audio.astype(np.float32) / 32768.0) for _, text, audio in users]
    clean_texts = transcripts(whisper, clean)
    clean_by_text = {text: heard for (text, _), heard in zip(clean, clean_texts, strict=True)}
    clean_scores = transcript_scores(clean, clean_texts, clean_by_text)
    rows = []
    probing = {"on": [True], "off": [False], "both": [True, False]}[args.probes]
    for mode, probes in [(m, p) for m in args.modes.split(",") for p in probing]:
        outcome = Outcome(mode if probes or args.probes == "off" else f"{mode}, chunks only")
        for scene in scenes:
            run_scene(scene, mode, vad, outcome, probes=probes)
        rows.append(summary(outcome, transcript_scores(outcome.heard, transcripts(whisper, outcome.heard),
                                                       clean_by_text)))
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        del row["interrupted"], row["late"]  # in the JSON lines above, not in the table
    print(f"\nrooms: {len(rooms)} (RT60 {args.rt60} s x delays {args.delays} ms, gains {args.gains} dB, "
          f"noise {args.noise} dBFS); users over the echo at {args.levels} dB; "
          f"the users' utterances transcribed clean: exact {clean_scores['transcripts_exact']}, "
          f"WER {clean_scores['wer_percent']} %\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rooms": len(rooms), "whisper": args.whisper, "clean": clean_scores, "results": rows}, f,
                      indent=2)
    return 0
