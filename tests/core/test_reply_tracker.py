"""What part of a reply was heard."""

from voicechat.core.reply_tracker import ReplyTracker


def tracker() -> ReplyTracker:
    t = ReplyTracker(generation=1, sample_rate=1000)
    t.add_sentence(0, "one two three four")
    t.add_audio(0, 400)
    t.sentence_done(0)
    t.add_sentence(1, "five six")
    t.add_audio(1, 200)
    t.sentence_done(1)
    return t


def test_nothing_played_nothing_heard():
    assert tracker().heard_text(0) == ""


def test_whole_sentences_and_proportional_words():
    t = tracker()
    assert t.heard_text(200) == "one two"
    assert t.heard_text(400) == "one two three four"
    assert t.heard_text(500) == "one two three four five"
    assert t.heard_text(10_000) == "one two three four five six"
    assert t.full_text() == "one two three four five six"


def test_audio_offsets_are_cumulative():
    t = ReplyTracker(generation=1)
    t.add_sentence(0, "a")
    assert t.add_audio(0, 10) == 0
    assert t.add_audio(0, 5) == 10
    t.add_sentence(1, "b")
    assert t.add_audio(1, 7) == 15
    assert t.total_samples == 22


def test_sentence_still_synthesizing_is_estimated_from_finished_ones():
    t = tracker()  # 100 samples per word so far
    t.add_sentence(2, "seven eight nine ten")
    t.add_audio(2, 100)  # only the first word synthesized yet
    # all synthesized audio played: one word of the unfinished sentence
    assert t.heard_text(700) == "one two three four five six seven"
