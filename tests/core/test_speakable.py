"""What of a reply is read aloud: markdown, bullets, emoji and URLs are not."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicechat.core.speakable import speakable


@pytest.mark.parametrize(("written", "spoken"), [
    ("- **Paris** is the capital of France.", "Paris is the capital of France."),
    ("* item one\n* item two", "item one item two"),
    ("1. First, open the door.", "First, open the door."),
    ("### Summary", "Summary"),
    ("> quoted words", "quoted words"),
    ("I love it 😀🎉!", "I love it!"),
    ("Thumbs up 👍🏽 and a heart ❤️.", "Thumbs up and a heart."),
    ("Read [the docs](http://a.example/c) please.", "Read the docs please."),
    ("Go to https://example.com/x?y=1 now.", "Go to the link now."),
    ("Use `ls -l` to list, or ***really*** try.", "Use ls -l to list, or really try."),
    ("Cost: 5 * 3 = 15.", "Cost: 5 times 3 = 15."),
    ("C# and snake_case stay.", "C# and snake_case stay."),
    ("Hello, world.", "Hello, world."),
])
def test_written_text_becomes_speakable(written, spoken):
    assert speakable(written) == spoken


@pytest.mark.parametrize("nothing", ["-", "```python", "```", "👍", "**", "1.", "  \n "])
def test_a_piece_with_nothing_to_say_is_empty(nothing):
    assert speakable(nothing) == ""


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd"]) | st.sampled_from(" ,.?!'"), max_size=80))
def test_plain_prose_is_spoken_as_written(text):
    words = " ".join(text.split())
    if any(ch.isalnum() for ch in words) and not any(p in words for p in (" ,", " .", " ?", " !")):
        assert speakable(words) == words


@given(st.text(max_size=120))
def test_never_raises_and_never_leaves_markup(text):
    out = speakable(text)
    assert "**" not in out and "`" not in out and "\n" not in out
