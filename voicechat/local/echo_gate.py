"""Energy-based echo gate: keep the assistant from hearing its own voice on open speakers.

Without headphones the microphone picks up the speaker, so the pipeline would
barge in on itself. The gate compares each microphone block with the playback
(the reference) and silences blocks that are no louder than the echo we expect;
a user speaking over the assistant is louder than the echo and still passes.

The echo path (delay and gain) is unknown and differs per room and device, so it
is learned: for every candidate delay d in [0, max_delay_ms] the gate tracks
gain[d] ~ mic_rms / ref_rms(d) with a minimum tracker (fast down, slow up). At
the true delay the ratio is the echo gain; at wrong delays it often collapses
(loud reference, quiet microphone), and the user's own voice only ever raises
it, which the slow upward step mostly ignores. The expected echo of a block is
max over d of gain[d] * ref_rms(d): a single gain times the loudest reference
in the window would over-predict (and so gate the user) whenever the delay is
short of the loud part. Pure numpy, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EchoGateConfig:
    max_delay_ms: int = 250  # longest speaker-to-microphone delay searched (device buffers + air)
    echo_margin_db: float = 6.0  # the microphone must beat the expected echo by this much to pass
    # keep passing this long after a block passed over the echo, so word tails are not chopped (a block that passed
    # only because nothing played holds nothing: held into the next sentence's echo, it interrupted the reply)
    hold_ms: int = 150
    # gate everything this long after the speaker starts again after a silence (0: off): behind a linear canceller
    # the residual is loudest at a sound's onset, where the filter lags; a user talking is heard a little later
    onset_guard_ms: int = 0
    floor_dbfs: float = -60.0  # reference below this is silence (always pass); microphone below it is nothing
    initial_gain: float = 1.0  # echo gain assumed before learning: loud, so the first blocks of echo are gated
    delay_step_ms: float = 2.5  # resolution of the delay search
    down_rate: float = 0.3  # min tracker: fraction of the (log) gap closed per block when the ratio is lower
    up_rate: float = 0.01  # ... and when it is higher (slow: double talk must not teach the gate the user's voice)
    max_gain: float = 4.0  # upper bound of a learned gain (an echo 12 dB louder than the playback is not an echo)


def _rms(x: np.ndarray) -> float:
    if len(x) == 0:
        return 0.0
    f = x.astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(f * f)))


class EchoGate:
    """Gate microphone blocks against the playback reference; see the module docstring."""

    def __init__(self, sample_rate: int = 16000, config: EchoGateConfig | None = None) -> None:
        self.sample_rate = sample_rate
        self.config = config or EchoGateConfig()
        c = self.config
        self._step = max(1, round(sample_rate * c.delay_step_ms / 1000))
        self._max_delay = round(sample_rate * c.max_delay_ms / 1000)
        self._delays = np.arange(0, self._max_delay + 1, self._step)
        self._log_gain = np.full(len(self._delays), np.log(c.initial_gain))
        self._floor = 10.0 ** (c.floor_dbfs / 20.0)
        self._margin = 10.0 ** (c.echo_margin_db / 20.0)
        self._hold_samples = round(sample_rate * c.hold_ms / 1000)
        self._hold_left = 0
        self._guard = round(sample_rate * c.onset_guard_ms / 1000)
        self._playing = 0  # samples since the speaker started after a silence
        self.gated_blocks = 0
        self.passed_blocks = 0
        self.last_expected_echo = 0.0  # linear RMS, for meters and debugging

    @property
    def echo_gain(self) -> float:
        """The learned gain at the most likely delay (the largest gain)."""
        return float(np.exp(self._log_gain.max()))

    @property
    def echo_delay_ms(self) -> float:
        return float(self._delays[int(np.argmax(self._log_gain))] * 1000.0 / self.sample_rate)

    def reset(self) -> None:
        """Forget the learned echo path (e.g. after the output device changed)."""
        self._log_gain[:] = np.log(self.config.initial_gain)
        self._hold_left = 0

    def _reference_rms(self, reference: np.ndarray, n: int) -> np.ndarray:
        """RMS of the n-sample reference window ending d samples before now, for each candidate d."""
        need = n + self._max_delay
        ref = np.asarray(reference)[-need:].astype(np.float64) / 32768.0
        if len(ref) < need:
            ref = np.concatenate([np.zeros(need - len(ref)), ref])
        energy = np.concatenate([[0.0], np.cumsum(ref * ref)])
        ends = need - self._delays
        return np.sqrt(np.maximum(energy[ends] - energy[ends - n], 0.0) / n)

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """``mic`` unchanged if it should reach the recogniser, else zeros of the same shape.

        ``reference`` is the playback of (about) the last max_delay_ms + one block, ending
        at the same moment as ``mic``, at this gate's sample rate.
        """
        n = len(mic)
        if n == 0:
            return mic
        ref_rms = self._reference_rms(reference, n)
        mic_rms = _rms(mic)
        active = ref_rms > self._floor
        if not active.any():  # nothing played: everything passes, but holds nothing over the next echo
            self.last_expected_echo = 0.0
            self._playing = 0
            return self._pass(mic, hold=False)
        self._playing += n
        gains = np.exp(self._log_gain)
        expected = float(np.max(gains * ref_rms))
        self.last_expected_echo = expected
        if mic_rms <= self._floor:  # a muted or silent microphone says nothing about the echo path
            return self._gate(mic)
        self._learn(mic_rms, ref_rms, active)
        if mic_rms > self._margin * expected and self._playing > self._guard:
            return self._pass(mic, hold=True)
        return self._gate(mic)

    def _gate(self, mic: np.ndarray) -> np.ndarray:
        if self._hold_left > 0:  # the tail of a word the user just said
            self._hold_left -= len(mic)
            self.passed_blocks += 1
            return mic
        self.gated_blocks += 1
        return np.zeros_like(mic)

    def _pass(self, mic: np.ndarray, hold: bool) -> np.ndarray:
        if hold:
            self._hold_left = self._hold_samples
        else:
            self._hold_left = max(0, self._hold_left - len(mic))
        self.passed_blocks += 1
        return mic

    def _learn(self, mic_rms: float, ref_rms: np.ndarray, active: np.ndarray) -> None:
        """Minimum-track log(mic/ref) at every delay whose reference is loud enough to mean something."""
        c = self.config
        ratio = np.log(max(mic_rms, 1e-9)) - np.log(np.maximum(ref_rms, 1e-12))
        gap = ratio - self._log_gain
        step = np.where(gap < 0, c.down_rate * gap, c.up_rate * np.minimum(gap, np.log(self._margin)))
        self._log_gain = np.where(active, self._log_gain + step, self._log_gain)
        np.minimum(self._log_gain, np.log(c.max_gain), out=self._log_gain)
