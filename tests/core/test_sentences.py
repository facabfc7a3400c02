"""Sentence splitting of a token stream."""

from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.core.sentences import SentenceSplitter


def split_all(text: str, chunks: list[int] | None = None, **kw) -> list[str]:
    s = SentenceSplitter(**kw)
    out: list[str] = []
    if chunks is None:
        out += s.feed(text)
    else:
        pos = 0
        for size in chunks:
            out += s.feed(text[pos : pos + size])
            pos += size
        out += s.feed(text[pos:])
    return out + s.flush()


def test_whole_sentences():
    assert split_all("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]


def test_first_fragment_released_early_at_a_clause():
    s = SentenceSplitter(first_fragment_min_words=3)
    assert s.feed("Well, sure thing, my friend") == ["Well, sure thing,"]
    # later pieces wait for a full sentence
    assert s.feed(", let me think") == []
    assert s.feed(" about it. Next") == ["my friend, let me think about it."]
    assert s.flush() == ["Next"]


def test_short_clause_is_not_released():
    s = SentenceSplitter(first_fragment_min_words=3)
    assert s.feed("Yes, ") == []


def test_first_piece_released_before_a_phrase_opener_once_long_enough():
    s = SentenceSplitter(first_phrase_min_words=4)
    assert s.feed("The sky looks blue because") == []  # the last word may still grow ("becausefoo")
    assert s.feed(" sunlight scatters in the air. Red") == [
        "The sky looks blue", "because sunlight scatters in the air."]
    assert s.flush() == ["Red"]


def test_a_phrase_opener_too_early_or_inside_a_word_does_not_cut():
    assert split_all("Paris is in France and Europe.", first_phrase_min_words=4) == ["Paris is in France",
                                                                                   "and Europe."]
    assert split_all("The capital of France is Paris.", first_phrase_min_words=4) == [
        "The capital of France is Paris."]  # "of" comes after two words only
    assert split_all("It will be sunny tomorrow afternoon. Bring water with you.", first_phrase_min_words=4) == [
        "It will be sunny tomorrow afternoon.", "Bring water with you."]  # "tomorrow" is not "to"; later pieces whole


def test_phrase_cuts_are_off_by_default():
    text = "The sky looks blue because sunlight scatters."
    assert split_all(text) == [text]


def test_piece_needs_following_whitespace():
    s = SentenceSplitter()
    assert s.feed("It costs 3.5") == []
    assert s.feed(" euros. ") == ["It costs 3.5 euros."]


def test_abbreviations_and_initials_do_not_split():
    text = "Dr. Smith met Mr. J. R. Tolkien at 5 p.m. yesterday, e.g. at home. Then he left."
    assert split_all(text, first_fragment_min_words=100) == [
        "Dr. Smith met Mr. J. R. Tolkien at 5 p.m. yesterday, e.g. at home.",
        "Then he left.",
    ]


def test_newline_ends_a_piece():
    assert split_all("First line\nSecond line") == ["First line", "Second line"]


def test_overlong_text_is_cut_at_a_word_boundary():
    text = " ".join(["word"] * 100)
    pieces = split_all(text, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_flush_empty():
    assert SentenceSplitter().flush() == []


words = st.sampled_from(["Hello", "world", "Dr.", "ok,", "yes.", "why?", "no!", "a", "3.5", "e.g.", "J.", "-", "\n",
                         "and", "to", "tomorrow", "With"])


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(words, min_size=1, max_size=40), cuts=st.lists(st.integers(1, 7), max_size=40))
def test_pieces_do_not_depend_on_token_boundaries(tokens, cuts):
    text = " ".join(tokens)
    for phrase in (0, 2):
        whole = split_all(text, max_chars=60, first_phrase_min_words=phrase)
        assert split_all(text, cuts, max_chars=60, first_phrase_min_words=phrase) == whole
        assert " ".join(whole).split() == text.split()  # nothing lost, nothing added


def test_the_first_piece_can_be_cut_at_its_last_whole_word_where_no_boundary_comes():
    s = SentenceSplitter(first_phrase_min_words=3)
    assert s.feed("The moon is approximately 2,173") == []  # no clause end, no phrase opener yet
    assert s.cut_first(3) == ["The moon is approximately"]  # "2,173" may still be growing: it stays
    assert s.cut_first(3) == []  # only the first piece is ever cut this way
    assert s.feed(".65 miles away from Earth. It is far.") == ["2,173.65 miles away from Earth."]
    assert s.flush() == ["It is far."]


def test_a_first_piece_too_short_to_cut_stays_whole():
    s = SentenceSplitter()
    s.feed("Bella Bianca: 1.325")
    assert s.cut_first(3) == []  # two whole words so far
    s.feed("04786 is")
    assert s.cut_first(3) == ["Bella Bianca: 1.32504786"]
    assert s.flush() == ["is"]
