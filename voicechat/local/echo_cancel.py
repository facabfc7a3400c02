"""Acoustic echo cancellation for the local microphone: Speex's linear filter then the gate, or WebRTC AEC3.

``audio.echo = "speex"`` (the default) runs libspeexdsp's linear canceller
(``speex_echo.py``) and the energy gate on what it leaves; ``"aec"`` runs WebRTC
AEC3 from the ``pywebrtc-audio`` wheel. Either canceller sits in the same framing:
the far end is what the speaker actually played (the playback buffer's
timeline, resampled to the capture rate by the caller), the near end the
microphone; both are cut into 10 ms frames and handed to AEC3 in lockstep, one
far frame per near frame, so the two streams keep one alignment as long as
nothing is dropped or made up. The speaker and the microphone deliver in their
own blocks, so whichever runs ahead waits in a short queue: a microphone frame
waits up to ``max_wait_ms`` for its far frame (then it is paired with silence),
and a far queue more than ``max_lead_ms`` ahead (clock drift, a stalled
capture thread) is cut back to one frame, because a far frame must never be
later than its echo (AEC3 searches forward only). The delay between the two streams (device buffers plus
the air) is AEC3's to find; the device's own latency is its starting hint and a
cross-correlation estimate (``echo_delay``) refines the hint and tells the log.

``EchoStage`` is what the local session runs on every capture block, in the
capture thread, whatever ``audio.echo`` says: a canceller, the energy gate
(after Speex's filter; the fallback when neither library loads; optionally
after AEC3), or nothing. A missing libspeexdsp falls back to AEC3, a missing
wheel to the gate, each said once in the log. No threads here; one instance per microphone (AEC3 is not thread-safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from voicechat.local.echo_delay import EchoDelayTracker
from voicechat.local.echo_gate import EchoGate, EchoGateConfig
from voicechat.local.speex_echo import load_speex

log = logging.getLogger(__name__)

EchoMode = Literal["aec", "speex", "gate", "off"]
FRAME_MS = 10
GATE_WINDOW_S = 0.3  # reference the gate sees: its longest delay plus a block
# After Speex's filter the user passes at full level and the echo is 15-30 dB down, so the gate can ask more of
# the microphone than on the raw echo (6 dB): in `bench echo` 12 dB took self-interruptions from 3 to 0 of 48
# replies and kept every double-talk onset within 150 ms (docs/benchmarks.md, "Echo").
SPEEX_GATE_MARGIN_DB = 12.0
SPEEX_ONSET_GUARD_MS = 120  # the filter lags a sentence's onset after a pause (the file backend's room)


def load_aec3(rate: int, delay_ms: int) -> Any:
    """A new AEC3 canceller; ImportError (or OSError) when the wheel is missing or broken."""
    from pywebrtc_audio import EchoCanceller as Aec3

    return Aec3(sample_rate=rate, num_channels=1, stream_delay_ms=max(0, int(delay_ms)))


class EchoCanceller:
    """A canceller (AEC3, or Speex's filter through ``factory``) over 10 ms frames with the far stream queued
    beside it; see the module docstring.

    ``far(x)`` and ``process(mic)`` take int16 samples at ``rate``; ``process`` returns the cleaned microphone
    for every whole frame that has its far frame (less than a frame, or frames waiting up to ``max_wait_ms`` for
    the speaker's side, are held back until a later call).
    """

    def __init__(self, rate: int = 16000, *, device_delay_ms: float = 0.0, max_lead_ms: float = 80.0,
                 max_wait_ms: float = 60.0,
                 factory: Callable[[int, int], Any] = load_aec3, track_delay: bool = True) -> None:
        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self._aec = factory(rate, round(device_delay_ms))
        self._far = np.zeros(0, np.int16)
        self._near = np.zeros(0, np.int16)
        self._max_lead = int(max_lead_ms / 1000 * rate)
        self._max_wait = int(max_wait_ms / 1000 * rate)
        self.delay = EchoDelayTracker(rate) if track_delay else None
        self.delay_ms = float(device_delay_ms)  # the current hint: device latency, then the estimate
        self.far_dropped = 0  # far samples cut because the queue ran ahead of the microphone
        self.far_missing = 0  # near frames that had no far audio (paired with silence)
        self.frames = 0
        self.busy_s = 0.0  # time spent in AEC3 and the delay estimate (CPU cost)

    def far(self, samples: np.ndarray) -> None:
        """What the speaker played since the last call (int16 at ``rate``)."""
        if len(samples):
            self._far = np.concatenate([self._far, samples.astype(np.int16, copy=False)])

    def process(self, mic: np.ndarray) -> np.ndarray:
        """The microphone with the echo removed, in whole 10 ms frames (int16)."""
        self._near = np.concatenate([self._near, mic.astype(np.int16, copy=False)])
        started = time.perf_counter()
        done: list[np.ndarray] = []
        while len(self._near) >= self.frame:
            far = self._next_far(waiting=len(self._near))
            if far is None:
                break  # the speaker's side of this frame is late: wait for the next call
            near, self._near = self._near[:self.frame], self._near[self.frame:]
            done.append(self._aec.process(near, far))
            if self.delay is not None and (found := self.delay.add(far, near)) is not None:
                self.hint(found.delay_ms)
        self.frames += len(done)
        self.busy_s += time.perf_counter() - started
        return np.concatenate(done) if done else np.zeros(0, np.int16)

    def _next_far(self, waiting: int) -> np.ndarray | None:
        """The far frame for the oldest waiting microphone frame; None to wait for it."""
        if len(self._far) - self.frame > self._max_lead:  # the speaker ran ahead: keep the newest frame
            cut = len(self._far) - self.frame
            self.far_dropped += cut
            self._far = self._far[cut:]
        if len(self._far) < self.frame:
            if waiting - self.frame < self._max_wait:
                return None
            self.far_missing += 1  # waited long enough: the speaker's side is gone, pair with silence
            frame = np.concatenate([self._far, np.zeros(self.frame - len(self._far), np.int16)])
            self._far = np.zeros(0, np.int16)
            return frame
        frame, self._far = self._far[:self.frame], self._far[self.frame:]
        return frame

    def hint(self, delay_ms: float) -> None:
        """Tell AEC3 where to start looking for the echo (ms): the device's latency, then the estimate."""
        if abs(delay_ms - self.delay_ms) >= FRAME_MS:
            log.debug("echo delay estimate %.0f ms (hint was %.0f ms)", delay_ms, self.delay_ms)
            self.delay_ms = delay_ms
            self._aec.stream_delay_ms = int(round(delay_ms))

    def cpu_share(self) -> float:
        """Share of one core spent cancelling: processing time over the audio's duration."""
        audio_s = self.frames * FRAME_MS / 1000
        return self.busy_s / audio_s if audio_s else 0.0


class EchoStage:
    """The local microphone's echo handling for one ``audio.echo`` mode (``mode`` says what actually runs).

    ``process(mic, far_new, reference)``: ``mic`` and ``far_new`` (what the speaker played since the last call)
    are int16 at ``rate``; ``reference`` is a callable giving the last seconds of playback at ``rate`` (the
    gate's window), called only when the gate runs. Returns what the recogniser should hear.
    """

    def __init__(self, mode: EchoMode, rate: int = 16000, *, device_delay_ms: float = 0.0, gate_after: bool = False,
                 factory: Callable[[int, int], Any] = load_aec3) -> None:
        self.requested = mode
        self.canceller: EchoCanceller | None = None
        self.gate: EchoGate | None = None
        if mode == "speex":
            try:
                self.canceller = EchoCanceller(rate, device_delay_ms=device_delay_ms, factory=load_speex)
            except OSError as e:
                log.warning("Speex echo cancellation unavailable (%s); falling back to aec", e)
                mode = "aec"
        if mode == "aec":
            try:
                self.canceller = EchoCanceller(rate, device_delay_ms=device_delay_ms, factory=factory)
            except (ImportError, OSError) as e:
                log.warning("echo cancellation unavailable (%s: pip install pywebrtc-audio); "
                            "falling back to the echo gate", e)
                mode = "gate"
        if mode == "speex":  # the residual of a linear filter: the gate judges it against the far end
            self.gate = EchoGate(rate, EchoGateConfig(echo_margin_db=SPEEX_GATE_MARGIN_DB,
                                                      onset_guard_ms=SPEEX_ONSET_GUARD_MS))
        elif mode == "gate" or (self.canceller is not None and gate_after):
            self.gate = EchoGate(rate)
        self.mode: EchoMode = mode

    def device_latency(self, latency_ms: float) -> None:
        """The sound device's input plus output latency, once its streams are open: the delay's first hint."""
        if self.canceller is not None and latency_ms > 0:
            self.canceller.hint(latency_ms)

    def process(self, mic: np.ndarray, far_new: np.ndarray, reference: Callable[[float], np.ndarray]) -> np.ndarray:
        out = mic
        if self.canceller is not None:
            self.canceller.far(far_new)
            out = self.canceller.process(mic)
        if self.gate is not None and len(out):
            out = self.gate.process(out, reference(GATE_WINDOW_S)).astype(np.int16)
        return out
