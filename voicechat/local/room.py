"""A simulated room between the speaker and the microphone, for tests and ``bench echo`` (pure numpy).

There is no sound hardware here, so the acoustic echo is made: what the speaker
played goes through a mild loudspeaker nonlinearity (soft clipping), a
synthetic room impulse response (exponentially decaying noise whose decay
gives the RT60, after a direct-path spike), a bulk delay (device buffers plus
the air) and a gain, and room noise is added at the microphone. ``EchoRoom``
does it as a stream, block by block, so the file backend can put the room
between its speaker and its microphone in real time.

Units: samples at ``rate`` Hz, times in seconds or milliseconds as named,
levels in dB; signals are float arrays scaled like int16 (full scale 32768).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FULL_SCALE = 32768.0


@dataclass(frozen=True)
class RoomConfig:
    """One room: RT60 in seconds, bulk delay in ms, echo gain in dB, noise level in dBFS (RMS)."""

    rt60_s: float = 0.45
    delay_ms: float = 60.0
    gain_db: float = -3.0
    noise_dbfs: float = -65.0
    drr_db: float = 0.0  # direct-to-reverberant ratio: direct path and early reflections over the diffuse tail
    clip_drive: float = 0.7  # soft clipping: tanh(drive * x) / drive on full-scale-normalised audio (0.7: peaks
    # at full scale 1.4 dB compressed, third harmonic about -28 dB there and -40 dB at half scale)
    seed: int = 0


def room_impulse_response(rt60_s: float, rate: int = 16000, seed: int = 0, drr_db: float = 0.0) -> np.ndarray:
    """A synthetic RIR normalised to unit energy: a direct path, early reflections, then a diffuse tail.

    The tail is Gaussian noise under exp(-6.9 t / RT60) (60 dB down at RT60); it lasts RT60 seconds and
    carries ``drr_db`` less energy than the direct path and the first reflections (0 dB: a desk, the speaker
    about a metre from the microphone, near the room's critical distance).
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(rt60_s * rate))
    t = np.arange(n) / rate
    envelope = np.exp(-6.9 * t / max(rt60_s, 1e-3))
    tail = rng.standard_normal(n) * envelope * np.minimum(1.0, t / 0.002)  # builds up over the first 2 ms
    tail[0] = 0.0
    early = np.zeros(n)
    early[0] = 1.0  # direct path
    for delay_ms, gain in ((3.1, 0.6), (5.7, -0.45), (8.9, 0.35), (13.3, -0.25)):  # first reflections
        k = int(delay_ms / 1000 * rate)
        if k < n:
            early[k] += gain
    tail *= np.sqrt(np.sum(early * early) / np.sum(tail * tail) / db_gain(2 * drr_db))
    rir = early + tail
    return rir / np.sqrt(np.sum(rir * rir))


def soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    """A loudspeaker's mild saturation: tanh on full-scale-normalised audio, unity gain for small signals."""
    if drive <= 0:
        return np.asarray(x, np.float64)
    return np.tanh(drive * np.asarray(x, np.float64) / FULL_SCALE) / drive * FULL_SCALE


def db_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x: np.ndarray) -> float:
    """RMS of a signal (same units as the signal); 0 for an empty one."""
    x = np.asarray(x, np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def room_noise(n: int, noise_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish room noise (white noise through a one-pole low-pass) at ``noise_dbfs`` RMS."""
    white = rng.standard_normal(n + 64)
    pink = np.empty_like(white)
    acc = 0.0
    for i, w in enumerate(white):  # short loops only: called per block or once per clip
        acc = 0.95 * acc + w
        pink[i] = acc
    pink = pink[64:]
    scale = db_gain(noise_dbfs) * FULL_SCALE / max(rms(pink), 1e-12)
    return pink * scale


def echo_of(far: np.ndarray, config: RoomConfig, rate: int = 16000) -> np.ndarray:
    """The whole echo of ``far`` at the microphone (no noise): clip, convolve, delay, gain; same length."""
    rir = room_impulse_response(config.rt60_s, rate, config.seed, config.drr_db)
    driven = soft_clip(far, config.clip_drive)
    wet = _fft_convolve_valid(np.concatenate([np.zeros(len(rir) - 1), driven]), rir)
    delay = int(round(config.delay_ms / 1000 * rate))
    out = np.zeros(len(far))
    if delay < len(far):
        out[delay:] = wet[: len(far) - delay]
    return out * db_gain(config.gain_db)


class EchoRoom:
    """The room as a stream: ``push`` what the speaker played, ``echo(n)`` the microphone's next n samples of
    echo plus noise. The far signal and the microphone run on one clock: after ``push`` of k samples, the next
    ``echo(k)`` covers the same k instants. The delay is a queue of far samples that starts ``delay_ms`` of
    silence full, so a push that comes a little late (less than the delay) changes nothing; only a far queue
    that runs dry is filled with silence."""

    def __init__(self, config: RoomConfig, rate: int = 16000) -> None:
        self.config, self.rate = config, rate
        self._rir = room_impulse_response(config.rt60_s, rate, config.seed, config.drr_db)
        self._gain = db_gain(config.gain_db)
        self._history = np.zeros(len(self._rir) - 1, np.float64)  # far that reached the room, oldest first
        self._pending = np.zeros(int(round(config.delay_ms / 1000 * rate)), np.float64)  # far still on its way
        self._rng = np.random.default_rng(config.seed + 1)
        self._noise_scale = db_gain(config.noise_dbfs) * FULL_SCALE
        self._pink = 0.0
        self.underruns = 0  # echo() calls that found too little far audio queued (silence filled in)

    def push(self, far: np.ndarray) -> None:
        """What the speaker played next (int16-scaled samples at ``rate``)."""
        self._pending = np.concatenate([self._pending, soft_clip(far, self.config.clip_drive)])

    def echo(self, n: int) -> np.ndarray:
        """The next ``n`` microphone samples of echo and noise (float64)."""
        take = self._pending[:n]
        self._pending = self._pending[n:]
        if len(take) < n:
            self.underruns += 1
            take = np.concatenate([take, np.zeros(n - len(take))])
        window = np.concatenate([self._history, take])  # len(rir) - 1 + n: the 'valid' part is n long
        self._history = window[n:] if n else window
        wet = _fft_convolve_valid(window, self._rir)
        return wet * self._gain + self._noise(n)

    def _noise(self, n: int) -> np.ndarray:
        white = self._rng.standard_normal(n)
        out = np.empty(n)
        acc = self._pink
        for i, w in enumerate(white):
            acc = 0.95 * acc + w
            out[i] = acc
        self._pink = acc
        return out * self._noise_scale / 3.2  # 3.2: RMS of this one-pole's output for unit white noise


def _fft_convolve_valid(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """np.convolve(x, h, 'valid') through the FFT (the RIR is thousands of taps long)."""
    size = len(x) + len(h) - 1
    nfft = 1 << (size - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:size]
    return full[len(h) - 1: len(x)]
