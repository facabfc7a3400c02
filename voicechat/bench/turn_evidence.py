"""The end-of-turn evidence set: finished turns, and sentences with a pause in the middle.

Made here from synthesized speech, two voices: Piper's joe (the starter set's voice, its random
variation off so the same text always gives the same audio) and espeak-ng. For each voice:

* ``COMPLETE``: whole questions and requests, each followed by 2 s of room;
* ``PAUSED``: whole sentences cut at a low-energy point between two words 35-65 % into the
  speech, with 0.6-1.2 s of silence inserted there ("I would like to order a ... large pizza").
  The sentence is synthesized whole and cut, because a fragment synthesized on its own ends
  with a final fall that no listener would hear as a pause. ``|`` in the text marks the word
  boundary; the cut is the quietest 5 ms step within 150 ms of where that boundary falls by the
  characters' share of the speech.

Every utterance has 0.5 s of room before it and a little room noise (-70 dBFS) throughout, so
silence is never digital zero. Pause lengths and noise come from one seed: the set is the same
on every run. It takes a minute or two to make, so ``load`` keeps it under ``data/turn_evidence``
(gitignored), keyed by a hash of everything that shapes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RATE = 16000
SEED = 21
LEAD_S = 0.5
TRAIL_S = 2.0
PAUSE_S = (0.6, 1.2)
CUT_SHARE = (0.35, 0.65)
NOISE_RMS = 10.0  # int16 units: about -70 dBFS
VOICES = ("joe", "espeak")
VERSION = 2  # bump when the way utterances are made changes (invalidates the cache)

COMPLETE = (
    "What is the capital of France?", "How many legs does a spider have?", "Why is the sky blue?",
    "What time does the bakery open tomorrow?", "Can you recommend a good book about space?",
    "How far away is the moon?", "Who wrote the play Romeo and Juliet?", "How do bees make honey?",
    "Turn off the lights in the kitchen.", "Set a timer for ten minutes.", "Play some relaxing music.",
    "What is the weather like in London today?", "Tell me a joke about cats.", "Where are you from?",
    "Which planet is closest to the sun?", "Read me the news headlines please.",
    "How long does it take to boil an egg?", "Add bread and milk to my shopping list.",
    "What should I cook for dinner tonight?", "Remind me to call my sister tomorrow morning.",
    "Can you turn the heating on?", "What does a doctor do at a hospital?", "Translate good morning into Spanish.",
    "Who is the president of the United States?", "How do I plant tomatoes in my garden?",
    "I would like to book a table for two.", "Tell me something interesting about octopuses.",
    "What is the tallest mountain in the world?", "Wake me up at seven tomorrow.", "What are you looking at?",
    "Explain how a rainbow forms.", "Thank you very much.",
    "So I was thinking that maybe we could go to the beach.", "What is this button for?",
)

PAUSED = (
    "I would like to order a | large pizza with mushrooms.",
    "Could you tell me the | fastest way to the train station?",
    "What is the best way to | learn a new language quickly?",
    "Please set an alarm for | six thirty tomorrow morning.",
    "I need to buy some | eggs and flour for the cake.",
    "Can you remind me to | water the plants this evening?",
    "How many people live in | the city of Tokyo?",
    "My favourite kind of music is | jazz from the fifties.",
    "Tell me a story about a | dragon who lives in the mountains.",
    "What is the difference between | a frog and a toad?",
    "I was wondering if you could | help me plan a trip to Italy.",
    "Turn down the volume of the | music in the living room.",
    "Do you know what time the | supermarket closes on Sunday?",
    "Send a message to my | brother saying I will be late.",
    "Can you explain why the | ocean is salty but rivers are not?",
    "I am looking for a good | recipe for vegetable soup.",
    "Is a blue whale bigger than | an elephant or a dinosaur?",
    "Please add a meeting with | the dentist to my calendar.",
    "What would happen if the | moon disappeared tomorrow?",
    "I think we should go | to the park after lunch.",
    "How do you say thank you | in Japanese and in Korean?",
    "Find me a cheap hotel | near the airport for tonight.",
    "Who painted the famous | picture of the starry night?",
    "Let me know when the | laundry is finished.",
    "The best thing about summer | is swimming in the lake.",
    "Could you play the song | that we listened to yesterday?",
    "I want to learn how to | play the guitar this year.",
    "What is the weather | going to be like this weekend?",
    "My daughter wants to know | why cats purr when they are happy.",
    "Book a taxi to the station | for eight o'clock tomorrow.",
    "I forgot the name of the | actor who played in that movie.",
    "Please remind me to buy a | birthday present for my mother.",
    "How long would it take to | drive from Paris to Berlin?",
    "We are planning a trip | to the mountains next month.",
)


@dataclass(frozen=True, eq=False)
class Utterance:
    """One evidence utterance: int16 16 kHz mono ``audio``; positions in samples of it."""

    name: str  # "joe/complete/07", "espeak/paused/12"
    voice: str
    kind: str  # "complete" or "paused"
    text: str  # the whole sentence
    before: str  # paused: the words before the pause; complete: the text
    audio: np.ndarray
    speech_start: int
    speech_end: int  # the sentence's last sound: the end of the turn
    pause_start: int | None  # paused: the first sample of the inserted silence
    pause_s: float  # paused: the inserted silence (0 for complete)

    @property
    def pause_end(self) -> int | None:
        return None if self.pause_start is None else self.pause_start + round(self.pause_s * RATE)


def split(sentence: str) -> tuple[str, str]:
    """("I would like to order a", "large pizza with mushrooms.") from a PAUSED entry."""
    before, after = (part.strip() for part in sentence.split("|"))
    return before, after


def voiced_span(audio: np.ndarray, frame: int = 160, below_peak_db: float = 40.0) -> tuple[int, int]:
    """First and last sample of the 10 ms frames within ``below_peak_db`` of the loudest one."""
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-below_peak_db / 20))
    return int(loud[0]) * frame, int(loud[-1] + 1) * frame


def quiet_cut(audio: np.ndarray, near: int, lo: int, hi: int, reach: int = 2400, window: int = 320,
              hop: int = 80) -> int:
    """The centre of the quietest ``window`` (20 ms) within ``reach`` samples (150 ms) of ``near``,
    kept within [lo, hi]."""
    x = audio.astype(np.float64)
    first, last = max(lo, near - reach) - window // 2, min(hi, near + reach) - window // 2
    starts = np.arange(max(0, first), min(len(x) - window, last) + 1, hop)
    energy = np.array([np.mean(x[s : s + window] ** 2) for s in starts])
    return int(starts[int(np.argmin(energy))] + window // 2)


def paused(speech: np.ndarray, sentence: str, pause_s: float) -> tuple[np.ndarray, int, float]:
    """``speech`` (the whole sentence, int16) with ``pause_s`` of silence inserted at the cut:
    (audio, cut sample, cut's share of the voiced span)."""
    before, after = split(sentence)
    start, end = voiced_span(speech)
    share = len(before) / (len(before) + 1 + len(after))
    span = end - start
    lo, hi = start + round(CUT_SHARE[0] * span), start + round(CUT_SHARE[1] * span)
    cut = quiet_cut(speech, start + round(share * span), lo, hi)
    cut_share = (cut - start) / (end - start)
    gap = np.zeros(round(pause_s * RATE), np.int16)
    return np.concatenate([speech[:cut], gap, speech[cut:]]), cut, cut_share


def _placed(speech: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    lead = np.zeros(round(LEAD_S * RATE), np.int16)
    trail = np.zeros(round(TRAIL_S * RATE), np.int16)
    audio = np.concatenate([lead, speech, trail]).astype(np.float64)
    audio += rng.normal(0.0, NOISE_RMS, len(audio))
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16), len(lead)


def synthesize(texts: Sequence[str], voice: str, voice_dir: Path) -> list[np.ndarray]:
    """Each text spoken whole by ``voice`` ("joe": Piper, variation off; "espeak": espeak-ng), int16 16 kHz."""
    if voice == "espeak":
        from voicechat.speech_samples import speech_16k

        return [speech_16k(t) for t in texts]
    if voice == "joe":
        from voicechat.tts.piper_engine import PiperEngine

        engine = PiperEngine("en_US-joe-medium", voice_dir, sample_rate=RATE, varied=False)
        return [np.frombuffer(b"".join(engine.stream(t)), dtype=np.int16).copy() for t in texts]
    raise ValueError(f"unknown evidence voice {voice!r} (one of {', '.join(VOICES)})")


def build(voice: str, voice_dir: Path, seed: int = SEED) -> list[Utterance]:
    """The evidence set for one voice, made now (deterministic for a given voice and seed)."""
    whole = [s.replace(" | ", " ") for s in PAUSED]
    spoken = synthesize([*COMPLETE, *whole], voice, voice_dir)
    rng = np.random.default_rng([seed, VOICES.index(voice)])
    items: list[Utterance] = []
    for i, (text, speech) in enumerate(zip(COMPLETE, spoken[: len(COMPLETE)], strict=True)):
        audio, lead = _placed(speech, rng)
        start, end = voiced_span(speech)
        items.append(Utterance(f"{voice}/complete/{i:02d}", voice, "complete", text, text, audio,
                               lead + start, lead + end, None, 0.0))
    for i, (sentence, speech) in enumerate(zip(PAUSED, spoken[len(COMPLETE):], strict=True)):
        pause_s = round(float(rng.uniform(*PAUSE_S)), 3)
        with_gap, cut, _ = paused(speech, sentence, pause_s)
        audio, lead = _placed(with_gap, rng)
        start, end = voiced_span(with_gap)
        items.append(Utterance(f"{voice}/paused/{i:02d}", voice, "paused", sentence.replace(" | ", " "),
                               split(sentence)[0], audio, lead + start, lead + end, lead + cut, pause_s))
    return items


def _key(voice: str, seed: int) -> str:
    facts = {"version": VERSION, "voice": voice, "seed": seed, "complete": COMPLETE, "paused": PAUSED,
             "lead": LEAD_S, "trail": TRAIL_S, "pause": PAUSE_S, "noise": NOISE_RMS}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def load(voice: str, root: Path | None = None, seed: int = SEED) -> list[Utterance]:
    """The evidence set for ``voice``, from ``root/data/turn_evidence`` when made before, else made and kept."""
    from voicechat.models.store import PROJECT_ROOT

    root = root or PROJECT_ROOT
    path = root / "data" / "turn_evidence" / f"{voice}-{_key(voice, seed)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            return [Utterance(**m, audio=stored[f"a{i}"]) for i, m in enumerate(meta)]
    items = build(voice, root / "models" / "piper", seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = [{k: v for k, v in asdict(u).items() if k != "audio"} for u in items]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=json.dumps(meta), **{f"a{i}": u.audio for i, u in enumerate(items)})
    tmp.replace(path)
    return items
