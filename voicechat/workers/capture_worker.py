"""Capture stage: client/microphone frames -> 16 kHz PCM16 -> the recognizer.

Frames arrive at the device's or browser's own rate (44.1/48 kHz are common);
they are resampled here with a stateful filter, one per input rate, because
RealtimeSTT's ``feed_audio`` expects 16 kHz and does not resample bytes.
"""

from __future__ import annotations

from voicechat.audio import AudioFrame, StreamResampler
from voicechat.bounded_queue import BoundedLRUQueue
from voicechat.engines.base import Recognizer
from voicechat.workers.base import QueueWorker, StageHost

STT_RATE = 16000


class CaptureWorker(QueueWorker[AudioFrame]):
    stage = "capture"

    def __init__(self, host: StageHost, inbox: BoundedLRUQueue[AudioFrame], recognizer: Recognizer) -> None:
        super().__init__(host, inbox)
        self.recognizer = recognizer
        self.muted = False
        self._resampler: StreamResampler | None = None

    def handle(self, frame: AudioFrame) -> None:
        if self.muted:
            return
        if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
            self._resampler = StreamResampler(frame.sample_rate, STT_RATE)
        pcm = self._resampler.process(frame.pcm)
        if pcm:
            self.recognizer.feed(pcm)
