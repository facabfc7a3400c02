"""PlaybackBuffer: the speaker's queue, shared by the sounddevice and WAV-file endpoints.

``pull(out)`` copies into a preallocated array only, so it is safe in an audio
callback; ``flush()`` drops everything at once (barge-in); a ring of the last
seconds played is the echo gate's reference, and ``since`` hands the echo
canceller every sample of the speaker's timeline exactly once.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class PlaybackBuffer:
    """Queued playback plus the record of what was played: shared by the device and file endpoints.

    ``pull`` runs in the audio callback, so it only copies into preallocated arrays
    under a short lock; ``play`` and ``flush`` come from other threads.
    """

    def __init__(self, rate: int, history_s: float = 2.0) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._offset = 0  # samples of _chunks[0] already played
        self._queued = 0
        self._history = np.zeros(max(1, int(rate * history_s)), np.int16)
        self._history_pos = 0
        self.timeline = 0  # samples the speaker has played, silence included (the clock of ``since``)
        self.played_samples = 0  # queued audio played (silence is not counted)
        self.underruns = 0  # pulls that ran out of queued audio part-way (a gap in the middle of speech)

    def put(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError("PCM16 data must have an even number of bytes")
        chunk = np.frombuffer(bytes(pcm), np.int16)
        if len(chunk):
            with self._lock:
                self._chunks.append(chunk)
                self._queued += len(chunk)

    @property
    def queued_samples(self) -> int:
        return self._queued

    def flush(self) -> int:
        with self._lock:
            dropped = self._queued
            self._chunks.clear()
            self._offset = self._queued = 0
        return dropped

    def pull(self, out: np.ndarray) -> int:
        """Fill ``out`` with queued audio, then silence; returns how many samples were real audio."""
        n = len(out)
        filled = 0
        with self._lock:
            while filled < n and self._chunks:
                chunk = self._chunks[0]
                take = min(n - filled, len(chunk) - self._offset)
                out[filled:filled + take] = chunk[self._offset:self._offset + take]
                filled += take
                self._offset += take
                if self._offset == len(chunk):
                    self._chunks.popleft()
                    self._offset = 0
            self._queued -= filled
            if 0 < filled < n:
                self.underruns += 1
            out[filled:] = 0
            self.played_samples += filled
            self.timeline += n
            self._remember(out)
        return filled

    def _remember(self, block: np.ndarray) -> None:
        size = len(self._history)
        block = block[-size:]
        end = self._history_pos + len(block)
        if end <= size:
            self._history[self._history_pos:end] = block
        else:
            first = size - self._history_pos
            self._history[self._history_pos:] = block[:first]
            self._history[:end - size] = block[first:]
        self._history_pos = end % size

    def recent(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` of the speaker's timeline (silence included), oldest first."""
        with self._lock:
            return self._last(int(seconds * self.rate))

    def _last(self, n: int) -> np.ndarray:
        """The newest ``n`` samples of the history (at most all of it); the caller holds the lock."""
        size = len(self._history)
        n = min(size, max(0, n))
        start = (self._history_pos - n) % size
        if start + n <= size:
            return self._history[start:start + n].copy()
        return np.concatenate([self._history[start:], self._history[:self._history_pos]])

    def since(self, position: int) -> tuple[np.ndarray, int]:
        """The speaker's timeline from ``position`` (a value ``since`` returned, or 0) to now, and the new position.

        At most the history's length comes back: a caller that fell further behind gets the newest part."""
        with self._lock:
            return self._last(self.timeline - position), self.timeline
