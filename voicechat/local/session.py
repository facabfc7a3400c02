"""The terminal's microphone and speaker as one more session.

Capture arrives from the audio device's thread at its native rate; it is
resampled statefully to 16 kHz, measured for the level meter, passed through
the echo stage (speakers without headphones: the echo canceller, whose far end
is what the speaker actually played since the last block, resampled to 16 kHz
as a stream; or the echo gate), and fed to the session. The
session's events are pumped by one thread: audio to the speaker, a flush on
barge-in, everything to the view model. The speaker's own count of samples
played is what the session hears as playback reports, so "what was heard" is
exact, not estimated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import soxr

from voicechat.audio import AudioFrame, StreamResampler, rms_dbfs
from voicechat.core.events import AudioChunk, FlushPlayback, ReplyDone
from voicechat.local.audio_io import AudioIO
from voicechat.local.echo_cancel import EchoStage
from voicechat.local.tui.model import TuiModel
from voicechat.session.bounded_queue import QueueClosed
from voicechat.session.manager import Session, SessionManager
from voicechat.session.pipeline import PipelineOptions

log = logging.getLogger(__name__)

STT_RATE = 16000
REPORT_INTERVAL_S = 0.25


class _ReplyPosition:
    """Where the speaker is within the current reply, from the device's played-sample counter."""

    def __init__(self) -> None:
        self.generation = -1
        self.base = 0  # device's played_samples when the reply's first sample would play
        self.total: int | None = None  # known once ReplyDone arrives

    def begin(self, generation: int, played: int, queued: int) -> None:
        self.generation, self.base, self.total = generation, played + queued, None

    def heard(self, played: int) -> int:
        return max(0, played - self.base)


class LocalSession:
    """Owns the local session, its audio pump thread and the device's capture callback."""

    def __init__(
        self,
        manager: SessionManager,
        options: PipelineOptions,
        audio: AudioIO,
        model: TuiModel,
        on_change: Callable[[], None] = lambda: None,
        echo: EchoStage | None = None,
    ) -> None:
        """``echo``: what runs between the microphone and the recogniser (None: nothing, headphones)."""
        self.manager, self.audio, self.model, self.on_change = manager, audio, model, on_change
        self.options = replace(options, output_sample_rate=audio.output_rate, playback_reports=True)
        self.echo = echo
        self._far_position = 0  # where on the speaker's timeline the echo stage's far end has got to
        self._far_resampler = StreamResampler(audio.output_rate, STT_RATE)
        self.session: Session | None = None
        self._resampler = StreamResampler(audio.input_rate, STT_RATE) if audio.input_rate != STT_RATE else None
        self._reply = _ReplyPosition()
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None
        self.audio_frames_in = 0
        self.audio_seconds_out = 0.0

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Session:
        self.session = self.manager.create("local", options=self.options)
        self._pump = threading.Thread(target=self._pump_events, name="local-events", daemon=True)
        self._pump.start()
        self.audio.start(self._on_input)
        if self.echo is not None:
            self.echo.device_latency(self.audio.latency_ms)
            log.info("local microphone: echo %s%s", self.echo.mode,
                     f" (asked for {self.echo.requested})" if self.echo.mode != self.echo.requested else "")
        return self.session

    def stop(self) -> None:
        """Stop audio, close the session, join the pump (idempotent)."""
        self._stop.set()
        self.audio.close()
        if self.session is not None:
            self.manager.close(self.session.id, "local session closed")
        if self._pump is not None:
            self._pump.join(timeout=5)

    @property
    def pipeline(self):  # noqa: ANN201 - SpeechPipelineManager; property for the TUI's key actions
        assert self.session is not None
        return self.session.pipeline

    # -- capture (the device's thread) -------------------------------------------
    def _on_input(self, pcm: bytes) -> None:
        if self._stop.is_set() or self.session is None:
            return
        pcm16k = self._resampler.process(pcm) if self._resampler else pcm
        if not pcm16k:
            return
        self.model.set_level(rms_dbfs(pcm16k))
        if self.echo is not None:
            played, self._far_position = self.audio.playback_since(self._far_position)
            far = np.frombuffer(self._far_resampler.process(played.tobytes()), np.int16)
            pcm16k = self.echo.process(np.frombuffer(pcm16k, np.int16), far, self._reference).tobytes()
            if not pcm16k:
                return  # the canceller holds back less than a 10 ms frame until the next block
        self.audio_frames_in += 1
        self.session.pipeline.feed_audio(AudioFrame(pcm16k, STT_RATE, self.audio_frames_in))

    def _reference(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` the speaker played, at 16 kHz (the echo gate's reference)."""
        reference = self.audio.recent_playback(seconds)
        if len(reference) and self.audio.output_rate != STT_RATE:
            reference = soxr.resample(reference, self.audio.output_rate, STT_RATE).astype(np.int16)
        return reference

    # -- events (the pump thread) ---------------------------------------------------
    def _pump_events(self) -> None:
        assert self.session is not None
        pipeline = self.session.pipeline
        while not self._stop.is_set():
            try:
                event = pipeline.outbox.get(timeout=REPORT_INTERVAL_S)
            except TimeoutError:
                self._report_playback()
                continue
            except QueueClosed:
                return
            if isinstance(event, AudioChunk):
                if event.generation != self._reply.generation:
                    self._reply.begin(event.generation, self.audio.played_samples, self.audio.queued_samples)
                self.audio.play(event.pcm)
                self.audio_seconds_out += event.samples / event.sample_rate
            elif isinstance(event, FlushPlayback):
                self.audio.flush()
            elif isinstance(event, ReplyDone):
                if event.generation != self._reply.generation:  # a reply without audio
                    self._reply.begin(event.generation, self.audio.played_samples, self.audio.queued_samples)
                self._reply.total = event.total_samples
            try:
                self.model.apply(event)
                self._report_playback()
                self.on_change()
            except Exception:  # a view bug must not stop the audio
                log.exception("local session: handling %s failed", type(event).__name__)

    def _report_playback(self) -> None:
        reply = self._reply
        if reply.generation < 0 or self.session is None:
            return
        heard = reply.heard(self.audio.played_samples)
        finished = reply.total is not None and heard >= reply.total
        if reply.total is not None:
            heard = min(heard, reply.total)
        self.session.pipeline.report_playback(reply.generation, heard, finished)
        if finished:
            reply.generation = -1
