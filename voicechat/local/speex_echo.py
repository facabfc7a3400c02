"""Speex's linear echo canceller (libspeexdsp's MDF filter) over ctypes, with the far end delayed to the echo.

A linear adaptive filter subtracts its estimate of the echo and leaves everything
else as it was: a user talking over the reply passes at full level, with what the
filter could not model (the room's late tail, the loudspeaker's distortion) left
beside it. That residual is what the echo gate (``echo_gate.py``) then judges
against the far end, which is the pairing ``audio.echo = "speex"`` runs. WebRTC
AEC3 (``echo_cancel.py``) suppresses the residual too, and with it the first
syllables of a user who talks over the reply.

The library is Debian's ``libspeexdsp1`` (apt; also a dependency of PulseAudio
and PipeWire, so most desktops have it), called through five of its functions:
``speex_echo_state_init``, ``speex_echo_ctl`` (the sampling rate),
``speex_echo_cancellation``, ``speex_echo_state_reset`` (a new delay) and
``speex_echo_state_destroy``. Not thread-safe:
one instance per microphone, called from the capture thread.

The filter spans ``filter_ms`` of the echo path, the delay before the echo
(device buffers plus the air) included. The first delay hint (the device's
latency, ``stream_delay_ms``, set like AEC3's) holds the far end back by that
delay less ``lead_ms``, so the span goes to the room's tail. A later estimate
moves it only where the echo has left the span's first three quarters (or
starts before it): a new delay restarts the filter, and in `bench echo` restarts
on every refined estimate interrupted the assistant seven times in 48 replies,
against once with none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import numpy as np

SET_SAMPLING_RATE = 24  # SPEEX_ECHO_SET_SAMPLING_RATE (speex/speex_echo.h)
INSTALL_HINT = "apt install libspeexdsp1 (macOS: brew install speexdsp)"
# The echo path the filter models: the delay and the room's tail. In `bench echo`'s rooms (delays up to 150 ms,
# RT60 up to 0.6 s) 384 ms kept every room over 25 dB with 1.7 % of a core; 256 ms let the 150 ms rooms through.
FILTER_MS = 384.0


@cache
def _library() -> ctypes.CDLL:
    """libspeexdsp, loaded once; OSError (with the install command) when it is missing."""
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise OSError(f"libspeexdsp not found ({exc}): {INSTALL_HINT}") from exc
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_ctl.restype = ctypes.c_int
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_cancellation.restype = None
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
    lib.speex_echo_state_reset.restype = None
    lib.speex_echo_state_reset.argtypes = [ctypes.c_void_p]
    lib.speex_echo_state_destroy.restype = None
    lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    return lib


class SpeexEcho:
    """One Speex MDF canceller over ``frame``-sample frames of int16 at ``rate``.

    ``process(near, far)`` takes one microphone frame and the far frame played at the same moment and returns
    the microphone less the filter's echo estimate. ``stream_delay_ms`` is where the echo starts after the far
    end (a hint; see the module docstring)."""

    def __init__(self, rate: int, frame: int, *, filter_ms: float = FILTER_MS, lead_ms: float = 30.0,
                 delay_ms: float = 0.0) -> None:
        self._lib = _library()
        self.rate, self.frame = rate, frame
        self._state = self._lib.speex_echo_state_init(frame, int(rate * filter_ms / 1000))
        if not self._state:
            raise OSError("speex_echo_state_init failed")
        value = ctypes.c_int(rate)
        self._lib.speex_echo_ctl(self._state, SET_SAMPLING_RATE, ctypes.byref(value))
        self._lead = int(rate * lead_ms / 1000)
        self._reach = int(rate * filter_ms / 1000) * 3 // 4  # a later echo start than this needs a new delay
        self._delay = 0  # samples the far end is held back
        self._line = np.zeros(0, np.int16)  # the far end, delayed: its first ``frame`` samples go with ``near``
        self._out = np.zeros(frame, np.int16)
        self.frames = 0
        self.restarts = 0  # new delays after the first frame (each restarts the filter)
        self.stream_delay_ms = delay_ms

    @property
    def stream_delay_ms(self) -> int:
        return round((self._delay + self._lead) * 1000 / self.rate)

    @stream_delay_ms.setter
    def stream_delay_ms(self, delay_ms: float) -> None:
        delay = max(0, int(delay_ms * self.rate / 1000) - self._lead)
        shift = delay - self._delay
        if self.frames and 0 <= shift <= self._reach:
            return  # the filter already spans the echo: a restart would cost more than it gains
        self._delay = delay
        if shift == 0:
            return
        # The line holds the last ``delay`` samples of the far end: silence fills a longer wait, the oldest
        # samples go from a shorter one. The filter learnt the old alignment, so it starts again.
        self._line = np.concatenate([np.zeros(shift, np.int16), self._line]) if shift > 0 else self._line[-shift:]
        if self.frames:
            self._lib.speex_echo_state_reset(self._state)
            self.restarts += 1

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        if len(near) != self.frame or len(far) != self.frame:
            raise ValueError(f"SpeexEcho takes frames of {self.frame} samples, got {len(near)} and {len(far)}")
        self._line = np.concatenate([self._line, far.astype(np.int16, copy=False)])
        played, self._line = np.ascontiguousarray(self._line[: self.frame]), self._line[self.frame:]
        mic = np.ascontiguousarray(near, dtype=np.int16)
        self._lib.speex_echo_cancellation(self._state, mic.ctypes.data, played.ctypes.data, self._out.ctypes.data)
        self.frames += 1
        return self._out.copy()

    def close(self) -> None:
        if getattr(self, "_state", None):
            self._lib.speex_echo_state_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


def load_speex(rate: int, delay_ms: int) -> SpeexEcho:
    """A Speex canceller for ``EchoCanceller`` (10 ms frames); OSError when libspeexdsp is missing."""
    return SpeexEcho(rate, rate // 100, delay_ms=delay_ms)
