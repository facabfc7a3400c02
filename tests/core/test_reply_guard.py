"""The reply guard ends a spoken reply that repeats itself or has said enough."""

from hypothesis import given
from hypothesis import strategies as st

from voicechat.core.reply_guard import ReplyGuard


def run(guard: ReplyGuard, sentences: list[str]) -> list[str]:
    spoken = []
    for s in sentences:
        out = guard.admit(s)
        if out is not None:
            spoken.append(out)
        if guard.stopped:
            break
    return spoken


def test_a_repeated_sentence_ends_the_reply_before_it():
    # What SmolLM2 did without a repeat penalty (issue 20).
    guard = ReplyGuard()
    spoken = run(guard, ["This is a joke, but it is a good one.", "Why did the chicken cross the road?",
                         "This is a joke, but it is a good one!", "To get to the other side."])
    assert spoken == ["This is a joke, but it is a good one.", "Why did the chicken cross the road?"]
    assert guard.stop_reason == "repeated a sentence"


def test_a_near_repeat_ends_it_too():
    guard = ReplyGuard()
    assert run(guard, ["The capital of France is Paris, a city of light and art.",
                       "The capital of France is Paris, a city of light and of art."]) == [
        "The capital of France is Paris, a city of light and art."]


def test_a_loop_inside_one_sentence_is_cut_where_it_came_back():
    guard = ReplyGuard()
    looping = "I like the sea and the sun and the sand, " * 4
    assert run(guard, [looping]) == ["I like the sea and the sun and the sand"]
    assert guard.stop_reason == "repeated a phrase"


def test_a_phrase_recurring_across_sentences_is_a_loop():
    guard = ReplyGuard()
    spoken = run(guard, ["Well, you know what they say about cats.", "Cats, you know what they say about cats.",
                         "Dogs, and you know what they say about cats."])
    assert spoken[:1] == ["Well, you know what they say about cats."]
    assert guard.stopped and len(spoken) <= 2


def test_short_answers_may_recur():
    guard = ReplyGuard()
    assert run(guard, ["Yes.", "Yes.", "Okay then.", "Sure thing, my friend."]) == [
        "Yes.", "Yes.", "Okay then.", "Sure thing, my friend."]
    assert not guard.stopped


def test_the_sentence_cap():
    guard = ReplyGuard(max_sentences=2)
    assert run(guard, ["One is first here.", "Two comes after.", "Three is too many."]) == [
        "One is first here.", "Two comes after."]
    assert guard.stop_reason == "said 2 sentences"
    assert guard.admit("Anything else at all.") is None


def test_without_a_cap_distinct_sentences_all_pass():
    guard = ReplyGuard()
    sentences = [f"Filler sentence number {n} of this reply." for n in range(1, 30)]
    assert run(guard, sentences) == sentences


@given(st.lists(st.text(alphabet="abcdefghij ", min_size=1, max_size=40), max_size=12))
def test_spoken_text_is_always_a_prefix_of_a_sentence(sentences):
    guard = ReplyGuard(max_sentences=5)
    for s in sentences:
        out = guard.admit(s)
        assert out is None or s.startswith(out)
        if guard.stopped:
            assert guard.admit(s) is None
            break
    assert guard.spoken <= 5


def test_an_early_clause_counts_with_its_sentence():
    guard = ReplyGuard(max_sentences=2)
    assert run(guard, ["You said:", "hello there.", "Then a second one.", "A third is cut."]) == [
        "You said:", "hello there.", "Then a second one."]


def test_a_first_phrase_cut_counts_with_its_sentence_and_only_the_first_piece_is_one():
    guard = ReplyGuard(max_sentences=2)
    assert run(guard, ["You said turn off the lights", "at eleven.", "Then a second one.", "A third is cut."]) == [
        "You said turn off the lights", "at eleven.", "Then a second one."]
    later = ReplyGuard(max_sentences=2)  # a later piece without an end mark (a line, the last words) counts
    assert run(later, ["First line.", "Second line", "Third line."]) == ["First line.", "Second line"]
