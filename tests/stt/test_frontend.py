"""The listening front end: one thread, Silero batched across sessions, faults confined to the tick."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest
from support.engines import recognizer_factory
from support.helpers import SENTENCES, FixedTextModel, speech, utterance

from voicechat.core.events import EndOfTurn
from voicechat.engines.protocols import EngineError, RecognizerCallbacks
from voicechat.engines.scripted.stt import ScriptedTranscriber
from voicechat.stt.batched_recognizer import BatchedRecognizer
from voicechat.stt.frontend import ListeningFrontEnd
from voicechat.stt.listening import ListeningRules
from voicechat.stt.scheduler import SttScheduler

RULES = ListeningRules(post_speech_silence_s=0.3, min_utterance_s=0.0, partials=False)
FRAME = 320  # 20 ms


class LoudnessVad:
    """A stand-in for Silero: speech where the chunk is loud. Can be made to fail or to hang."""

    def __init__(self) -> None:
        self.fail = False
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.calls = 0
        self.states_seen: list[np.ndarray] = []

    def run(self, streams, chunks: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.states_seen.append(np.stack([s.state for s in streams]))
        self.entered.set()
        self.hold.wait(10)
        if self.fail:
            raise RuntimeError("vad broke")
        return (np.sqrt((chunks**2).mean(axis=1)) > 0.02).astype(np.float32)


class Ears:
    """Callbacks that record what one session's recognizer reported."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.ended = threading.Event()
        self.voice_ended_at: list[float | None] = []
        self.ends: list[EndOfTurn | None] = []

    def callbacks(self) -> RecognizerCallbacks:
        def end(at: float | None, end_of_turn: EndOfTurn | None = None) -> None:
            self.voice_ended_at.append(at)
            self.ends.append(end_of_turn)
            self.ended.set()

        return RecognizerCallbacks(self.started.set, end, lambda _: None)


def feed(recognizer: BatchedRecognizer, audio: np.ndarray) -> None:
    pcm = audio.tobytes()
    for i in range(0, len(pcm), FRAME * 2):
        recognizer.feed(pcm[i : i + FRAME * 2])


def loud(seconds: float) -> np.ndarray:
    n = int(seconds * 16000)
    return (np.sin(np.arange(n) * 0.3) * 8000).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    """A room's noise: over the front end's quiet gate (-55 dBFS), under LoudnessVad's speech level."""
    return np.random.default_rng(3).normal(0, 160, int(seconds * 16000)).astype(np.int16)  # about -46 dBFS


def hush(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.int16)


@pytest.mark.timeout(60)
def test_sessions_share_one_batch_and_each_hears_only_its_own_speech():
    stt = SttScheduler(ScriptedTranscriber({t: speech(t) for t in SENTENCES}))
    factory = recognizer_factory(stt, "batched", partials=False, post_speech_silence_s=0.4)
    texts = SENTENCES[:3]
    ears = [Ears() for _ in texts]
    recognizers = [factory(f"s{i}", e.callbacks()) for i, e in enumerate(ears)]
    finals: dict[int, str | None] = {}
    listeners = [threading.Thread(target=lambda i=i: finals.setdefault(i, recognizers[i].next_final()))
                 for i in range(len(texts))]
    for t in listeners:
        t.start()
    audios = [utterance(t, before_s=0.3, after_s=1.0) for t in texts]
    step = FRAME * 2
    pcms = [a.tobytes() for a in audios]
    for offset in range(0, max(len(p) for p in pcms), step):  # the sessions' frames interleave, as on a server
        for r, p in zip(recognizers, pcms, strict=True):
            if offset < len(p):
                r.feed(p[offset : offset + step])
        threading.Event().wait(0.005)  # the front end keeps up with 4x real time
    for t in listeners:
        t.join(20)
    assert [finals[i] for i in range(len(texts))] == texts
    assert factory.frontend.stats.max_batch >= 2 and factory.frontend.stats.vad_errors == 0
    assert all(e.voice_ended_at and e.voice_ended_at[0] is not None for e in ears)
    # The fixed silence ended each: no judge was asked (post_speech_silence_s is 0.4 here; decided on the tick grid)
    for e in ears:
        end = e.ends[0]
        assert end is not None and end.audio is None and end.words is None and 400 <= end.silence_ms < 500
    for r in recognizers:
        r.close()
    factory.close()
    stt.close()


@dataclass
class Rig:
    """A listening front end over ``LoudnessVad``, and the recognizers made on it (closed after the test)."""

    vad: LoudnessVad
    frontend: ListeningFrontEnd
    made: list[BatchedRecognizer]

    def recognizer(self, name: str = "s", text: str = "text", callbacks: RecognizerCallbacks | None = None
                   ) -> tuple[BatchedRecognizer, Ears]:
        ears = Ears()
        made = BatchedRecognizer(name, FixedTextModel(text), callbacks or ears.callbacks(), self.frontend, rules=RULES)
        self.made.append(made)
        return made, ears


@pytest.fixture
def rig() -> Iterator[Rig]:
    vad = LoudnessVad()
    made = Rig(vad, ListeningFrontEnd(lambda: vad), [])
    yield made
    for recognizer in made.made:
        recognizer.close()
    made.frontend.close()


def final_of(recognizer: BatchedRecognizer) -> tuple[threading.Thread, list[str | None]]:
    """The session's STT worker, waiting for its next final in the background."""
    final: list[str | None] = []
    waiter = threading.Thread(target=lambda: final.append(recognizer.next_final()))
    waiter.start()
    return waiter, final


@pytest.mark.timeout(30)
def test_a_failing_vad_is_counted_and_the_sessions_go_on(rig):
    recognizer, ears = rig.recognizer(text="hi")
    rig.vad.fail = True
    feed(recognizer, quiet(0.3))
    assert wait_until(lambda: rig.frontend.stats.vad_errors >= 3)
    rig.vad.fail = False
    waiter, final = final_of(recognizer)
    feed(recognizer, np.concatenate([loud(0.5), quiet(0.6)]))
    waiter.join(10)
    assert final == ["hi"] and ears.started.is_set()


@pytest.mark.timeout(30)
def test_a_slow_vad_delays_the_tick_not_the_sessions_feeding(rig):
    recognizer, _ = rig.recognizer()
    rig.vad.hold.clear()
    feed(recognizer, quiet(0.1))
    assert rig.vad.entered.wait(5)  # the front end is stuck inside the VAD call
    feed(recognizer, quiet(1.0))  # the receiving thread is not: a second of frames goes in meanwhile
    assert not rig.vad.hold.is_set() and len(recognizer.backlog) >= 30
    threading.Event().wait(0.2)  # the VAD call is slow: several ticks' worth
    rig.vad.hold.set()
    assert wait_until(lambda: len(recognizer.backlog) == 0)  # caught up, several chunks a tick
    assert rig.frontend.stats.overruns >= 1


@pytest.mark.timeout(30)
def test_a_session_closed_mid_utterance_leaves_nothing_behind(rig):
    recognizer, ears = rig.recognizer()
    waiter, final = final_of(recognizer)
    feed(recognizer, loud(0.5))
    assert ears.started.wait(5)
    recognizer.close()
    waiter.join(5)
    assert final == [None] and not ears.ended.is_set()
    assert rig.frontend.listeners == 0
    assert wait_until(lambda: not any(t.name == "listening-frontend" for t in threading.enumerate()))
    feed(recognizer, loud(0.2))  # audio after close goes nowhere
    assert len(recognizer.backlog) == 0


@pytest.mark.timeout(30)
def test_a_listener_that_raises_is_counted_and_the_others_are_served(rig):
    def explode() -> None:
        raise RuntimeError("callback broke")

    bad, _ = rig.recognizer("bad", callbacks=RecognizerCallbacks(explode))
    good, fine = rig.recognizer("good")
    for r in (bad, good):
        feed(r, np.concatenate([loud(0.4), quiet(0.5)]))
    assert fine.ended.wait(5)
    assert rig.frontend.stats.listener_errors >= 1


@pytest.mark.timeout(30)
def test_a_quiet_room_does_not_run_the_model_and_speech_after_it_does(rig):
    recognizer, ears = rig.recognizer()
    feed(recognizer, hush(1.0))
    assert wait_until(lambda: rig.frontend.stats.skipped >= 31)
    assert rig.vad.calls == 0 and recognizer.stream.skipped
    recognizer.stream.state[:] = 1.0  # as if the model had run long ago
    feed(recognizer, np.concatenate([loud(0.4), hush(0.5)]))
    assert ears.ended.wait(5) and rig.vad.calls > 0
    assert not rig.vad.states_seen[0].any()  # the burst started from a fresh state


@pytest.fixture
def slow_ticks() -> Iterator[Rig]:
    """A front end whose regular tick comes once (at its start) within a test: only urgent passes serve."""
    vad = LoudnessVad()
    made = Rig(vad, ListeningFrontEnd(lambda: vad, tick_s=60.0, max_rounds=64), [])
    yield made
    for recognizer in made.made:
        recognizer.close()
    made.frontend.close()


def regular_ticks(frontend: ListeningFrontEnd) -> int:
    return frontend.stats.ticks - frontend.stats.urgent


@pytest.mark.timeout(30)
def test_speech_starting_in_a_quiet_room_is_heard_without_waiting_for_the_tick(slow_ticks):
    rig = slow_ticks
    recognizer, ears = rig.recognizer()
    assert wait_until(lambda: rig.frontend.stats.ticks == 1)  # the first tick, at the thread's start
    feed(recognizer, hush(1.0))  # nothing to decide: the chunks wait for the next tick
    assert rig.frontend.stats.urgent == 0 and len(recognizer.backlog) == 31
    feed(recognizer, loud(0.1))  # a loud chunk while nobody speaks: a barge-in may start
    assert ears.started.wait(5)
    assert rig.frontend.stats.urgent >= 1 and regular_ticks(rig.frontend) == 1


@pytest.mark.timeout(30)
def test_the_silence_ends_the_turn_on_the_frame_that_completes_it_between_ticks(slow_ticks):
    rig = slow_ticks
    recognizer, ears = rig.recognizer()
    waiter, final = final_of(recognizer)
    assert wait_until(lambda: rig.frontend.stats.ticks == 1)
    rig.vad.hold.clear()  # the onset's pass waits in the model until all of this is in:
    feed(recognizer, np.concatenate([loud(0.5), quiet(0.2)]))  # speech, then 0.2 s of the 0.3 s silence
    assert rig.vad.entered.wait(5)
    rig.vad.hold.set()  # that pass takes every chunk waiting (max_rounds 64)
    assert wait_until(lambda: len(recognizer.backlog) == 0 and ears.started.is_set())
    assert not ears.ended.is_set()
    for _ in range(8):  # each 20 ms frame of silence asks for a pass; the one that completes 0.3 s ends it
        feed(recognizer, quiet(0.02))
        if ears.ended.wait(1.0):
            break
    waiter.join(10)
    assert final == ["text"] and ears.ended.is_set()
    assert regular_ticks(rig.frontend) == 1  # every decision came from a pass the session asked for


@pytest.mark.parametrize("probes", [True, False])
@pytest.mark.timeout(30)
def test_speech_starting_inside_a_chunk_is_heard_on_its_first_loud_frame_with_probes(rig, probes):
    ears = Ears()
    analysed_at_start: list[int] = []

    def started() -> None:  # in the front end's thread: how much of the stream was chunked when speech started
        analysed_at_start.append(recognizer._state.analysed)
        ears.started.set()

    recognizer = BatchedRecognizer("s", FixedTextModel("text"), RecognizerCallbacks(started), rig.frontend,
                                   rules=replace(RULES, probe_onsets=probes))
    rig.made.append(recognizer)
    feed(recognizer, quiet(32 * 512 / 16000))  # exactly 32 chunks of room noise
    assert wait_until(lambda: recognizer.stream.skipped is False and recognizer.backlog.waiting() == 0)
    ticks = rig.frontend.stats.ticks
    feed(recognizer, loud(0.02))  # one frame: 320 samples, no whole chunk
    if probes:
        assert ears.started.wait(5) and analysed_at_start == [32 * 512]  # before its chunk was complete
        assert rig.frontend.stats.probes >= 1
        return
    assert wait_until(lambda: rig.frontend.stats.ticks >= ticks + 2)  # passes went by: no chunk, no onset
    assert not ears.started.is_set() and rig.frontend.stats.probes == 0
    feed(recognizer, loud(0.02))  # the frame that completes the chunk
    assert ears.started.wait(5) and analysed_at_start == [33 * 512]


def wait_until(predicate, timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()


class LengthModel(FixedTextModel):
    """Answers every final with the length of its audio, and keeps each length; may say it has no spare time,
    or fail its first call."""

    def __init__(self, spare: bool = True, fail_first: bool = False) -> None:
        super().__init__()
        self.lengths: list[int] = []
        self.spare, self.fail_first = spare, fail_first

    def has_spare_time(self) -> bool:
        return self.spare

    def transcribe(self, audio, **_) -> str:
        if self.fail_first:
            self.fail_first = False
            raise EngineError("the model broke once")
        self.lengths.append(len(audio))
        return str(len(audio))


GUESSING = replace(RULES, pause_s=0.1, guess_s=0.05)


def hear_with_guesses(rig: Rig, audio: np.ndarray, **model: bool
                      ) -> tuple[BatchedRecognizer, LengthModel, list[str], list[str | None]]:
    """A recognizer that guesses pauses hears ``audio`` to its first final: (it, its model, the early
    transcripts, the final)."""
    early: list[str] = []
    lengths = LengthModel(**model)
    callbacks = RecognizerCallbacks(on_transcript_early=lambda text, _: early.append(text))
    made = BatchedRecognizer("s", lengths, callbacks, rig.frontend, rules=GUESSING)
    rig.made.append(made)
    waiter, final = final_of(made)
    feed(made, audio)
    waiter.join(10)
    return made, lengths, early, final


def one_pause() -> np.ndarray:
    return np.concatenate([hush(0.3), loud(0.6), hush(0.5)])


@pytest.mark.timeout(30)
def test_the_pause_takes_the_transcript_started_at_the_guess(rig):
    recognizer, model, early, final = hear_with_guesses(rig, one_pause())
    assert len(model.lengths) == 1 and recognizer.guesses_made == recognizer.guesses_used == 1
    assert final == early == [str(model.lengths[0])]  # the early transcript and the final: the guess's
    assert model.lengths[0] < 16000 * (0.3 + 0.6 + 0.1)  # made before the pause opened


@pytest.mark.timeout(30)
def test_voice_after_the_guess_makes_the_pause_take_a_later_one(rig):
    recognizer, model, early, final = hear_with_guesses(
        rig, np.concatenate([hush(0.3), loud(0.6), hush(0.08), loud(0.2), hush(0.5)]))
    assert recognizer.guesses_used == 1 and len(model.lengths) == recognizer.guesses_made  # no pause of its own
    assert final == early == [str(max(model.lengths))]
    assert max(model.lengths) > 16000 * (0.3 + 0.6 + 0.08 + 0.2)  # the words after the first quiet are in it


@pytest.mark.timeout(30)
def test_without_spare_time_no_guess_is_transcribed_and_the_pause_transcribes_itself(rig):
    recognizer, model, early, final = hear_with_guesses(rig, one_pause(), spare=False)
    assert recognizer.guesses_made == recognizer.guesses_used == 0 and len(model.lengths) == 1
    assert final == early == [str(model.lengths[0])]
    assert model.lengths[0] >= 16000 * (0.3 + 0.6 + 0.1)  # the pause's own audio


@pytest.mark.timeout(30)
def test_a_guess_that_fails_leaves_the_pause_to_transcribe_itself(rig):
    recognizer, model, early, final = hear_with_guesses(rig, one_pause(), fail_first=True)
    assert recognizer.guesses_made == 0 and len(model.lengths) == 1  # the pause's own, after the guess failed
    assert final == early == [str(model.lengths[0])]
