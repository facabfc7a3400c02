"""Helpers the TTS engine adapters share: chunk sizes and PCM re-chunking.

Engines produce audio in whatever pieces their library gives (a whole sentence
for Piper and Kokoro); the pool streams fixed-length chunks, so that abort can
take effect within one chunk and clients get an even flow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from voicechat.audio import StreamResampler, float_to_pcm16


class StopFlag(Protocol):
    """Anything with ``is_set()``: a ``threading.Event`` or a pool job's cancel flag."""

    def is_set(self) -> bool: ...


def chunk_bytes(sample_rate: int, chunk_ms: int) -> int:
    """Bytes in one PCM16 mono chunk of ``chunk_ms`` (at least one sample)."""
    return 2 * max(1, sample_rate * chunk_ms // 1000)


def rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a PCM16 byte stream into ``size``-byte chunks (the last may be shorter)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def pcm16_stream_to_chunks(pieces: Iterable[tuple[bytes, int]], out_rate: int, size: int) -> Iterator[bytes]:
    """PCM16 mono pieces ``(data, rate)`` -> ``size``-byte chunks at ``out_rate``.

    One stateful resampler per stream (created on the first piece), flushed at
    the end, so audio whose rate differs from the pool's rate is converted
    without clicks between pieces. A piece may end inside a sample: the odd
    byte is carried to the next piece.
    """

    def pcm() -> Iterator[bytes]:
        resampler: StreamResampler | None = None
        carry = b""
        for data, rate in pieces:
            if resampler is None:
                resampler = StreamResampler(rate, out_rate)
            elif rate != resampler.in_rate:
                raise ValueError(f"sample rate changed within one stream: {resampler.in_rate} -> {rate}")
            data = carry + data
            cut = len(data) & ~1
            data, carry = data[:cut], data[cut:]
            yield resampler.process(data)
        if resampler is not None:
            yield resampler.process(b"", last=True)

    return rechunk(pcm(), size)


def float_stream_to_pcm16(
    pieces: Iterable[tuple[np.ndarray, int]], out_rate: int, size: int
) -> Iterator[bytes]:
    """Float audio pieces ``(samples, rate)`` -> PCM16 chunks at ``out_rate`` (see ``pcm16_stream_to_chunks``)."""
    as_pcm = (
        (float_to_pcm16(np.asarray(samples, dtype=np.float32).reshape(-1)).tobytes(), rate)
        for samples, rate in pieces
    )
    return pcm16_stream_to_chunks(as_pcm, out_rate, size)


class StreamStop:
    """A running stream's stop condition: its own flag (the engine's ``stop()``) or the caller's cancel."""

    def __init__(self, cancel: StopFlag | None = None) -> None:
        self.flag = threading.Event()
        self._cancel = cancel

    def is_set(self) -> bool:
        return self.flag.is_set() or (self._cancel is not None and self._cancel.is_set())


class RunningStreams:
    """Stop conditions of an engine's running streams, so ``stop()`` can end them from another thread.

    Each stream gets its own flag (never one engine-wide flag that a later
    stream would have to reset, which races with a stop arriving meanwhile).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: set[StreamStop] = set()

    def begin(self, cancel: StopFlag | None = None) -> StreamStop:
        stop = StreamStop(cancel)
        with self._lock:
            self._streams.add(stop)
        return stop

    def end(self, stop: StreamStop) -> None:
        with self._lock:
            self._streams.discard(stop)

    def stop_all(self) -> None:
        with self._lock:
            for stop in self._streams:
                stop.flag.set()

    def float_to_pcm16(
        self,
        pieces: Callable[[StreamStop], Iterable[tuple[np.ndarray, int]]],
        out_rate: int,
        size: int,
        cancel: StopFlag | None,
    ) -> Iterator[bytes]:
        """Run one stream of float pieces (from ``pieces(stop)``) as PCM16 chunks, ending once stopped."""
        stop = self.begin(cancel)
        try:
            for out in float_stream_to_pcm16(pieces(stop), out_rate, size):
                if stop.is_set():
                    return
                yield out
        finally:
            self.end(stop)
