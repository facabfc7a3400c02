"""Conversation history budget."""

from voicechat.core.history import MESSAGE_OVERHEAD_TOKENS, ChatMessage, ConversationHistory


def words(n: int) -> str:
    return " ".join(["word"] * n)


def one_token_per_word(text: str) -> int:
    return len(text.split())


def test_system_prompt_first_and_turns_in_order():
    h = ConversationHistory("sys", 1000, one_token_per_word)
    h.add_user("hi")
    h.add_assistant("hello")
    assert [(m.role, m.content) for m in h.messages()] == [("system", "sys"), ("user", "hi"), ("assistant", "hello")]


def test_oldest_turns_trimmed_first_system_kept():
    h = ConversationHistory("system prompt", 60, one_token_per_word)
    for i in range(10):
        h.add_user(f"question {i} " + words(5))
        h.add_assistant(f"answer {i} " + words(5))
    msgs = h.messages()
    assert msgs[0].role == "system"
    assert h.token_count() <= 60
    assert msgs[-1].content.startswith("answer 9")
    assert msgs[1].role == "user"  # never starts with an orphan assistant message
    assert h.trimmed_messages > 0
    kept = [m.content.split()[1] for m in msgs[1:]]
    assert kept == sorted(kept)  # a contiguous suffix of the conversation


def test_newest_message_is_kept_even_if_over_budget():
    h = ConversationHistory("s", 10, one_token_per_word)
    h.add_user(words(50))
    assert h.messages()[-1].content == words(50)


def test_consecutive_user_messages_merge_and_empty_is_ignored():
    h = ConversationHistory("", 100, one_token_per_word)
    h.add_user("tell me")
    h.add_assistant("   ")
    h.add_user("a story")
    assert [(m.role, m.content) for m in h.messages()] == [("user", "tell me a story")]


def test_token_count_includes_overhead_and_clear_keeps_system():
    h = ConversationHistory("a b", 100, one_token_per_word)
    h.add_user("c")
    assert h.token_count() == 3 + 2 * MESSAGE_OVERHEAD_TOKENS
    h.clear()
    assert [m.role for m in h.messages()] == ["system"]


def test_discard_last_user_only_drops_an_unanswered_question():
    h = ConversationHistory("", 100, one_token_per_word)
    h.add_user("q1")
    h.add_assistant("a1")
    h.discard_last_user()
    assert [m.content for m in h.messages()] == ["q1", "a1"]
    h.add_user("q2")
    h.discard_last_user()
    assert [m.content for m in h.messages()] == ["q1", "a1"]


def test_messages_with_user_are_the_messages_add_user_would_leave() -> None:
    for turns in ([], ["hello"], ["hello", "hi there"]):
        history = ConversationHistory("sys", max_tokens=1000)
        for i, text in enumerate(turns):
            (history.add_user if i % 2 == 0 else history.add_assistant)(text)
        before = history.messages()
        preview = history.messages_with_user("  and the date?  ")
        assert history.messages() == before  # nothing added
        history.add_user("and the date?")
        assert preview == history.messages()
    assert ConversationHistory("sys", max_tokens=1000).messages_with_user("  ") == [ChatMessage("system", "sys")]


def test_the_example_exchange_follows_the_system_prompt_and_is_never_trimmed_or_a_turn():
    h = ConversationHistory("sys", 40, one_token_per_word, examples=["q?", "a."])
    for i in range(10):
        h.add_user(f"question {i} " + words(5))
        h.add_assistant(f"answer {i} " + words(5))
    msgs = h.messages()
    assert [(m.role, m.content) for m in msgs[:3]] == [("system", "sys"), ("user", "q?"), ("assistant", "a.")]
    assert msgs[-1].content.startswith("answer 9") and h.token_count() <= 40
    assert all(m.content not in ("q?", "a.") for m in h.turns)  # not the user's conversation
    h.clear()
    assert [m.content for m in h.messages()] == ["sys", "q?", "a."]


def test_examples_come_in_pairs():
    import pytest

    with pytest.raises(ValueError, match="pairs"):
        ConversationHistory("sys", 40, examples=["a question without its answer"])
