"""How much of a barge-in's latency is audio the voice activity detector needs before it can say "speech".

A barge-in is measured from the client frame holding the first voiced sample of
the interrupting speech. Silero judges whole 512-sample chunks and says "speech"
only once a chunk's probability reaches the onset threshold, often a chunk or
two into the word; the client sends 20 ms frames. So even a server that took no
time at all would flush the reply only once the frame completing that chunk
arrived. This replays the benchmark's own utterances through Silero as the
listening front end does (quiet chunks skipped, a fresh state at the first loud
one) at each of the five ways a 20 ms frame grid falls on the 32 ms chunk grid,
and gives that floor per utterance: the latency figure the framework adds to is
``barge_in - floor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from voicechat.bench.load_client import FRAME, Utterance
from voicechat.local.room import rms
from voicechat.stt.silero_batch import CHUNK, SileroBatch, SileroStream, probe

PHASES = 5  # 20 ms frames start at 5 distinct offsets within the 32 ms chunk grid (320 k mod 512)


def onset_floor_ms(speech: Sequence[Utterance], onset_probability: float, quiet_dbfs: float, probes: bool = True,
                   vad: SileroBatch | None = None) -> list[float]:
    """Per utterance and grid phase: ms from the send of the frame holding the first voiced sample to the send
    of the frame on which the front end first calls speech: the one completing the first chunk Silero calls
    speech or, with ``probes`` (``vad.probe_onsets``), a loud frame whose probe (of the 32 ms ending with it)
    does (utterances it never calls speech are left out)."""
    vad = vad or SileroBatch()
    quiet_rms = 10 ** (quiet_dbfs / 20)
    floors = []
    for said in speech:
        for phase in range(PHASES):
            lead = 2 * PHASES * CHUNK + phase * FRAME  # silence before the speech, as an open microphone sends
            audio = np.concatenate([np.zeros(lead, np.float32), said.pcm.astype(np.float32) / 32768.0])
            detected = _first_onset(vad, audio, onset_probability, quiet_rms, probes)
            if detected is not None:
                onset_frame = (lead + said.voiced_start) // FRAME
                floors.append((math.ceil(detected / FRAME) - (onset_frame + 1)) * 1000.0 * FRAME / 16000)
    return floors


def _first_onset(vad: SileroBatch, audio: np.ndarray, onset: float, quiet_rms: float, probes: bool) -> int | None:
    """The end of the frame on which the front end's rules first call speech, as samples into ``audio``."""
    stream, last, analysed = SileroStream(), np.zeros(0, np.float32), 0
    for end in range(FRAME, len(audio) + 1, FRAME):
        while analysed + CHUNK <= end:
            chunk, analysed = audio[analysed : analysed + CHUNK], analysed + CHUNK
            last = chunk
            if rms(chunk) < quiet_rms:
                stream.skip(chunk)
                continue
            if stream.skipped:
                stream.state[:] = 0.0
                stream.skipped = False
            if float(vad.run([stream], chunk[None, :])[0]) >= onset:
                return end
        if probes and rms(audio[end - FRAME : end]) >= quiet_rms:
            look = probe(stream, last, audio[analysed:end])
            if look is not None and float(vad.run([look[0]], look[1][None, :])[0]) >= onset:
                return end
    return None
