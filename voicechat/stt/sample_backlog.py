"""The audio one session's listener has not analysed yet: written by the receiving thread, taken in Silero
chunks by the front end's thread, every write dated so a sample of the stream can be dated on the wall clock."""

from __future__ import annotations

import threading
from collections import deque

from voicechat.stt.silero_batch import CHUNK

CHUNK_BYTES = CHUNK * 2
ARRIVALS_KEPT = 512  # feed() calls remembered for dating samples: 10 s of 20 ms frames


class SampleBacklog:
    """Audio waiting for the front end: bounded, the oldest dropped first and counted.

    Reads like the pipeline's queues for ``queue_stats`` (``name``, ``len`` in
    chunks, ``evicted`` chunks, ``dropped_stale``).
    """

    name = "capture"
    dropped_stale = 0

    def __init__(self, max_s: float, sample_rate: int = 16000) -> None:
        self._max = max(CHUNK_BYTES, round(max_s * sample_rate) * 2)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.written = 0  # samples written so far
        self.dropped = 0  # samples dropped so far
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=ARRIVALS_KEPT)  # (samples written, monotonic)

    def write(self, pcm16: bytes, now: float) -> bool:
        """Append ``pcm16``; True when it completed a whole chunk waiting to be taken."""
        with self._lock:
            before = len(self._buf) // CHUNK_BYTES
            self._buf += pcm16
            self.written += len(pcm16) // 2
            self._arrivals.append((self.written, now))
            over = len(self._buf) - self._max
            if over > 0:
                over += -over % CHUNK_BYTES
                del self._buf[:over]
                self.dropped += over // 2
            return len(self._buf) // CHUNK_BYTES > before

    def take(self) -> bytes | None:
        with self._lock:
            if len(self._buf) < CHUNK_BYTES:
                return None
            chunk = bytes(self._buf[:CHUNK_BYTES])
            del self._buf[:CHUNK_BYTES]
            return chunk

    def clear(self) -> None:
        with self._lock:
            self._buf.clear()
            self._arrivals.clear()

    def peek(self) -> bytes:
        """A copy of what is waiting, if less than a chunk (a stream that is behind gives b"")."""
        with self._lock:
            return bytes(self._buf) if len(self._buf) < CHUNK_BYTES else b""

    def waiting(self) -> int:
        """Samples written and not yet taken."""
        with self._lock:
            return len(self._buf) // 2

    def arrived_at(self, sample: int) -> float | None:
        """When the sample at ``sample`` of the analysed stream arrived (None: too long ago)."""
        with self._lock:
            written_index = sample + self.dropped
            for end, when in self._arrivals:
                if end > written_index:
                    return when
        return None

    @property
    def evicted(self) -> int:
        return self.dropped // CHUNK

    def __len__(self) -> int:
        return self.waiting() // CHUNK
