"""The simulated conversations of ``bench echo``: replies played into simulated rooms, users talking over some.

Every room of the grid (RT60 x delay, gain cycling over -6..0 dB) hears one
stream: ``replies_per_room`` replies with nobody talking (far-end only: echo
return loss and self-interruptions), then one reply per user voice with the
user starting ``user_onset_s`` into it at -6..+6 dB relative to the echo
(double talk). Replies are Piper joe's voice (the assistant's real TTS);
users are Piper joe and espeak-ng. All audio is 16 kHz, int16-scaled floats.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voicechat.local.room import RoomConfig, db_gain, echo_of, room_noise

RATE = 16000
FRAME = 160  # 10 ms


@dataclass(frozen=True)
class Segment:
    """One reply in one room: the reply (far), the user's speech over it (None: far-end only)."""

    far: np.ndarray
    user: np.ndarray | None = None  # the whole segment's length, already at its level
    onset: int = 0  # user's first voiced sample in the segment
    text: str = ""  # what the user said
    voice: str = ""  # "joe" or "espeak"
    level_db: float = 0.0  # user over echo

    def mic(self, far: np.ndarray, room: RoomConfig, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The microphone for ``far`` (possibly cut short by a barge-in): (mic, echo alone)."""
        echo = echo_of(far, room, RATE)
        mic = echo + noise + (self.user if self.user is not None else 0.0)
        return mic, echo


@dataclass(frozen=True)
class Scene:
    room: RoomConfig
    segments: tuple[Segment, ...]


def voiced_onset(x: np.ndarray, below_db: float = 20.0) -> int:
    """First sample of the first 10 ms frame within ``below_db`` of the utterance's loudest frame."""
    frames = len(x) // FRAME
    power = (x[: frames * FRAME].astype(np.float64).reshape(frames, FRAME) ** 2).mean(1)
    loud = np.flatnonzero(power >= power.max() * db_gain(-2 * below_db))
    return int(loud[0]) * FRAME if len(loud) else 0


def active_rms(x: np.ndarray) -> float:
    """RMS over the frames within 30 dB of the loudest (speech level without the pauses)."""
    frames = len(x) // FRAME
    power = (x[: frames * FRAME].astype(np.float64).reshape(frames, FRAME) ** 2).mean(1)
    keep = power >= power.max() * db_gain(-60)
    return float(np.sqrt(power[keep].mean())) if keep.any() else 0.0


def room_grid(rt60s: Sequence[float], delays_ms: Sequence[float], gains_db: Sequence[float],
              noise_dbfs: float) -> list[RoomConfig]:
    """Every RT60 x delay, the gain cycling through ``gains_db``."""
    rooms = []
    for i, (rt60, delay) in enumerate(itertools.product(rt60s, delays_ms)):
        rooms.append(RoomConfig(rt60_s=rt60, delay_ms=delay, gain_db=gains_db[i % len(gains_db)],
                                noise_dbfs=noise_dbfs, seed=i))
    return rooms


def build_scenes(rooms: Sequence[RoomConfig], replies: Sequence[np.ndarray],
                 users: Sequence[tuple[str, str, np.ndarray]], *, replies_per_room: int = 2,
                 levels_db: Sequence[float] = (-6.0, 0.0, 6.0), user_onset_s: float = 1.0,
                 tail_s: float = 1.5) -> list[Scene]:
    """Scenes for every room; ``users`` are (voice, text, audio). Replies, users and levels are taken in turn."""
    reply_cycle = itertools.cycle(replies)
    user_cycle = itertools.cycle(users)
    level_cycle = itertools.cycle(levels_db)
    voices = len({voice for voice, _, _ in users})
    scenes = []
    for room in rooms:
        segments = [_far_only(next(reply_cycle), tail_s) for _ in range(replies_per_room)]
        for _ in range(voices):
            voice, text, speech = next(user_cycle)
            segments.append(_double_talk(next(reply_cycle), room, voice, text, speech, next(level_cycle),
                                         user_onset_s, tail_s))
        scenes.append(Scene(room, tuple(segments)))
    return scenes


def _far_only(reply: np.ndarray, tail_s: float) -> Segment:
    return Segment(far=np.concatenate([reply.astype(np.float64), np.zeros(int(tail_s * RATE))]))


def _double_talk(reply: np.ndarray, room: RoomConfig, voice: str, text: str, speech: np.ndarray, level_db: float,
                 onset_s: float, tail_s: float) -> Segment:
    start = int(onset_s * RATE)
    length = max(len(reply), start + len(speech)) + int(tail_s * RATE)
    far = np.zeros(length)
    far[: len(reply)] = reply
    echo_level = active_rms(echo_of(far, room, RATE))
    user = np.zeros(length)
    user[start: start + len(speech)] = speech * (echo_level * db_gain(level_db) / max(active_rms(speech), 1e-9))
    return Segment(far=far, user=user, onset=start + voiced_onset(speech), text=text, voice=voice,
                   level_db=level_db)


def noise_for(segment: Segment, room: RoomConfig, index: int) -> np.ndarray:
    """The room's noise under one segment (reproducible per room and segment)."""
    return room_noise(len(segment.far), room.noise_dbfs, np.random.default_rng(room.seed * 1000 + index))


def erle_db(echo: np.ndarray, out: np.ndarray, active_above_dbfs: float = -50.0) -> float | None:
    """Echo return loss enhancement over the 10 ms frames where the echo is louder than ``active_above_dbfs``."""
    frames = min(len(echo), len(out)) // FRAME
    if frames == 0:
        return None
    e = (echo[: frames * FRAME].reshape(frames, FRAME) ** 2).mean(1)
    o = (out[: frames * FRAME].astype(np.float64).reshape(frames, FRAME) ** 2).mean(1)
    active = e > (db_gain(active_above_dbfs) * 32768.0) ** 2
    if not active.any():
        return None
    return float(10 * np.log10(e[active].sum() / max(o[active].sum(), 1e-3)))

