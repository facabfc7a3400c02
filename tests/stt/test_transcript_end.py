"""The words' signal: trailing punctuation and the last word say whether a transcript ends a turn."""

import pytest

from voicechat.stt.transcript_end import (
    DEFAULT,
    end_mark,
    words,
    words_score,
)

FINISHED = [
    "What is the capital of France?", "Turn off the kitchen lights.", "Where are you from?",
    "What is this for?", "Who did you talk to?", "Turn the lights on.", "Tell me more!", "I think so.",
    "Thank you.", "Can you do it?", "What does it look like?", "Hello.",
]
UNFINISHED = [
    "I would like to", "I would like to...", "I would like to.", "Book a table for the", "Book a table for the.",
    "My favourite colour is green because", "Add eggs, milk and", "Um", "Could you tell me about",
    "What is the capital of", "Remind me to call my", "How far away is the moon,", "I think that the",
    "What time does the", "I would", "Tell me something about octopuses and their", "I am looking for a good",
    "Tell me a story about it",
]


@pytest.mark.parametrize("text", FINISHED)
def test_finished_sentences_score_high(text):
    assert words_score(text) >= 0.5


@pytest.mark.parametrize("text", UNFINISHED)
def test_fragments_score_low(text):
    assert words_score(text) < 0.5


def test_no_words_no_score():
    assert words_score("") is None and words_score(" ... ") is None


def test_marks_and_words():
    assert [end_mark(t) for t in ["Hi?", "Hi!", "Hi.", "Hi...", "Hi\u2026", "Hi,", "Hi", 'He said "hi."']] == [
        "?", "?", ".", "...", "...", "...", "", "."]
    assert words("It\u2019s 5 o'clock, Bob.") == ["it's", "5", "o'clock", "bob"]


def test_question_beats_full_stop_beats_no_mark_beats_trailing_off():
    assert words_score("Go home?") > words_score("Go home.") > words_score("Go home") > words_score("Go home,")
    assert words_score("Yes I can.") == DEFAULT.auxiliary
