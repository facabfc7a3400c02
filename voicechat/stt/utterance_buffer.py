"""The audio of the utterance in progress, for partial transcripts (pure logic).

Partials are driven by the audio itself rather than by a polling thread: every
``interval`` of new speech, ``add`` hands back the utterance so far (with the
pre-roll from just before the detected onset, since voice activity detection
reports speech a little after it starts). Audio the caller marks ``silent`` (the
pause that may end the turn) is kept but asks for nothing: its transcript would
be the last one's, and the final is about to take the shared model. Not
thread-safe: the recognizer holds a lock around it.
"""

from __future__ import annotations

import numpy as np

from voicechat.audio import pcm16_to_float

BYTES_PER_SAMPLE = 2


class UtteranceBuffer:
    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        pre_roll_s: float = 0.5,
        interval_s: float = 0.3,
        min_s: float = 0.3,
        max_s: float = 30.0,
    ) -> None:
        self._pre_roll = int(pre_roll_s * sample_rate) * BYTES_PER_SAMPLE
        self._interval = max(1, int(interval_s * sample_rate)) * BYTES_PER_SAMPLE
        self._min = int(min_s * sample_rate) * BYTES_PER_SAMPLE
        self._max = int(max_s * sample_rate) * BYTES_PER_SAMPLE
        self._audio = bytearray()
        self._since_request = 0
        self.active = False
        self.utterance = 0  # bumped at every start, so late results of an old utterance can be told apart

    def start(self) -> None:
        """Speech began: keep the pre-roll and collect from here."""
        self.active = True
        self.utterance += 1
        self._since_request = len(self._audio)

    def stop(self) -> None:
        """Speech ended: forget the utterance (the final transcript has its own copy)."""
        self.active = False
        self._audio.clear()
        self._since_request = 0

    def add(self, pcm16: bytes, silent: bool = False) -> np.ndarray | None:
        """Append audio; returns the utterance so far (float32) when a partial is due (never on ``silent`` audio)."""
        self._audio += pcm16
        if not self.active:
            if len(self._audio) > self._pre_roll:
                del self._audio[: len(self._audio) - self._pre_roll]
            return None
        if len(self._audio) > self._max:
            del self._audio[: len(self._audio) - self._max]
        if silent:
            return None
        self._since_request += len(pcm16)
        if self._since_request < self._interval or len(self._audio) < self._min:
            return None
        self._since_request = 0
        usable = len(self._audio) - len(self._audio) % BYTES_PER_SAMPLE
        return pcm16_to_float(bytes(self._audio[:usable]))
