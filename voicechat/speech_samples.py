"""Real speech for tests, self-tests and benchmarks, made with espeak-ng (or a Piper voice).

espeak-ng needs no model weights (a Debian package), so every machine can make
the same utterances offline. Output is 16 kHz mono int16, resampled once with
soxr from espeak's 22.05 kHz. Where a Piper voice is present (the starter model
set's joe), ``piper_speech_16k`` speaks more naturally, which real Whisper
models transcribe far better than espeak-ng's voice.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soxr

from voicechat.audio import read_wav

# Distinct sentences, so a transcript or reply that crosses sessions is visible (tests, benchmarks).
SAMPLE_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please tell me a short story about the sea.",
    "What time does the next train leave for Berlin?",
    "My favourite colour is green because it reminds me of forests.",
    "Could you explain how a rainbow forms after the rain?",
    "I would like to book a table for two at seven tonight.",
    "How many moons does the planet Jupiter have?",
    "Remind me to call my sister tomorrow morning.",
    "Why is the sky blue during the day but red at sunset?",
    "Let us play a word game with animals and cities.",
    "Turn off the kitchen lights at eleven.",
    "Do penguins really live only in the southern half of the world?",
    "Read me the news headlines, please.",
    "Which mountain is the tallest in Africa, and how long does the climb take?",
    "Set a timer for twelve minutes.",
    "Translate good evening into Spanish and French.",
    "I think the orchestra played the second movement far too slowly last night.",
    "Add eggs, milk and bread to my shopping list.",
    "How far away is the moon?",
    "Tell me something surprising about octopuses and their three hearts.",
]

# Short questions for real models (`bench load --engines starter`): distinct per session, answerable in a
# sentence, words that Whisper tiny.en hears from Piper's joe voice.
SAMPLE_QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Why is the sky blue?",
    "What time does the bakery open tomorrow?",
    "Can you recommend a good book about space?",
    "How far away is the moon?",
    "What should I cook for dinner tonight?",
    "Who wrote the play Romeo and Juliet?",
    "How do bees make honey?",
    "What is the tallest mountain in the world?",
    "Can you tell me a joke about cats?",
    "How long does it take to boil an egg?",
    "What is the weather like in London in summer?",
    "Which planet is closest to the sun?",
    "How do I plant tomatoes in my garden?",
    "What is the best way to learn to swim?",
    "Why do leaves change color in autumn?",
    "How many days are there in a leap year?",
    "What language do people speak in Brazil?",
    "Can you give me a tip for sleeping better?",
    "What does a doctor do at a hospital?",
    "How fast can a horse run?",
    "Where do penguins live?",
    "What is your favorite kind of music?",
]


class SpeechSynthesisUnavailable(RuntimeError):
    pass


def espeak_wav(text: str, path: Path, voice: str = "en-us", words_per_minute: int = 175) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechSynthesisUnavailable(
            "espeak-ng is not installed: run `apt-get install espeak-ng` (python run.py does it as root)"
        )
    subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True)
    return path


def speech_16k(text: str, voice: str = "en-us", words_per_minute: int = 175) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz mono int16."""
    with tempfile.TemporaryDirectory() as tmp:
        x, rate = read_wav(espeak_wav(text, Path(tmp) / "speech.wav", voice, words_per_minute))
    return soxr.resample(x, rate, 16000).astype(np.int16)


def piper_speech_16k(
    texts: Sequence[str], voice: str = "en_US-joe-medium", voice_dir: str | Path = "models/piper"
) -> list[np.ndarray]:
    """Each text spoken by a Piper voice (``voice_dir/voice.onnx``, loaded once) as 16 kHz mono int16.

    Raises SpeechSynthesisUnavailable when the voice or piper-tts is missing."""
    from voicechat.engines.protocols import EngineError
    from voicechat.tts.piper_engine import PiperEngine

    try:
        engine = PiperEngine(voice, voice_dir, sample_rate=16000)
        return [np.frombuffer(b"".join(engine.stream(text)), dtype=np.int16).copy() for text in texts]
    except EngineError as exc:
        raise SpeechSynthesisUnavailable(str(exc)) from exc


def with_silence(audio: np.ndarray, before_s: float = 0.3, after_s: float = 1.0, rate: int = 16000) -> np.ndarray:
    """Pad an utterance with digital silence, as a microphone stream would have."""
    return np.concatenate(
        [np.zeros(int(before_s * rate), np.int16), audio, np.zeros(int(after_s * rate), np.int16)]
    )
