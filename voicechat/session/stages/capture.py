"""Capture stage: client/microphone frames -> 16 kHz PCM16 -> the recognizer.

Frames arrive at the device's or browser's own rate (44.1/48 kHz are common);
they are resampled here with a stateful filter, one per input rate, because
RealtimeSTT's ``feed_audio`` expects 16 kHz and does not resample bytes.

Unlike the other stages this one has no thread of its own: it runs in the
thread that receives the audio (the server's event loop, the sound card's
reader). All it does is resample and hand the audio to the recognizer, whose
own bounded queue (``Recognizer.backlog``) is what stands between the network
and the voice activity detection. A thread here cost a wake-up and a GIL
hand-over for every 20 ms frame of every session: 1,500 a second at 30
sessions; without them `bench load` had a lower overhead p95 in 5 of 6
back-to-back pairs at 30 sessions (docs/benchmarks.md).
"""

from __future__ import annotations

import threading

from voicechat.audio import AudioFrame, StreamResampler
from voicechat.engines.protocols import Recognizer

STT_RATE = 16000


class CaptureStage:
    """Called once per frame; never blocks for long. Safe from any thread (one frame at a time)."""

    stage = "capture"

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self.muted = False
        self._resampler: StreamResampler | None = None
        self._lock = threading.Lock()  # the resampler's state: frames from two threads must not interleave

    def handle(self, frame: AudioFrame) -> None:
        if self.muted:
            return
        with self._lock:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, STT_RATE)
            pcm = self._resampler.process(frame.pcm)
            if pcm:
                self.recognizer.feed(pcm)
