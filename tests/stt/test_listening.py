"""The batched front end's turn rules, on scripted speech probabilities (pure)."""

import numpy as np

from voicechat.stt.listening import (
    ListeningRules,
    ListeningState,
    PartialDue,
    PauseLikely,
    PauseStarted,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)

CHUNK = 512
TONE = (np.sin(np.arange(CHUNK) * 0.3) * 8000).astype(np.int16).tobytes()
QUIET = np.zeros(CHUNK, np.int16).tobytes()


def run(state: ListeningState, verdicts: list[float | None]) -> list:
    """Loud chunks where the verdict says speech (>= 0.5), digital silence elsewhere.

    Streams start with a little silence: the level's noise floor is learnt from the room before the speech.
    """
    events = []
    for p in verdicts:
        events += state.chunk(TONE if p is not None and p >= 0.5 else QUIET, p)
    return events


def test_speech_starts_on_the_chunk_that_shows_it():
    state = ListeningState(ListeningRules(partials=False))
    events = run(state, [0.1, 0.2, 0.9])
    assert events == [SpeechStarted(1, 2 * CHUNK)] and state.recording


def test_the_turn_ends_the_silence_setting_after_the_last_voiced_sample():
    rules = ListeningRules(post_speech_silence_s=0.32, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    events = run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 20)
    ends = [e for e in events if isinstance(e, UtteranceEnded)]
    assert len(ends) == 1
    assert ends[0].last_voiced_sample == 15 * CHUNK  # the tone stops exactly at the chunk boundary
    assert ends[0].decided_sample - ends[0].last_voiced_sample == round(0.32 * 16000)
    # the pre-roll (the 5 quiet chunks), 10 chunks of speech, then the silence up to the end
    assert len(ends[0].audio) == ends[0].decided_sample and not state.recording
    assert abs(ends[0].silence_s - 0.32) < 1e-9 and ends[0].signals == (None, None)  # the fixed silence: no judge


def test_a_turn_ended_by_the_judges_says_what_they_said_and_after_how_much_silence():
    rules = ListeningRules(post_speech_silence_s=1.0, min_utterance_s=0.0, partials=False, pause_s=0.1)
    asked = []

    def judge(silence_s: float, audio: float | None, words: float | None) -> bool:
        asked.append((silence_s, audio, words))
        return silence_s >= 0.2 and words is not None and words >= 0.5

    state = ListeningState(rules, judge)
    events = run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 4)  # 0.128 s of silence: the pause opens
    pause = next(e for e in events if isinstance(e, PauseStarted)).pause
    state.signal(pause, words=0.3)
    assert not [e for e in run(state, [0.0] * 3) if isinstance(e, UtteranceEnded)]  # 0.224 s: unfinished
    state.signal(pause, audio=0.7, words=0.8)
    ends = [e for e in run(state, [0.0]) if isinstance(e, UtteranceEnded)]
    assert len(ends) == 1 and ends[0].pause == pause
    assert ends[0].signals == (0.7, 0.8) and abs(ends[0].silence_s - 8 * CHUNK / 16000) < 1e-9


def test_the_tail_ends_the_turn_between_chunks():
    rules = ListeningRules(post_speech_silence_s=0.3, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 9)  # 9 chunks = 0.288 s of silence analysed
    assert state.tail(bytes(2 * 100)) == []  # 0.294 s
    assert state.tail(TONE[: 2 * 200]) == []  # 0.3005 s, but the voice is back in those samples
    ended = state.tail(bytes(2 * 200))  # 0.3005 s of silence: enough, without waiting for a whole chunk
    assert len(ended) == 1 and ended[0].decided_sample == 24 * CHUNK + 200
    assert ended[0].last_voiced_sample == 15 * CHUNK


def test_hysteresis_keeps_a_dip_inside_speech():
    state = ListeningState(ListeningRules(onset_probability=0.6, release_margin=0.15, partials=False))
    run(state, [0.9, 0.9, 0.5, 0.9])
    assert state.recording and state._end.silence_s is None  # 0.5 is above the 0.45 release


def test_no_verdict_keeps_the_last_one():
    rules = ListeningRules(post_speech_silence_s=0.1, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    assert run(state, [None, None]) == []  # listening: no verdict starts nothing
    run(state, [0.9, None, None])
    assert state.recording and state._end.silence_s is None  # still speech
    assert any(isinstance(e, UtteranceEnded) for e in run(state, [0.0] + [None] * 5))  # silence goes on


def test_an_utterance_shorter_than_the_minimum_goes_on_until_it_is_long_enough():
    rules = ListeningRules(post_speech_silence_s=0.064, min_utterance_s=0.5, partials=False)
    state = ListeningState(rules)
    events = run(state, [0.9, 0.9] + [0.0] * 30)
    end = next(e for e in events if isinstance(e, UtteranceEnded))
    assert end.decided_sample >= 0.5 * 16000


def test_partials_are_due_every_interval_of_speech_with_a_short_pre_roll():
    rules = ListeningRules(partial_interval_s=0.2, partial_min_s=0.3, partial_pre_roll_s=0.1, pre_roll_s=1.0)
    state = ListeningState(rules)
    events = run(state, [0.0] * 10 + [0.9] * 30)
    partials = [e for e in events if isinstance(e, PartialDue)]
    # due once 0.3 s is recorded (chunk 10), then every 0.2 s or more of speech (7 chunks): 3 in 30 chunks
    assert len(partials) == 3 and all(p.utterance == 1 for p in partials)
    first = partials[0]
    assert len(first.audio) == (round(0.1 * 16000) + 10 * CHUNK)  # recorded so far + 0.1 s before the onset


def test_no_partial_starts_in_a_quiet_tail_that_silero_still_calls_speech():
    """Silero releases 64-170 ms after the sound stops; a partial started there would hold up the pause's
    transcript. It waits for the voice to come back instead."""
    rules = ListeningRules(partial_interval_s=0.2, partial_min_s=0.3, partial_quiet_s=0.05, pause_s=None)
    state = ListeningState(rules)
    events = []
    for pcm, p in [(QUIET, 0.0)] * 10 + [(TONE, 0.9)] * 10 + [(QUIET, 0.9)] * 8:  # speech, then its quiet tail
        events += state.chunk(pcm, p)
    assert len([e for e in events if isinstance(e, PartialDue)]) == 1  # at 0.3 s; the one due in the tail waits
    back = state.chunk(TONE, 0.9)
    assert len([e for e in back if isinstance(e, PartialDue)]) == 1  # the voice is back: the waiting one runs
    # without the rule, the tail takes a partial (the control)
    state = ListeningState(ListeningRules(partial_interval_s=0.2, partial_min_s=0.3, partial_quiet_s=None,
                                          pause_s=None))
    events = []
    for pcm, p in [(QUIET, 0.0)] * 10 + [(TONE, 0.9)] * 10 + [(QUIET, 0.9)] * 8:
        events += state.chunk(pcm, p)
    assert len([e for e in events if isinstance(e, PartialDue)]) == 2


def test_the_pre_roll_is_kept_and_bounded():
    state = ListeningState(ListeningRules(pre_roll_s=0.1, post_speech_silence_s=0.1, min_utterance_s=0.0,
                                          partials=False))
    events = run(state, [0.0] * 20 + [0.9] * 3 + [0.0] * 10)
    end = next(e for e in events if isinstance(e, UtteranceEnded))
    speech_and_silence = end.decided_sample - 20 * CHUNK
    assert len(end.audio) == round(0.1 * 16000) + speech_and_silence


def test_a_second_utterance_gets_a_new_number():
    rules = ListeningRules(post_speech_silence_s=0.1, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    events = run(state, [0.9] * 3 + [0.0] * 5 + [0.9] * 3 + [0.0] * 5)
    assert [e.utterance for e in events if isinstance(e, SpeechStarted | UtteranceEnded)] == [1, 1, 2, 2]


def test_the_next_utterance_starts_with_none_of_the_last_ones_speech():
    rules = ListeningRules(post_speech_silence_s=0.2, min_utterance_s=0.0, pre_roll_s=1.0, partials=False)
    state = ListeningState(rules)
    events = run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 8 + [0.9] * 10 + [0.0] * 10)
    first, second = [e for e in events if isinstance(e, UtteranceEnded)]
    # its pre-roll is the silence heard since the first one's last voiced sample, not the first one's speech
    assert first.last_voiced_sample == 15 * CHUNK
    second_onset = 23 * CHUNK
    pre_roll = len(second.audio) - (second.decided_sample - second_onset)
    assert pre_roll == 8 * CHUNK  # the 8 quiet chunks between them (the 1 s pre-roll would reach into speech)
    assert not (np.abs(second.audio[:pre_roll]) > 0.01).any()


def test_a_turn_ended_by_the_tail_keeps_none_of_its_speech_either():
    rules = ListeningRules(post_speech_silence_s=0.3, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 9)
    assert state.tail(bytes(2 * 200))  # ended with 200 samples not yet analysed
    events = run(state, [0.0, 0.9] + [0.0] * 12)
    second = next(e for e in events if isinstance(e, UtteranceEnded))
    pre_roll = len(second.audio) - (second.decided_sample - 25 * CHUNK)
    assert not (np.abs(second.audio[:pre_roll]) > 0.01).any()


def test_a_stream_that_is_behind_is_not_ended_by_the_tail():
    """A chunk or more waiting is Silero's to judge: it may hold the rest of the sentence."""
    rules = ListeningRules(post_speech_silence_s=0.3, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 9)
    assert state.tail(bytes(2 * 600)) == []


def test_a_release_while_the_level_still_hears_voice_keeps_that_voice_out_of_the_next_pre_roll():
    """Silero let go while the level still heard voice: the decision assumed 0.1 s of silence that was not."""
    rules = ListeningRules(post_speech_silence_s=0.3, min_utterance_s=0.0, partials=False)
    state = ListeningState(rules)
    # Silero says silence for two chunks that are still loud, then real silence follows
    events = []
    for pcm, p in [(QUIET, 0.0)] * 5 + [(TONE, 0.9)] * 10 + [(TONE, 0.0)] * 2 + [(QUIET, 0.0)] * 20:
        events += state.chunk(pcm, p)
    assert any(isinstance(e, UtteranceEnded) for e in events)
    events = run(state, [0.9] * 3 + [0.0] * 12)
    second = next(e for e in events if isinstance(e, UtteranceEnded))
    onset = next(e for e in events if isinstance(e, SpeechStarted)).sample
    pre_roll = len(second.audio) - (second.decided_sample - onset)
    assert pre_roll > 0 and not (np.abs(second.audio[:pre_roll]) > 0.01).any()


def test_a_pause_is_reported_only_once_the_level_is_quiet_too_so_its_audio_holds_the_whole_sound():
    """Silero let go inside a soft ending ("moo-n"): the audio transcribed in the pause must end after it.

    Cut inside that ending, Whisper tiny.en heard "How far away is the man?" (a CI failure).
    """
    rules = ListeningRules(post_speech_silence_s=1.0, min_utterance_s=0.0, partials=False, pause_s=0.1)
    state = ListeningState(rules)
    events = []
    for pcm, p in [(QUIET, 0.0)] * 5 + [(TONE, 0.9)] * 10 + [(TONE, 0.0)] * 3 + [(QUIET, 0.0)] * 6:
        events += state.chunk(pcm, p)
    pauses = [e for e in events if isinstance(e, PauseStarted)]
    assert len(pauses) == 1
    voiced = np.flatnonzero(np.abs(pauses[0].audio) > 0.01)
    assert len(pauses[0].audio) - (voiced[-1] + 1) >= 0.1 * 16000  # all 13 loud chunks, then 0.1 s of quiet


def test_the_pause_opens_on_the_level_while_silero_still_calls_speech_and_only_voice_ends_it():
    """Silero lets go 64-170 ms after the sound stops; the pause (and its transcript) need not wait for it.
    Its quiet release tail is still the pause; the voice coming back ends it."""
    rules = ListeningRules(post_speech_silence_s=1.0, min_utterance_s=0.0, partials=False, pause_s=0.1)
    state = ListeningState(rules)
    events = []
    for pcm, p in [(QUIET, 0.0)] * 5 + [(TONE, 0.9)] * 10 + [(QUIET, 0.9)] * 3:  # 96 ms of quiet tail
        events += state.chunk(pcm, p)
    assert not [e for e in events if isinstance(e, PauseStarted)]
    opened = state.chunk(QUIET, 0.9)  # 128 ms: Silero still says speech
    assert [type(e) for e in opened] == [PauseStarted]
    assert len(opened[0].audio) == (5 + 10 + 4) * CHUNK
    tail = []
    for pcm, p in [(QUIET, 0.9)] * 2 + [(QUIET, 0.0)] * 2 + [(QUIET, 0.9)]:  # the tail, Silero's release, a blip
        tail += state.chunk(pcm, p)
    assert tail == []
    back = state.chunk(TONE, 0.9)
    assert back == [SpeechResumed(state.utterance, opened[0].pause)]


def test_a_pause_is_guessed_once_per_quiet_before_it_opens_and_the_pause_names_the_guess():
    """The guess (``guess_s`` of quiet) lets the pause's transcript start ~50 ms sooner; its audio is the pause's
    but for quiet. Voice between them forgets the guess: that pause names the next one."""
    rules = ListeningRules(post_speech_silence_s=1.0, min_utterance_s=0.0, partials=False, pause_s=0.1,
                           guess_s=0.05)
    state = ListeningState(rules)
    events = run(state, [0.0] * 5 + [0.9] * 10)
    guessed = state.chunk(QUIET, 0.9) + state.chunk(QUIET, 0.9)  # 32 ms, then 64 ms of quiet
    assert [type(e) for e in guessed] == [PauseLikely]
    assert len(guessed[0].audio) == (5 + 10 + 2) * CHUNK
    opened = state.chunk(QUIET, 0.9) + state.chunk(QUIET, 0.9)  # 128 ms: the pause, no second guess
    assert [type(e) for e in opened] == [PauseStarted] and opened[0].guess == guessed[0].guess
    assert np.array_equal(opened[0].audio[: len(guessed[0].audio)], guessed[0].audio)
    assert not opened[0].audio[len(guessed[0].audio):].any()  # only quiet after the guess's audio

    events = run(state, [0.9] * 5)  # the user goes on
    events += state.chunk(QUIET, 0.9) + state.chunk(QUIET, 0.9)
    assert [type(e) for e in events] == [SpeechResumed, PauseLikely]
    forgotten = events[1].guess
    assert forgotten == guessed[0].guess + 1
    assert state.chunk(TONE, 0.9) == []  # a short sound before the pause opens: that guess is forgotten
    events = run(state, [0.0] * 4)
    assert [type(e) for e in events] == [PauseLikely, PauseStarted]
    assert events[0].guess == forgotten + 1 and events[1].guess == events[0].guess


def test_without_a_guess_rule_no_pause_is_guessed():
    rules = ListeningRules(post_speech_silence_s=1.0, min_utterance_s=0.0, partials=False, pause_s=0.1)
    state = ListeningState(rules)
    events = run(state, [0.0] * 5 + [0.9] * 10 + [0.0] * 6)
    assert [type(e) for e in events] == [SpeechStarted, PauseStarted] and events[1].guess == 0


def test_where_the_level_never_settles_the_pause_opens_a_longest_release_later():
    """Noise the level takes for voice delays the pause (and the judged end of turn) by at most 0.3 s."""
    rules = ListeningRules(post_speech_silence_s=1.0, min_utterance_s=0.0, partials=False, pause_s=0.1)
    state = ListeningState(rules)
    events = []
    for pcm, p in [(QUIET, 0.0)] * 5 + [(TONE, 0.9)] * 10 + [(TONE, 0.0)] * 20:
        events += state.chunk(pcm, p)
    pauses = [e for e in events if isinstance(e, PauseStarted)]
    assert len(pauses) == 1
    after_release = len(pauses[0].audio) - (5 + 10) * CHUNK  # Silero let go at the end of chunk 16
    assert 0.3 * 16000 - CHUNK <= after_release <= 0.3 * 16000 + 2 * CHUNK


def test_a_probe_between_chunks_starts_speech_where_its_window_began_and_the_chunks_record_it():
    state = ListeningState(ListeningRules(onset_probability=0.6, partials=False, min_utterance_s=0.0,
                                          post_speech_silence_s=0.2))
    run(state, [0.0] * 4)
    assert state.probed(320, 0.5) == [] and not state.recording  # under the onset threshold
    assert state.probed(320, None) == []  # no verdict
    assert state.probed(320, 0.7) == [SpeechStarted(1, 4 * CHUNK + 320 - CHUNK)] and state.recording
    assert state.probed(480, 0.9) == []  # already speaking
    events = run(state, [0.9] * 6 + [0.0] * 10)  # the chunks are recorded and judged as after any onset
    ends = [e for e in events if isinstance(e, UtteranceEnded)]
    assert not any(isinstance(e, SpeechStarted) for e in events) and len(ends) == 1
    assert ends[0].last_voiced_sample == 10 * CHUNK and len(ends[0].audio) == ends[0].decided_sample
