"""Where the echo is: the delay from the speaker's signal to its echo in the microphone (pure numpy).

The canceller (WebRTC AEC3) finds the delay itself but does not say what it
found; this estimate is for the canceller's starting hint, the log and the
screen. Generalised cross-correlation with phase transform (GCC-PHAT) between
the last ``window_s`` of the far signal (what the speaker played, as the
canceller was given it) and the microphone: whitening the spectrum makes the
peak sharp for speech, whatever its colour and the room's. A peak counts only
where it stands ``min_peak_ratio`` times above the correlation's RMS, and only
windows in which the speaker actually played something are searched. An
estimate is reported only when the window before found the same delay (within
``agree_ms``): a user talking while the reply fades out can raise a confident
false peak in one window (495 ms against a true 20 ms in `bench echo`), and
Speex's filter restarts on a new delay.

Units: samples at ``rate`` Hz in, milliseconds out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DelayEstimate:
    delay_ms: float
    peak_ratio: float  # the peak over the RMS of the correlation: higher = surer


def gcc_phat_delay(far: np.ndarray, near: np.ndarray, rate: int, max_delay_ms: float) -> DelayEstimate:
    """The lag (0..max_delay_ms) at which ``near`` best matches a delayed ``far`` (equal-length signals)."""
    n = len(far) + len(near)
    nfft = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(near.astype(np.float64), nfft) * np.conj(np.fft.rfft(far.astype(np.float64), nfft))
    spectrum /= np.maximum(np.abs(spectrum), 1e-12)
    correlation = np.fft.irfft(spectrum, nfft)
    max_lag = min(len(near) - 1, int(max_delay_ms / 1000 * rate))
    lags = np.abs(correlation[: max_lag + 1])
    peak = int(np.argmax(lags))
    spread = float(np.sqrt(np.mean(correlation * correlation))) or 1e-12
    return DelayEstimate(delay_ms=peak * 1000.0 / rate, peak_ratio=float(lags[peak]) / spread)


class EchoDelayTracker:
    """Keeps the last ``window_s`` of far and near and re-estimates the delay every ``interval_s`` of audio."""

    def __init__(self, rate: int = 16000, window_s: float = 1.5, interval_s: float = 1.0,
                 max_delay_ms: float = 500.0, min_far_dbfs: float = -45.0, min_peak_ratio: float = 8.0,
                 agree_ms: float = 10.0) -> None:
        self.rate, self.max_delay_ms, self.min_peak_ratio, self.agree_ms = rate, max_delay_ms, min_peak_ratio, agree_ms
        self._size = int(window_s * rate)
        self._interval = int(interval_s * rate)
        self._far = np.zeros(self._size, np.float32)
        self._near = np.zeros(self._size, np.float32)
        self._since = 0
        self._min_far = (10.0 ** (min_far_dbfs / 20.0) * 32768.0) ** 2
        self.estimate: DelayEstimate | None = None  # the last confident one that its predecessor confirmed
        self.estimates = 0
        self._previous: DelayEstimate | None = None  # the last confident window's, confirmed or not

    def add(self, far: np.ndarray, near: np.ndarray) -> DelayEstimate | None:
        """One frame of each (same length); returns a new estimate when a confident window agrees with the
        confident window before it."""
        n = len(near)
        self._far = np.concatenate([self._far[n:], far.astype(np.float32)])
        self._near = np.concatenate([self._near[n:], near.astype(np.float32)])
        self._since += n
        if self._since < self._interval:
            return None
        self._since = 0
        if float(np.mean(self._far.astype(np.float64) ** 2)) < self._min_far:
            return None  # the speaker was (nearly) silent: nothing to find
        found = gcc_phat_delay(self._far, self._near, self.rate, self.max_delay_ms)
        if found.peak_ratio < self.min_peak_ratio:
            return None
        previous, self._previous = self._previous, found
        if previous is None or abs(previous.delay_ms - found.delay_ms) > self.agree_ms:
            return None  # one window's peak: wait for the next window to find it too
        self.estimate = found
        self.estimates += 1
        return found
