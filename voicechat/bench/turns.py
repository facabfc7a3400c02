"""`python3 run.py bench turns`: end of turn by signals against the fixed 0.6 s silence, on the evidence set.

For every utterance of the evidence set (``turn_evidence.py``: complete turns and mid-sentence
pauses, Piper joe and espeak-ng) this streams the audio through the listening front end's own
rules (real Silero over 32 ms chunks, ``ListeningState``'s end-of-speech tracker) to find the first
silence they would judge: where it starts (the last voiced 10 ms frame), when Silero reported it,
and how long it lasts before speech resumes. Then each signal is computed as the pipeline would,
and is in only once computed:

* audio: Smart Turn on the utterance (1 s pre-roll) up to ``min_silence_s`` of silence, asked then;
* words: Whisper tiny.en (``stt.window`` utterance) on the audio up to Silero's report, asked
  then (the transcription made inside the silence), scored by ``transcript_end.words_score``;
* llm (``--llm``): SmolLM2's end-of-message probe on that transcript as the user's message
  (``llm.probe``: the mean of P(``<|im_end|>``) after the text and P(a sentence ends) after its last
  word; read from a prefill the early reply would run anyway).

``turn_scoring`` replays the rules over each silence. Rules are chosen on one voice and checked
on the other (``--choose-on``). Also Whisper's WER on the whole utterances, window utterance vs full.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from voicechat.bench.accuracy import accuracy
from voicechat.bench.turn_evidence import RATE, VOICES, Utterance, load
from voicechat.bench.turn_scoring import Observed, Signal, choose, describe, percentile, summarize, sweep
from voicechat.llm.probe import EndProbe, end_of_turn, last_word_at, sentence_end_tokens
from voicechat.models.registry import SMOLLM2_FILE
from voicechat.stt.listening import ListeningRules, ListeningState, SpeechStarted
from voicechat.stt.silero_batch import SileroBatch, SileroStream
from voicechat.stt.transcript_end import words_score
from voicechat.stt.turn_end import AUDIO_AND_WORDS, FIXED, LLM_WORDS, TurnEndRules

PRE_ROLL_S = 1.0
CHUNK = 512


@dataclass(frozen=True)
class Silence:
    start: int  # the first quiet sample (after the last voiced 10 ms frame)
    reported: int  # samples of the stream analysed when Silero reported it
    vad_s: float  # the silence then
    available_s: float  # silence before Silero hears speech again (inf: none comes)


def listen(audio: np.ndarray, vad: SileroBatch) -> tuple[int, list[Silence]]:
    """Stream ``audio`` (int16) as the front end does (Silero per 32 ms chunk, quiet chunks skipped
    before speech) into ``ListeningState``; its end-of-speech tracker reports each silence. Returns
    (the first speech chunk's sample, the silences after it)."""
    rules = ListeningRules(post_speech_silence_s=1e9, partials=False)  # never ends: every silence is seen
    state, stream = ListeningState(rules), SileroStream()
    quiet_rms = 10 ** (rules.quiet_dbfs / 20)
    onset, found = -1, []
    open_: tuple[int, int, float] | None = None
    for k in range(len(audio) // CHUNK):
        pcm = audio[k * CHUNK : (k + 1) * CHUNK]
        x = pcm.astype(np.float32) / 32768.0
        if state.recording or float(np.sqrt(np.mean(x * x))) >= quiet_rms:
            if stream.skipped:
                stream.state[:] = 0.0
                stream.skipped = False
            p = float(vad.run([stream], x[None, :])[0])
        else:
            stream.skip(x)
            p = 0.0
        for event in state.chunk(pcm.tobytes(), p):
            if isinstance(event, SpeechStarted) and onset < 0:
                onset = event.sample
        silence = state._end.silence_s if state.recording else None  # the tracker that ends turns
        if silence is not None and open_ is None:
            open_ = (state.analysed - round(silence * RATE), state.analysed, silence)
        elif silence is None and open_ is not None:
            found.append(Silence(*open_, (state.analysed - open_[0]) / RATE))
            open_ = None
    if open_ is not None:
        found.append(Silence(*open_, float("inf")))
    return onset, found


class Signals:
    """The models behind the signals, loaded once: Smart Turn, Whisper tiny.en, optionally SmolLM2."""

    def __init__(self, root: Path, llm: bool, threads: int) -> None:
        from voicechat.stt.smart_turn import SmartTurnModel
        from voicechat.stt.whisper_model import FasterWhisperModel

        self.smart_turn = SmartTurnModel(root / "models" / "smart-turn" / "smart-turn-v3.2-cpu.onnx")
        whisper_dir = str(root / "models" / "faster-whisper-tiny.en")
        self.whisper = {w: FasterWhisperModel(whisper_dir, device="cpu", cpu_threads=threads, window=w)
                        for w in ("utterance", "full")}
        self.llm = _EndOfMessage(root / "models" / SMOLLM2_FILE, threads) if llm else None

    def transcribe(self, audio: np.ndarray, window: str) -> tuple[str, float]:
        from voicechat.engines.protocols import SpeechInput

        started = time.perf_counter()
        text = self.whisper[window].transcribe_batch([SpeechInput("bench", audio, True, "en")])[0]
        return text, (time.perf_counter() - started) * 1000

    def audio(self, audio: np.ndarray) -> tuple[float, float]:
        started = time.perf_counter()
        p = self.smart_turn.predict([audio])[0]
        return p, (time.perf_counter() - started) * 1000


class _EndOfMessage:
    """The LLM engine's end-of-message probe (``llm.probe``: the mean of P(<|im_end|>) after the user's text
    and P(a sentence ends) after its last word) from SmolLM2's logits (llama-cpp-python), with the product's
    default system prompt and example exchange (``llm.system_prompt``, ``llm.example_turns``) and attention,
    as the session's prefill reads it.

    The system prompt stays in the KV cache between calls (llama-cpp-python's prefix reuse), as a
    session's context keeps it, so the time is that of the user's words only, as in the product.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import llama_cpp
        from llama_cpp import Llama

        from voicechat.config.reply import LlmSettings
        from voicechat.core.history import ConversationHistory
        from voicechat.llm.chat_template import CHATML_TEMPLATE, ChatTemplate

        llm = LlmSettings()  # the session's prompt head: system prompt and example exchange, as the history has it
        history = ConversationHistory(llm.system_prompt, llm.history_max_tokens, examples=llm.example_turns)
        self.head = ChatTemplate(CHATML_TEMPLATE).render(history.messages(), add_generation_prompt=False)
        self.model = Llama(str(path), n_ctx=1024, n_threads=threads, logits_all=True, verbose=False, seed=7,
                           flash_attn=True)
        self.end = self.model.tokenize(b"<|im_end|>", add_bos=False, special=True)[0]
        vocab = llama_cpp.llama_model_get_vocab(self.model.model)
        self.sentence_ends = sentence_end_tokens([self._piece(t) for t in range(self.model.n_vocab())],
                                                 lambda t: bool(llama_cpp.llama_vocab_is_eog(vocab, t)))
        self("Hello.")  # the system prompt into the cache, as a session's first turn puts it there

    def _piece(self, token: int) -> bytes:
        return self.model.detokenize([token], special=True)

    def __call__(self, text: str) -> tuple[float | None, float]:
        started = time.perf_counter()
        prompt = f"{self.head}<|im_start|>user\n{text.strip()}"
        tokens = self.model.tokenize(prompt.encode(), add_bos=False, special=True)
        steps = self.model.generate(tokens, reset=True, temp=0.0)  # reuses the cached prefix, evaluates the rest
        next(steps)  # (and samples one token, which is not used)
        steps.close()
        word_at = last_word_at(tokens, len(tokens) - 1, self._piece, text)
        if word_at is None:
            return None, (time.perf_counter() - started) * 1000
        probe = EndProbe(word_at, len(tokens) - 1, self.end, self.sentence_ends)
        parts: dict[str, float] = {}
        for at in probe.rows():
            parts.update(probe.read(at, np.asarray(self.model.scores[at])))
        return end_of_turn(parts), (time.perf_counter() - started) * 1000


def observe(item: Utterance, signals: Signals, vad: SileroBatch, rules: TurnEndRules) -> tuple[Observed, dict]:
    """The first silence of ``item`` the rules would judge, and each signal in it; plus WER inputs."""
    x = item.audio.astype(np.float32) / 32768.0
    onset, found = listen(item.audio, vad)
    judged = next((s for s in found if s.available_s >= rules.min_silence_s), found[-1])
    begin = max(0, onset - round(PRE_ROLL_S * RATE))
    expected = item.pause_start if item.kind == "paused" else item.speech_end
    place_ok = abs(judged.start - expected) <= 0.25 * RATE
    asked = max(rules.min_silence_s, 0.0)
    p_audio, ms_audio = signals.audio(x[begin : judged.start + round(asked * RATE)])
    text, ms_words = signals.transcribe(x[begin : judged.reported], "utterance")
    got = {"audio": Signal(p_audio, asked + ms_audio / 1000, ms_audio),
           "words": Signal(words_score(text), judged.vad_s + ms_words / 1000, ms_words)}
    if signals.llm is not None:
        p_llm, ms_llm = signals.llm(text) if text.strip() else (None, 0.0)
        got["llm"] = Signal(p_llm, got["words"].at_s + ms_llm / 1000, ms_llm)
    observed = Observed(item.name, item.voice, item.kind, judged.available_s, judged.vad_s, place_ok, text, got)
    whole = x[max(0, item.speech_start - round(0.3 * RATE)) : item.speech_end + round(0.3 * RATE)]
    return observed, {"text": item.text, "whole": whole}


def fixed_rows(llm: bool) -> list[tuple[str, TurnEndRules, str]]:
    """The table's rules: the fixed silence, each signal alone and combined at 0.5, the presets."""
    half = replace(TurnEndRules(), audio_threshold=0.5, words_threshold=0.5)
    rows = [("fixed", FIXED, "words"), ("audio", replace(half, combine="audio"), "words"),
            ("words", replace(half, combine="words"), "words"), ("both", replace(half, combine="both"), "words"),
            ("either", replace(half, combine="either"), "words"), ("mean", replace(half, combine="mean"), "words"),
            ("AUDIO_AND_WORDS", AUDIO_AND_WORDS, "words")]
    if llm:
        rows += [("llm", replace(half, combine="words"), "llm"), ("audio+llm", replace(half, combine="both"), "llm"),
                 ("default (LLM_WORDS)", LLM_WORDS, "llm")]
    return rows


def table(rows: list[tuple[str, TurnEndRules, str]], by_voice: dict[str, list[Observed]]) -> list[dict]:
    out = []
    print(f"{'rule':52} {'voice':7} {'end p50':>8} {'end p95':>8} {'by sig':>7} {'cut':>9}")
    for label, rules, key in rows:
        name = describe(rules).replace("words", key) if key != "words" else describe(rules)
        if label.isupper() or label.startswith(("default", "chosen")):
            name = f"{name} [{label.split(' (')[-1].rstrip(')')}]"
        for voice, items in by_voice.items():
            score = summarize(rules, items, key)
            out.append({"row": label, "rule": name, "voice": voice, **score.as_dict()})
            print(f"{name:52} {voice:7} {_ms(score.end_p50_ms):>8} {_ms(score.end_p95_ms):>8} "
                  f"{score.ended_by_signals:>3}/{score.complete:<3} {score.cut:>2}/{score.paused} "
                  f"{100 * score.cut_share:3.0f}%")
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def instant(items: list[Observed]) -> list[Observed]:
    """The same utterances with every signal in the moment it was asked (no compute time): the signals' quality."""
    out = []
    for o in items:
        words_ms = o.signals["words"].ms / 1000 if "words" in o.signals else 0.0
        out.append(replace(o, signals={k: replace(v, at_s=v.at_s - v.ms / 1000 - (words_ms if k == "llm" else 0.0))
                                       for k, v in o.signals.items()}))  # the LLM reads the words: asked with them
    return out


def measure(root: Path, voices: list[str], llm: bool, wer: bool, threads: int) -> tuple[dict, dict]:
    """Each voice's observed utterances, and Whisper's WER per voice and window."""
    base = TurnEndRules()
    signals, vad = Signals(root, llm, threads), SileroBatch()
    by_voice: dict[str, list[Observed]] = {}
    errors: dict[str, dict] = {}
    for voice in voices:
        observed, pairs = [], {"utterance": [], "full": []}
        for item in load(voice, root):
            seen, extra = observe(item, signals, vad, base)
            observed.append(seen)
            for window in pairs if wer else ():
                pairs[window].append((extra["text"], signals.transcribe(extra["whole"], window)[0]))
        by_voice[voice] = observed
        if wer:
            errors[voice] = {w: accuracy(p).as_dict() for w, p in pairs.items()}
    return by_voice, errors


def replayed(path: Path) -> tuple[dict, dict]:
    """A former run's utterances (``--json``), the words re-scored with today's ``words_score``."""
    report = json.loads(path.read_text())
    by_voice: dict[str, list[Observed]] = {}
    for u in report["utterances"]:
        signals = {k: Signal(**v) for k, v in u.pop("signals").items()}
        if "words" in signals:
            signals["words"] = replace(signals["words"], value=words_score(u["transcript"]))
        by_voice.setdefault(u["voice"], []).append(Observed(**{**u, "available_s": float(u["available_s"])},
                                                            signals=signals))
    return by_voice, report.get("wer", {})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py bench turns", description=__doc__)
    parser.add_argument("--voices", default=",".join(VOICES), help="evidence voices (joe, espeak)")
    parser.add_argument("--choose-on", default="joe", help="the voice the rules are chosen on (checked on the rest)")
    parser.add_argument("--llm", action="store_true", help="also the LLM's end-of-message probability (SmolLM2)")
    parser.add_argument("--no-wer", action="store_true", help="skip Whisper's WER, window utterance vs full")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for Whisper and the LLM")
    parser.add_argument("--root", type=Path, default=None, help="project root (models/, data/)")
    parser.add_argument("--json", default=None, help="also write the results (and each utterance's signals) here")
    parser.add_argument("--replay", type=Path, default=None, help="score a former run's --json instead of measuring")
    args = parser.parse_args(argv)
    from voicechat.models.store import PROJECT_ROOT

    if args.replay:
        by_voice, wer = replayed(args.replay)
    else:
        by_voice, wer = measure(args.root or PROJECT_ROOT, args.voices.split(","), args.llm, not args.no_wer,
                                args.threads)
    return report(by_voice, wer, args.choose_on, args.json)


def report(by_voice: dict[str, list[Observed]], wer: dict, choose_on: str, json_path: str | None) -> int:
    base = TurnEndRules()
    for voice, observed in by_voice.items():
        misplaced = [o.name for o in observed if not o.expected_place]
        print(f"{voice}: {len(observed)} utterances; first judged silence not where expected: {misplaced or 'none'}")
        if voice in wer:
            print(f"{voice}: Whisper tiny.en WER on the whole utterances, window utterance "
                  f"{wer[voice]['utterance']['wer_percent']} %, full {wer[voice]['full']['wer_percent']} %")
    print("\nsignal compute time (ms, p50 / p95, all voices):")
    times = {}
    for key in ("audio", "words", "llm"):
        ms = [o.signals[key].ms for items in by_voice.values() for o in items if key in o.signals]
        if ms:
            times[key] = {"p50": round(percentile(ms, 50) or 0, 1), "p95": round(percentile(ms, 95) or 0, 1)}
            print(f"  {key:6} {times[key]['p50']:7.1f} / {times[key]['p95']:7.1f}")
    llm = any("llm" in o.signals for items in by_voice.values() for o in items)
    quality = {v: instant(items) for v, items in by_voice.items()}
    rows = fixed_rows(llm)
    chosen = choose(sweep(base), quality.get(choose_on, []))
    if chosen is not None:
        rows.append((f"chosen on {choose_on}", chosen[0], "words"))
    chosen_llm = choose(sweep(base), quality.get(choose_on, []), words_keys=("llm",)) if llm else None
    if chosen_llm is not None:
        rows.append((f"chosen on {choose_on}, llm", chosen_llm[0], "llm"))
    results = {}
    for timing, data in (("instant", quality), ("measured", by_voice)):
        print(f"\nend of turn, signals {'in when asked' if timing == 'instant' else 'in after their compute time'}"
              f" (min {base.min_silence_s} s, max {base.max_silence_s} s of silence):")
        results[timing] = table(rows, data)
    for found, key in ((chosen, "words"), (chosen_llm, "llm")):
        if found is not None:
            print(f"chosen on {choose_on} with the {key} signal, signals in when asked (lowest p50 with <= 10 % "
                  f"of pauses cut): {describe(found[0]).replace('words', key)}")
    if json_path:
        out = {"rows": results, "signal_ms": times, "wer": wer, "chosen": None if chosen is None else asdict(chosen[0]),
               "chosen_llm": None if chosen_llm is None else asdict(chosen_llm[0]),
               "utterances": [{**asdict(o), "signals": {k: asdict(v) for k, v in o.signals.items()}}
                              for items in by_voice.values() for o in items]}
        Path(json_path).write_text(json.dumps(out, indent=2, default=str))
    return 0
