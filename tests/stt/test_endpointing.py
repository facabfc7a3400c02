"""End of speech on the audio's clock: pure logic, then through a real RealtimeSTT recorder."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support.helpers import FixedTextModel

from voicechat.speech_samples import speech_16k
from voicechat.stt.endpointing import SAMPLE_RATE, EndOfSpeech, LevelTracker

CHUNK = 512  # RealtimeSTT's chunk: what Silero sees


@pytest.fixture(scope="module")
def sentence() -> tuple[np.ndarray, int]:
    """An espeak-ng sentence and the index just past its last voiced sample (-40 dB, 10 ms frames)."""
    pcm = speech_16k("Set a timer for twelve minutes.")
    n = len(pcm) // 160
    level = np.sqrt(np.mean(pcm[: n * 160].astype(np.float32).reshape(n, 160) ** 2, axis=1))
    voiced = np.flatnonzero(level > 0.01 * level.max())
    return pcm, (int(voiced[-1]) + 1) * 160


def _silence_when_released(pcm: np.ndarray, release_chunks_after_end: int, voiced_end: int, eos: EndOfSpeech) -> float:
    """Feed chunk by chunk; a detector that releases ``n`` chunks after the sound stopped."""
    eos.speech_started()
    end_chunk = voiced_end // CHUNK
    silence = None
    for k, start in enumerate(range(0, len(pcm), CHUNK)):
        silence = eos.chunk(pcm[start : start + CHUNK], is_speech=k < end_chunk + release_chunks_after_end)
        if silence is not None:
            # the silence the recorder would compare with its setting after this chunk
            return silence - (len(pcm[: start + CHUNK]) - voiced_end) / SAMPLE_RATE
    raise AssertionError("never released")


def test_silence_is_dated_from_the_last_sound_whatever_the_release(sentence) -> None:
    pcm, voiced_end = sentence
    padded = np.concatenate([pcm[:voiced_end], np.zeros(SAMPLE_RATE, np.int16)])
    errors = [_silence_when_released(padded, n, voiced_end, EndOfSpeech()) for n in (2, 3, 4, 5)]
    # Released 64-160 ms after the sound: the silence counted is the true one within one 10 ms frame.
    assert all(abs(e) <= 0.01 for e in errors), errors


def test_silence_keeps_counting_in_samples() -> None:
    eos = EndOfSpeech()
    eos.speech_started(np.zeros(CHUNK * 4, np.int16))  # with the room before speech
    tone = (8000 * np.sin(np.arange(CHUNK * 10) * 0.2)).astype(np.int16)
    for start in range(0, len(tone), CHUNK):
        assert eos.chunk(tone[start : start + CHUNK], is_speech=True) is None
    first = eos.chunk(np.zeros(CHUNK, np.int16), is_speech=False)
    assert first == pytest.approx(CHUNK / SAMPLE_RATE)
    assert eos.chunk(np.zeros(CHUNK, np.int16), is_speech=False) == pytest.approx(2 * CHUNK / SAMPLE_RATE)
    assert eos.anchored_on_level
    # Speech again: the count starts over at the next silence.
    assert eos.chunk(tone[:CHUNK], is_speech=True) is None
    assert eos.chunk(np.zeros(CHUNK, np.int16), is_speech=False) == pytest.approx(CHUNK / SAMPLE_RATE)


def test_a_level_that_never_falls_uses_the_typical_release() -> None:
    eos = EndOfSpeech(fallback_release_s=0.1)
    eos.speech_started(np.zeros(CHUNK * 4, np.int16))
    loud = (6000 * np.sin(np.arange(CHUNK * 6) * 0.3)).astype(np.int16)
    for start in range(0, len(loud) - CHUNK, CHUNK):
        eos.chunk(loud[start : start + CHUNK], is_speech=True)
    # The detector says silence but the level says sound (a loud steady noise): fall back.
    assert eos.chunk(loud[-CHUNK:], is_speech=False) == pytest.approx(0.1)
    assert not eos.anchored_on_level


def test_a_soft_ending_the_level_missed_uses_the_typical_release() -> None:
    eos = EndOfSpeech(fallback_release_s=0.1, max_release_s=0.3)
    eos.speech_started(np.zeros(CHUNK * 4, np.int16))
    loud = (8000 * np.sin(np.arange(CHUNK * 4) * 0.3)).astype(np.int16)
    whisper = (40 * np.sin(np.arange(CHUNK * 16) * 0.3)).astype(np.int16)  # -40 dB under the peak
    audio = np.concatenate([loud, whisper])
    for start in range(0, len(audio), CHUNK):
        eos.chunk(audio[start : start + CHUNK], is_speech=True)
    assert eos.chunk(np.zeros(CHUNK, np.int16), is_speech=False) == pytest.approx(0.1)


def test_the_noise_floor_follows_the_room() -> None:
    rng = np.random.default_rng(0)
    level = LevelTracker()
    noise = rng.normal(0, 300, SAMPLE_RATE * 4).astype(np.int16)  # about -40 dBFS of hiss
    level.new_utterance()
    level.add(noise[: SAMPLE_RATE * 3])
    # Steady noise is not voice: the floor finds it.
    assert level.quiet_s == pytest.approx(3.0)
    assert not level.heard_voice
    speech = (noise[:4800] + 9000 * np.sin(np.arange(4800) * 0.25)).astype(np.int16)
    level.new_utterance()
    level.add(speech)
    assert level.floor == pytest.approx(300, rel=0.2)
    level.add(noise[SAMPLE_RATE * 3 : SAMPLE_RATE * 3 + 3200])
    assert level.heard_voice
    assert level.quiet_s == pytest.approx(0.2, abs=0.011)


def test_the_floor_starts_from_the_room_before_the_speech() -> None:
    rng = np.random.default_rng(1)
    hiss = rng.normal(0, 300, SAMPLE_RATE).astype(np.int16)
    level = LevelTracker()
    level.new_utterance(hiss)  # the pre-roll
    assert level.floor == pytest.approx(300, rel=0.2)
    level.add(hiss[:CHUNK])
    assert not level.heard_voice  # the room's hiss is not voice


def test_the_feeding_thread_sees_the_silence_grow_between_the_detectors_decisions() -> None:
    eos = EndOfSpeech()
    eos.speech_started(np.zeros(CHUNK * 4, np.int16))
    tone = (8000 * np.sin(np.arange(CHUNK * 4) * 0.2)).astype(np.int16)
    for start in range(0, len(tone), CHUNK):
        eos.chunk(tone[start : start + CHUNK], is_speech=True)
    assert eos.silence_at(eos.heard_samples + 320) == (None, eos.heard_samples)  # speech: no silence yet
    first = eos.chunk(np.zeros(CHUNK, np.int16), is_speech=False)
    decided_at = eos.heard_samples
    # Two 20 ms frames fed after the decision, not yet heard by the detector's thread:
    assert eos.silence_at(decided_at + 640) == (pytest.approx(first + 0.04), decided_at)
    # A short chunk is judged by the level: silent, the silence goes on; voiced, it is speech again.
    eos.hear(np.zeros(320, np.int16))
    assert eos.decide_without_model(320) == pytest.approx(first + 0.02)
    eos.hear(tone[:320])
    assert eos.decide_without_model(320) is None
    assert eos.silence_at(eos.heard_samples)[0] is None


def test_the_partial_chunk_is_flushed_once_per_decision_when_it_completes_the_silence() -> None:
    from voicechat.stt import realtimestt_vad
    class Recorder:
        is_recording = True
        buffer = bytearray(640)
        flushes = 0

        def flush_audio_input(self) -> bool:
            self.flushes += 1
            return True

    recorder, eos = Recorder(), EndOfSpeech()
    realtimestt_vad.attach(recorder, eos)
    eos.speech_started(np.zeros(CHUNK * 4, np.int16))
    eos.chunk((8000 * np.sin(np.arange(CHUNK) * 0.2)).astype(np.int16), is_speech=True)
    silence = eos.chunk(np.zeros(CHUNK * 8, np.int16), is_speech=False)  # 0.256 s of silence heard
    heard = eos.heard_samples
    assert not realtimestt_vad.flush_if_silence_complete(recorder, heard + 320, silence + 0.05)  # not yet
    assert realtimestt_vad.flush_if_silence_complete(recorder, heard + 960, silence + 0.05)
    assert not realtimestt_vad.flush_if_silence_complete(recorder, heard + 1280, silence + 0.05)  # same decision
    assert recorder.flushes == 1
    recorder.is_recording = False
    eos.chunk(np.zeros(CHUNK, np.int16), is_speech=False)
    assert not realtimestt_vad.flush_if_silence_complete(recorder, heard + 2000, silence + 0.05)  # not recording


@pytest.mark.parametrize("frontend", ["realtimestt", "batched"])
def test_a_real_recorder_ends_the_turn_the_setting_after_the_last_sound(sentence, frontend, request) -> None:
    """Audio fed in 20 ms frames at 2x real time: the turn ends 0.6 s of *audio* after the sound, on the
    frame that completes it.

    With the old wall-clock timer the end came when 0.6 s of wall time had passed,
    long after 0.6 s of audio had been fed at this pace; with the end on Silero's
    32 ms chunks it came up to a chunk later. The leads shift the sentence
    against both grains.
    """
    pcm, voiced_end = sentence
    run = request.getfixturevalue("make_realtimestt" if frontend == "realtimestt" else "make_batched")
    ends, onsets = [], []
    for lead_samples in range(8000, 8000 + 512, 64):  # every eighth of a chunk
        lead = np.zeros(lead_samples, np.int16)
        audio = np.concatenate([lead, pcm[:voiced_end], np.zeros(SAMPLE_RATE, np.int16)])
        fed = run(audio, post_speech_silence_s=0.6, pace=2.0)
        first_voiced = len(lead) + int(np.flatnonzero(np.abs(pcm) > 0.01 * np.abs(pcm).max())[0])
        onsets.append((fed.started_at - first_voiced) / 16)
        ends.append((fed.ended_at - len(lead) - voiced_end) / 16 - 600)
    assert all(0 <= ms <= 160 for ms in onsets), onsets  # Silero confirms within a few chunks of the first sound
    # The level's 10 ms frames straddle the test's, so a few ms either way; the spread is the grain:
    # one 20 ms frame (it was one 32 ms chunk: 2-30 ms on these leads).
    assert all(-10 <= ms <= 20 + 10 for ms in ends), ends
    assert max(ends) - min(ends) <= 20, ends


@pytest.fixture
def make_batched():
    """The batched front end's rules on real Silero verdicts, one 20 ms frame at a time (no thread: the
    front end's tick is one call of ``chunk`` per whole chunk, then ``tail``); positions in samples."""
    from voicechat.stt.listening import ListeningRules, ListeningState, SpeechStarted, UtteranceEnded
    from voicechat.stt.silero_batch import CHUNK as SILERO_CHUNK
    from voicechat.stt.silero_batch import SileroBatch, SileroStream

    silero = SileroBatch()

    class Fed:
        started_at = ended_at = -1

    def run(audio: np.ndarray, *, post_speech_silence_s: float, pace: float) -> Fed:
        fed, stream = Fed(), SileroStream()
        state = ListeningState(ListeningRules(post_speech_silence_s=post_speech_silence_s, min_utterance_s=0.0,
                                              partials=False))
        waiting = np.zeros(0, np.int16)
        for start in range(0, len(audio), 320):
            waiting = np.concatenate([waiting, audio[start : start + 320]])
            events = []
            while len(waiting) >= SILERO_CHUNK:
                chunk, waiting = waiting[:SILERO_CHUNK], waiting[SILERO_CHUNK:]
                p = silero.run([stream], chunk[None, :].astype(np.float32) / 32768.0)[0]
                events += state.chunk(chunk.tobytes(), float(p))
            events += state.tail(waiting.tobytes())
            for e in events:
                if isinstance(e, SpeechStarted):
                    fed.started_at = e.sample + SILERO_CHUNK
                elif isinstance(e, UtteranceEnded):
                    fed.ended_at = e.decided_sample
                    return fed
        raise AssertionError("the turn never ended")

    return run


@pytest.fixture
def make_realtimestt():
    """Runs one RealtimeSTTRecognizer over audio; reports how many samples it had seen at start and end."""
    from voicechat.engines.protocols import RecognizerCallbacks
    from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer

    made: list[RealtimeSTTRecognizer] = []

    class Fed:
        started_at = ended_at = -1

    def run(audio: np.ndarray, *, post_speech_silence_s: float, pace: float) -> Fed:
        fed, seen, ended = Fed(), [0], threading.Event()

        def started() -> None:
            fed.started_at = seen[0]

        def stopped(voice_ended_at: float | None = None) -> None:
            fed.ended_at = seen[0]
            ended.set()

        recognizer = RealtimeSTTRecognizer(
            "s", FixedTextModel(), RecognizerCallbacks(started, stopped, lambda _: None),
            partials=False, post_speech_silence_s=post_speech_silence_s, min_utterance_s=0.0,
        )
        made.append(recognizer)
        chunk_arrived = recognizer._chunk_arrived

        def counting(data: bytes) -> None:
            seen[0] += len(data) // 2
            chunk_arrived(data)

        recognizer._recorder.on_recorded_chunk = counting
        listening = threading.Thread(target=recognizer.next_final, daemon=True)
        listening.start()
        tick = threading.Event()
        for start in range(0, len(audio), 320):
            recognizer.feed(audio[start : start + 320].tobytes())
            tick.wait(0.02 / pace)  # the recorder drops audio more than 100 chunks behind
        assert ended.wait(10), "the turn never ended"
        recognizer.close()
        listening.join(10)
        return fed

    yield run
    for recognizer in made:
        recognizer.close()
