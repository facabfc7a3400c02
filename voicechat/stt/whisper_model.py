"""faster-whisper as a ``BatchTranscriber``: one model, several sessions' utterances per decode.

faster-whisper's ``WhisperModel.transcribe`` handles one audio at a time (its
batched pipeline batches chunks of *one* long audio). A voice turn is short, so
utterances of different sessions are decoded together here instead: each is
turned into a log-mel window (with ``window = "utterance"`` only as long as it
needs, in whole 8 s: ``whisper_window.py``; with ``"full"`` Whisper's 30 s),
the windows of one length are stacked, encoded in one call and decoded with
one ``generate``. A batch of one takes the very same path, so batched and
one-by-one decoding give the same text. Audio longer than one window (rare in
conversation) goes through ``WhisperModel.transcribe``.

Each utterance's text ends at a token budget that follows its length
(``token_budget``; the batch decodes up to its longest one's, then each is cut
to its own): speech holds a few tokens a second, and a model that loops on a
sentence would otherwise go on to Whisper's 448 tokens, seconds of decoding
that the user waits for and that make a slow call look hung.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voicechat.engines.protocols import EngineError, SpeechInput
from voicechat.stt.whisper_window import Window, fit_window, trim_repetition, window_frames

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 30
# Whisper's own rule for "this was not speech": both unlikely text and a high no-speech probability.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
# Fast speech is about 4 words (5-6 tokens) a second: the budget leaves room for that and more.
TOKENS_BASE = 16
TOKENS_PER_S = 8.0


# What CTranslate2's CUDA path needs beyond the driver: its PyPI wheels (4.x) are built with CUDA 12 and
# load cuBLAS 12 at the first GPU operation, not when the model loads (cuDNN is not used for Whisper).
CUDA_LIBRARIES_HINT = (
    "CTranslate2 runs Whisper on the GPU with the CUDA 12 cuBLAS (libcublas.so.12 and libcublasLt.so.12; "
    "e.g. pip install nvidia-cublas-cu12 and put its lib folder on LD_LIBRARY_PATH)"
)


def gpu_compute_type(compute_type: str, device: str) -> str:
    """``stt.compute_type`` as loaded: "auto" means float16 where the model will run on CUDA.

    CTranslate2's own "auto" takes int8_float16 on a GPU. Measured on an H200 (docs/benchmarks.md,
    "GPU (one H200)"): float16 was as fast (22.6 against 22.2 ms per final), no less accurate, and kept
    batched texts equal to one-by-one texts, which int8_float16 did not. On a CPU "auto" stays int8."""
    if compute_type != "auto" or device == "cpu":
        return compute_type
    import ctranslate2

    try:
        if ctranslate2.get_cuda_device_count() > 0 and "float16" in ctranslate2.get_supported_compute_types("cuda"):
            return "float16"
    except (RuntimeError, ValueError):  # no usable CUDA: CTranslate2's "auto" decides
        pass
    return compute_type


def automatic_beam_size(device: str) -> int:
    """``stt.beam_size = 0``: 5 beams where Whisper runs on a GPU, greedy decoding on a CPU.

    On a CPU the final transcript is on every turn's critical path, and beams cost most there: with
    2 cores, greedy finals took 137 ms against 269 ms for 5 beams in the server (tiny.en), with
    104 against 106 of 160 utterances exact (docs/benchmarks.md, session 34). On a GPU 5 beams cost
    a few milliseconds."""
    return 5 if device == "cuda" else 1


# A second copy of the weights for the decoder costs memory: automatic only up to this size (tiny, base).
SMALL_MODEL_BYTES = 300 * 1024 * 1024


def automatic_decode_threads(setting: int, device: str, encoder_threads: int, model_bytes: int) -> int:
    """``stt.decode_threads``: the CPU threads of Whisper's decoder (the encoder keeps ``encoder_threads``).

    0 = automatic: 1 on a CPU for a model up to ``SMALL_MODEL_BYTES``. The encoder's large matrix products
    gain from threads, the decoder's token-by-token small ones lose to the threads' handovers: on 2 cores,
    greedy decoding took 60 against 75 ms for one utterance, 116 against 169 ms for four (tiny.en; base:
    114 against 131, 250 against 272). Elsewhere (a GPU, a larger model) the decoder shares the encoder's."""
    if setting:
        return setting
    if device == "cpu" and model_bytes <= SMALL_MODEL_BYTES:
        return 1
    return encoder_threads


def token_budget(seconds: float) -> int:
    """Most tokens decoded for ``seconds`` of audio (the longest of a batch)."""
    return TOKENS_BASE + int(TOKENS_PER_S * max(0.0, seconds) + 0.999)


class FasterWhisperModel:
    """Loads one CTranslate2 Whisper model and decodes batches of utterances."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        compute_type: str = "default",
        cpu_threads: int = 0,
        decode_threads: int = 0,
        num_workers: int = 1,
        beam_size: int = 0,
        partial_beam_size: int = 1,
        max_new_tokens: int | None = None,
        download_root: str | None = None,
        window: Window = "full",
    ) -> None:
        from faster_whisper import WhisperModel

        local = Path(model)
        if (local.is_absolute() or os.sep in model) and not (local / "model.bin").is_file():
            raise EngineError(f"Whisper model directory {model} has no model.bin (set stt.model)")

        def load(on: str, kind: str):  # faster_whisper.WhisperModel
            try:
                return WhisperModel(
                    model, device=on, compute_type=kind, cpu_threads=cpu_threads,
                    num_workers=num_workers, download_root=download_root, local_files_only=True,
                )
            except Exception as exc:  # faster-whisper raises several types for unusable models
                raise EngineError(f"could not load Whisper model {model!r} (stt.model): {exc}") from exc

        self.model = load(device, gpu_compute_type(compute_type, device))
        problem = self._gpu_problem()
        if problem is not None:
            if device != "auto":
                raise EngineError(
                    f"stt.device = {device}: CTranslate2 sees a GPU but cannot run Whisper on it ({problem}). "
                    f"{CUDA_LIBRARIES_HINT}; or set stt.device = cpu"
                )
            # "auto" picks CUDA whenever a driver answers; without the libraries every transcription
            # would fail, so the CPU it is, said once.
            log.warning("stt.device = auto: CTranslate2 sees a GPU but cannot run Whisper on it (%s); speech "
                        "recognition runs on the CPU. %s", problem, CUDA_LIBRARIES_HINT)
            self.model = load("cpu", compute_type)
        self.name = model
        self.decode_threads: int | None = None  # the decoder's own CPU threads (None: the encoder's)
        self._decoder = self._load_decoder(model, download_root, cpu_threads, decode_threads, num_workers)
        self.beam_size = beam_size or automatic_beam_size(str(self.model.model.device))
        self.partial_beam_size = partial_beam_size
        self.max_new_tokens = max_new_tokens
        self.window: Window = window
        self._window = WINDOW_S * SAMPLE_RATE
        self._tokenizers: dict[str | None, object] = {}
        self._tokenizer_lock = threading.Lock()

    def _load_decoder(self, model: str, download_root: str | None, cpu_threads: int, decode_threads: int,
                      num_workers: int):  # ctranslate2.models.Whisper | None
        """A second copy of the model for decoding with its own thread count (None: the model's own)."""
        import ctranslate2
        from faster_whisper.utils import download_model

        whisper = self.model.model
        if whisper.device != "cpu":
            return None
        try:
            path = Path(model) if Path(model).is_dir() else Path(download_model(model, local_files_only=True,
                                                                                cache_dir=download_root))
            encoder_threads = cpu_threads or min(4, os.cpu_count() or 1)  # CTranslate2's own default: up to 4
            size = (path / "model.bin").stat().st_size
            threads = automatic_decode_threads(decode_threads, "cpu", encoder_threads, size)
            if threads == encoder_threads:
                return None
            decoder = ctranslate2.models.Whisper(str(path), device="cpu", compute_type=whisper.compute_type,
                                                 intra_threads=threads, inter_threads=num_workers)
        except Exception as exc:  # only a speed-up: the model decodes on its own threads instead
            log.warning("Whisper's decoder could not get its own threads (stt.decode_threads): %s", exc)
            return None
        self.decode_threads = threads
        return decoder

    def _gpu_problem(self) -> str | None:
        """On CUDA, why the GPU cannot run the model (None: it can, or the model is on the CPU).

        CTranslate2 loads cuBLAS only at its first GPU operation, so a machine with an NVIDIA driver
        but not the CUDA 12 libraries loads the model fine and then fails every transcription. One
        encode of a short silent window (the utterance window's smallest) finds that out at load time;
        its first-call cost on a GPU is paid here instead of at the warm-up."""
        if getattr(self.model.model, "device", "cpu") != "cuda":
            return None
        try:
            self.model.encode(np.zeros((1, self.model.model.n_mels, 500), np.float32))
        except (RuntimeError, OSError) as exc:
            return str(exc) or type(exc).__name__
        return None

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        texts = [""] * len(inputs)
        short: list[int] = []
        for i, item in enumerate(inputs):
            if len(item.audio) == 0:
                continue
            if len(item.audio) > self._window:
                texts[i] = self._transcribe_long(item)
            else:
                short.append(i)
        # Finals and partials use different beam sizes; the scheduler never mixes them,
        # but group anyway so this stays correct for any caller.
        features = {i: self.model.feature_extractor(inputs[i].audio)[..., :-1] for i in short}
        for final in (True, False):
            for frames in sorted({window_frames(f.shape[-1], self.window) for f in features.values()}):
                group = [i for i in short if inputs[i].final == final
                         and window_frames(features[i].shape[-1], self.window) == frames]
                if group:
                    stacked = np.stack([fit_window(features[i], frames) for i in group])
                    for i, text in zip(group, self._decode([inputs[i] for i in group], stacked, final), strict=True):
                        texts[i] = text
        return texts

    # -- internals ---------------------------------------------------------------------------
    def _decode(self, inputs: Sequence[SpeechInput], features: np.ndarray, final: bool) -> list[str]:
        whisper = self.model
        encoded = whisper.encode(features)
        languages = self._languages(inputs, encoded)
        prompts = []
        for language in languages:
            prompts.append(whisper.get_prompt(self._tokenizer(language), [], without_timestamps=True))
        tokenizer = self._tokenizer(languages[0])
        budgets = [self.max_new_tokens or token_budget(len(item.audio) / SAMPLE_RATE) for item in inputs]
        results = (self._decoder or whisper.model).generate(
            encoded,
            prompts,
            beam_size=self.beam_size if final else self.partial_beam_size,
            max_length=min(whisper.max_length, len(prompts[0]) + max(budgets)),
            suppress_blank=True,
            suppress_tokens=_suppressed(tokenizer),
            return_scores=True,
            return_no_speech_prob=True,
        )
        texts = []
        for language, result, budget in zip(languages, results, budgets, strict=True):
            tokens = result.sequences_ids[0][:budget]
            if self.window != "full":
                tokens = trim_repetition(tokens)
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD:
                texts.append("")
                continue
            texts.append(self._tokenizer(language).decode(tokens).strip())  # drops special tokens
        return texts

    def _languages(self, inputs: Sequence[SpeechInput], encoded: object) -> list[str | None]:
        if not self.multilingual:
            return ["en"] * len(inputs)
        languages = [item.language for item in inputs]
        if all(languages):
            return languages
        detected = self.model.model.detect_language(encoded)
        return [lang or detected[i][0][0].strip("<|>") for i, lang in enumerate(languages)]

    def _tokenizer(self, language: str | None):  # faster_whisper.tokenizer.Tokenizer
        from faster_whisper.tokenizer import Tokenizer

        with self._tokenizer_lock:
            tokenizer = self._tokenizers.get(language)
            if tokenizer is None:
                tokenizer = Tokenizer(
                    self.model.hf_tokenizer, self.multilingual, task="transcribe",
                    language=language if self.multilingual else None,
                )
                self._tokenizers[language] = tokenizer
            return tokenizer

    def _transcribe_long(self, item: SpeechInput) -> str:
        segments, _info = self.model.transcribe(
            item.audio, language=item.language if self.multilingual else None,
            beam_size=self.beam_size if item.final else self.partial_beam_size,
            condition_on_previous_text=False, without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


def _suppressed(tokenizer) -> list[int]:
    """Non-speech symbols plus the task/control tokens, as faster-whisper suppresses by default."""
    from faster_whisper.transcribe import get_suppressed_tokens

    return list(get_suppressed_tokens(tokenizer, [-1]))
