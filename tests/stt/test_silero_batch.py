"""Silero over many sessions in one call gives each session what Silero gives it alone."""

import numpy as np
import pytest
from support.helpers import SENTENCES, utterance

from voicechat.stt.silero_batch import CHUNK, SileroBatch, SileroStream, probe


@pytest.fixture(scope="module")
def silero() -> SileroBatch:
    return SileroBatch()


def chunks_of(audio: np.ndarray, n: int) -> np.ndarray:
    x = np.zeros(n * CHUNK, np.float32)
    usable = min(len(audio), n * CHUNK)
    x[:usable] = audio[:usable].astype(np.float32) / 32768.0
    return x.reshape(n, CHUNK)


def test_batched_verdicts_equal_each_session_alone(silero):
    """Four sessions with different speech, chunk for chunk: one batch vs one call per session."""
    n = 90  # ~2.9 s
    audios = [chunks_of(utterance(s, before_s=0.1 * i), n) for i, s in enumerate(SENTENCES[:4])]
    alone = []
    for audio in audios:
        stream = SileroStream()
        alone.append([float(silero.run([stream], audio[k : k + 1])[0]) for k in range(n)])
    streams = [SileroStream() for _ in audios]
    together = [silero.run(streams, np.stack([a[k] for a in audios])) for k in range(n)]
    together_by_session = np.array(together).T
    np.testing.assert_allclose(together_by_session, np.array(alone), atol=1e-5)
    assert max(max(p) for p in alone) > 0.9 and min(min(p) for p in alone) < 0.1  # speech and silence both seen


def test_a_session_joining_later_starts_from_a_fresh_state(silero):
    audio = chunks_of(utterance(SENTENCES[0]), 40)
    veteran, newcomer, reference = SileroStream(), SileroStream(), SileroStream()
    for k in range(20):
        silero.run([veteran], audio[k : k + 1])
    mixed = [silero.run([veteran, newcomer], np.stack([audio[k], audio[k - 20]]))[1] for k in range(20, 40)]
    alone = [silero.run([reference], audio[k : k + 1])[0] for k in range(0, 20)]
    np.testing.assert_allclose(mixed, alone, atol=1e-5)


def test_chunks_of_the_wrong_shape_are_refused(silero):
    with pytest.raises(ValueError, match=r"\[2, 512\]"):
        silero.run([SileroStream(), SileroStream()], np.zeros((1, CHUNK), np.float32))


def test_a_probe_looks_at_the_newest_32_ms_and_changes_nothing(silero):
    audio = chunks_of(utterance(SENTENCES[1], before_s=0.3), 40)
    stream = SileroStream()
    for k in range(20):
        silero.run([stream], audio[k : k + 1])
    state, context = stream.state.copy(), stream.context.copy()
    waiting = audio[20][:320]  # a 20 ms frame of the next chunk
    look, window = probe(stream, audio[19], waiting)
    np.testing.assert_array_equal(window, np.concatenate([audio[19][320:], waiting]))
    np.testing.assert_array_equal(look.context, audio[19][320 - 64 : 320])
    silero.run([look], window[None, :])
    np.testing.assert_array_equal(stream.state, state)  # the stream's own state and context are untouched
    np.testing.assert_array_equal(stream.context, context)
    stream.skip(audio[19])
    assert not probe(stream, audio[19], waiting)[0].state.any()  # after a quiet chunk: a fresh state, as its chunk
    assert probe(stream, audio[19], waiting[:100]) is None  # under 10 ms of new audio: nothing to look at
    assert probe(stream, np.zeros(0, np.float32), waiting) is None  # no chunk before it
