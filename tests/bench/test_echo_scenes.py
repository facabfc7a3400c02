"""bench echo's simulated conversations (pure): the room grid, the user's level over the echo, onsets, ERLE."""

from __future__ import annotations

import numpy as np
import pytest
from support.helpers import SENTENCES, speech

from voicechat.bench.echo_scenes import RATE, active_rms, build_scenes, erle_db, room_grid, voiced_onset
from voicechat.local.room import echo_of


def test_the_grid_covers_every_rt60_and_delay_with_gains_in_turn():
    rooms = room_grid([0.3, 0.6], [20, 150], [-6, 0], -65)
    assert [(r.rt60_s, r.delay_ms, r.gain_db) for r in rooms] == [
        (0.3, 20, -6), (0.3, 150, 0), (0.6, 20, -6), (0.6, 150, 0)]


def test_double_talk_puts_the_user_at_the_asked_level_over_the_echo():
    rooms = room_grid([0.45], [60], [-3], -65)
    reply, user = speech(SENTENCES[0]), speech(SENTENCES[3])
    scene = build_scenes(rooms, [reply], [("espeak", SENTENCES[3], user)], replies_per_room=1, levels_db=[6.0])[0]
    far_only, double = scene.segments
    assert far_only.user is None and double.text == SENTENCES[3] and double.level_db == 6
    echo = echo_of(double.far, scene.room)
    assert 20 * np.log10(active_rms(double.user) / active_rms(echo)) == pytest.approx(6, abs=0.5)
    assert double.onset == RATE + voiced_onset(user)


def test_erle_compares_the_echo_with_what_is_left():
    echo = np.random.default_rng(0).standard_normal(16000) * 3000
    assert erle_db(echo, echo / 100) == pytest.approx(40, abs=0.1)
    assert erle_db(np.zeros(16000), echo) is None  # no echo: nothing to measure
