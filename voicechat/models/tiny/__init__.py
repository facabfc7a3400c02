"""Tiny random-weight models shipped with the package, for tests, self-tests and benchmarks.

They exercise the real engines (llama.cpp, faster-whisper/CTranslate2) without downloading weights;
their output is gibberish by design.

- ``assets/tiny-llama.gguf``: llama architecture, d 64, 2 layers, 4 heads, F32, SentencePiece vocabulary
  with byte fallback and common English words, ChatML chat template (``<|im_end|>`` is end of turn).
  Made by :func:`voicechat.models.tiny.gguf_maker.write_random_gguf` with its defaults; regeneration is
  byte-identical (tests check it)::

      python -m voicechat.models.tiny.gguf_maker voicechat/models/tiny/assets/tiny-llama.gguf

  Larger ones for benchmarks, written in about a second, e.g.
  ``python -m voicechat.models.tiny.gguf_maker big.gguf --dim 768 --layers 8 --heads 12 --dtype f16``.

- ``assets/tiny-whisper/``: a CTranslate2 Whisper (d 64, 1 encoder + 1 decoder layer, 80 mel bins, int8
  weights, about 6.4 MB) with Whisper v2's multilingual token layout, so special tokens have their real ids
  (``<|endoftext|>`` 50257, ``<|startoftranscript|>`` 50258, ``<|en|>`` 50259, ``<|transcribe|>`` 50359,
  ``<|notimestamps|>`` 50363, ``<|0.00|>`` 50364); text tokens are whole words (English words, then
  pseudo-words). Its weights are random but nudged so transcripts are a few English words that end, and
  language detection says "en" (see ``make_whisper``). Made by ``voicechat.models.tiny.make_whisper``
  (byte-identical on regeneration here), which needs torch, transformers, ctranslate2 and tokenizers.
  transformers must not go into the project's venv (it imports torchaudio, which fails next to torch 2.13
  here), so use a separate one::

      python3 -m venv /tmp/whisper-maker
      /tmp/whisper-maker/bin/pip install torch transformers ctranslate2 tokenizers numpy
      PYTHONPATH=. /tmp/whisper-maker/bin/python -m voicechat.models.tiny.make_whisper \\
          voicechat/models/tiny/assets/tiny-whisper
"""

from __future__ import annotations

from pathlib import Path

TINY_DIR = Path(__file__).resolve().parent / "assets"


def tiny_gguf_path() -> Path:
    """The shipped tiny llama GGUF (779 kB)."""
    return _existing(TINY_DIR / "tiny-llama.gguf")


def tiny_whisper_path() -> Path:
    """The shipped tiny CTranslate2 Whisper model directory (for faster_whisper.WhisperModel)."""
    return _existing(TINY_DIR / "tiny-whisper")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the package was installed without its data files; reinstall voicechat "
            "(setup.cfg package_data lists models/tiny/assets) or regenerate it as voicechat.models.tiny describes"
        )
    return path
