"""Scripted speech-to-text: deterministic, fast, and honest about its input.

``ScriptedTranscriber`` derives its text from the audio it is given: it knows a
set of reference utterances (text + audio) and answers with the text of the one
whose energy envelope matches the audio; audio that matches nothing gets a
stable fingerprint of its samples. Tests can therefore prove *by content* that
a session's transcript (and the reply built on it) came from its own audio.

``EnergyRecognizer`` is a scripted per-session endpointer (RMS threshold) for
tests that must not depend on Silero/RealtimeSTT timing.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from voicechat.audio import as_float32, frame_rms
from voicechat.engines.protocols import RecognizerCallbacks, SpeechInput, TranscriptionModel
from voicechat.engines.scripted.base import FaultPlan, wait_or_abort

HOP = 160  # 10 ms envelope frames at 16 kHz
PARTIAL_MATCH_FRAMES = 100  # partials are matched on their first second of speech


def envelope(audio: np.ndarray) -> np.ndarray:
    """RMS energy per 10 ms frame, silence trimmed from both ends."""
    env = frame_rms(audio, HOP)
    if len(env) == 0:
        return np.zeros(0, dtype=np.float32)
    voiced = np.flatnonzero(env > 0.05 * env.max()) if env.max() > 0 else np.zeros(0, int)
    if len(voiced) == 0:
        return np.zeros(0, dtype=np.float32)
    return env[voiced[0] : voiced[-1] + 1]


def prefix_similarity(query: np.ndarray, ref: np.ndarray, max_lag: int = 8) -> float:
    """Best Pearson correlation of ``query`` with a prefix of ``ref`` (small lags)."""
    return float(ReferenceSet({"": ref}).scores(query, max_lag)[0])


class ReferenceSet:
    """Reference envelopes padded into one matrix, so a query is scored against all of them at once.

    The benchmark's zero-delay STT must cost next to nothing: matching one
    utterance against 20 references used to take ~340 ``np.corrcoef`` calls
    (10+ ms, and partials ask every 0.3 s per speaking session); here it is a
    few array operations per lag.
    """

    def __init__(self, refs: Mapping[str, np.ndarray], max_lag: int = 8) -> None:
        self.texts = list(refs)
        self.lengths = np.array([len(r) for r in refs.values()], dtype=np.int64)
        width = int(self.lengths.max(initial=0)) + 2 * max_lag
        self._pad = max_lag
        self._matrix = np.zeros((len(refs), width), dtype=np.float64)
        for row, ref in enumerate(refs.values()):
            self._matrix[row, max_lag : max_lag + len(ref)] = ref

    def scores(self, query: np.ndarray, max_lag: int = 8) -> np.ndarray:
        """Per reference: the best correlation over lags where at least 80 % of the query overlaps (else -1).

        All lags at once: the reference windows for every lag are one strided view (zeros outside a
        reference, so they drop out of its sums), and the query's sums over each overlap come from
        its prefix sums.
        """
        best = np.full(len(self.texts), -1.0)
        m = len(query)
        if m < 10 or not self.texts:
            return best
        q = np.asarray(query, dtype=np.float64)
        lags = np.arange(-max_lag, max_lag + 1)
        matrix = self._matrix
        needed = self._pad + max_lag + m
        if matrix.shape[1] < needed:
            matrix = np.pad(matrix, ((0, 0), (0, needed - matrix.shape[1])))
        windows = np.lib.stride_tricks.sliding_window_view(matrix, m, axis=1)[:, self._pad + lags, :]
        # Overlap of query positions [start, end) with each reference at each lag.
        start = np.maximum(0, -lags)[None, :]
        end = np.clip(self.lengths[:, None] - lags[None, :], start, m)
        k = (end - start).astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(q)])
        csum2 = np.concatenate([[0.0], np.cumsum(q * q)])
        s_q, s_qq = csum[end] - csum[start], csum2[end] - csum2[start]
        s_r = windows.sum(axis=2)
        s_rr = np.einsum("nli,nli->nl", windows, windows)
        s_qr = windows @ q
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = s_qr - s_q * s_r / k
            var = (s_qq - s_q * s_q / k) * (s_rr - s_r * s_r / k)
            corr = np.where(var > 1e-18, cov / np.sqrt(np.maximum(var, 1e-300)), -1.0)
        ok = (k >= 0.8 * m) & (k >= 10)
        return np.maximum(best, np.where(ok, corr, -1.0).max(axis=1))


class ScriptedTranscriber:
    """Template-matching transcriber (a ``BatchTranscriber``) with configurable delay and faults."""

    def __init__(
        self,
        references: Mapping[str, np.ndarray] | None = None,
        delay_s: float = 0.0,
        faults: FaultPlan | None = None,
        threshold: float = 0.8,
    ) -> None:
        self._refs: dict[str, np.ndarray] = {}
        self._set = ReferenceSet({})
        self.delay_s = delay_s
        self.faults = faults or FaultPlan()
        self.threshold = threshold
        self._closed = threading.Event()
        self.final_calls: list[str] = []  # session ids, for tests
        for text, audio in (references or {}).items():
            self.add_reference(text, audio)

    def add_reference(self, text: str, audio: np.ndarray) -> None:
        """``audio``: 16 kHz mono, int16 or float."""
        self._refs[text] = envelope(as_float32(audio))
        self._set = ReferenceSet(self._refs)

    def transcribe(self, audio: np.ndarray, *, session_id: str, final: bool, language: str | None = None) -> str:
        self.faults.on_call("stt", session_id)
        wait_or_abort(self.delay_s, self._closed)
        audio = as_float32(audio)
        if final:
            self.final_calls.append(session_id)
        env = envelope(audio)
        best_text, best_score = None, -1.0
        # A partial is recognised from its first second: scoring the whole utterance so far, every
        # 0.3 s for every speaking session, made this test double a visible cost in `bench load`.
        scores = self._set.scores(env if final else env[:PARTIAL_MATCH_FRAMES])
        if len(scores):
            best = int(np.argmax(scores))
            best_text, best_score = self._set.texts[best], float(scores[best])
        if best_text is None or best_score < self.threshold:
            if len(env) == 0 or not final:
                return ""  # nothing heard yet, or too little of it to know: a partial says nothing
            digest = hashlib.sha1(np.round(audio * 32767).astype(np.int16).tobytes()).hexdigest()[:8]
            return f"unrecognised speech {digest}"
        words = best_text.split()
        covered = min(1.0, len(env) / max(1, len(self._refs[best_text])))
        if covered >= 0.9:
            return best_text
        return " ".join(words[: max(1, int(len(words) * covered))])

    def transcribe_batch(self, inputs: Sequence[SpeechInput]) -> list[str]:
        return [self.transcribe(i.audio, session_id=i.session_id, final=i.final, language=i.language) for i in inputs]

    def close(self) -> None:
        self._closed.set()


class EnergyRecognizer:
    """Scripted endpointer: speech is RMS above ``threshold`` (int16 units).

    Utterance audio (with ``pre_roll_s`` before onset) goes to the shared
    transcriber when ``post_silence_s`` of silence ends it.
    """

    def __init__(
        self,
        session_id: str,
        model: TranscriptionModel,
        callbacks: RecognizerCallbacks,
        threshold: float = 300.0,
        post_silence_s: float = 0.5,
        pre_roll_s: float = 0.3,
        sample_rate: int = 16000,
    ) -> None:
        self.session_id = session_id
        self._model = model
        self._cb = callbacks
        self._threshold = threshold
        self._silence_limit = int(post_silence_s * sample_rate)
        self._pre_roll = int(pre_roll_s * sample_rate)
        self._history = np.zeros(0, dtype=np.int16)
        self._utterance: list[np.ndarray] | None = None
        self._silence = 0
        self._finals: queue.Queue[np.ndarray | None] = queue.Queue()

    def feed(self, pcm16: bytes) -> None:
        x = np.frombuffer(pcm16, dtype=np.int16)
        loud = len(x) > 0 and float(np.sqrt(np.mean(x.astype(np.float32) ** 2))) > self._threshold
        if self._utterance is None:
            self._history = np.concatenate([self._history, x])[-self._pre_roll :]
            if loud:
                self._utterance = [self._history.copy()]
                self._silence = 0
                self._cb.on_speech_start()
            return
        self._utterance.append(x)
        self._silence = 0 if loud else self._silence + len(x)
        if self._silence >= self._silence_limit:
            audio = np.concatenate(self._utterance)
            self._utterance, self._history = None, np.zeros(0, dtype=np.int16)
            self._cb.on_speech_end(None)
            self._finals.put(audio)

    def next_final(self) -> str | None:
        audio = self._finals.get()
        if audio is None:
            return None
        return self._model.transcribe(as_float32(audio), session_id=self.session_id, final=True)

    def close(self) -> None:
        self._finals.put(None)
