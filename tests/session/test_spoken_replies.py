"""Replies for the ear: the voice gets plain sentences, and a looping reply is cut short and aborted."""

from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import pytest
from support.engines import scripted_engines
from support.helpers import EventCollector, count

from voicechat.core.events import AssistantTextDelta, ReplyDone
from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import GenerationParams
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.tts import ScriptedTTS


class WrittenLLM(ScriptedLLM):
    """Streams one fixed written reply, word by word (as a real model's tokens would come)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def stream(
        self, session_id: str, messages: Sequence[ChatMessage], params: GenerationParams, on_end_of_message=None,
        lead=None,
    ) -> Iterator[str]:
        if on_end_of_message is not None:
            on_end_of_message(None)  # a fixed reply: nothing to say about the user's words
        pieces = self.text.split(" ")
        return self._paced(session_id, lambda: (p if i == 0 else " " + p for i, p in enumerate(pieces)))


def reply_to(make_manager, text: str, **options) -> tuple[list[str], list, WrittenLLM, str]:
    llm, tts = WrittenLLM(text), ScriptedTTS(sample_rate=16000)
    manager = make_manager(engines=scripted_engines(llm=llm, tts=tts), output_sample_rate=16000, **options)
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.send_text("Tell me something.")
    events = collector.wait_for(count(ReplyDone), timeout=20)
    return tts.texts.get(session.id, []), events, llm, session.id


@pytest.mark.timeout(30)
def test_markdown_and_emoji_are_shown_but_not_spoken(make_manager):
    written = "Here you go:\n- **Paris** is in France 🇫🇷.\n- Rome is in Italy.\n\nSee https://example.com for more."
    spoken, events, _, _ = reply_to(make_manager, written)
    assert spoken == ["Here you go:", "Paris is in France.", "Rome is in Italy.", "See the link for more."]
    shown = "".join(e.text for e in events if isinstance(e, AssistantTextDelta))
    assert shown == written


@pytest.mark.timeout(30)
def test_a_looping_reply_stops_and_the_model_is_aborted(make_manager):
    loop = "This is a joke, but it is a good one. " * 6 + "Never reached."
    spoken, events, llm, session_id = reply_to(make_manager, loop.strip())
    assert spoken == ["This is a joke,", "but it is a good one."]
    assert session_id in llm.abort_calls
    done = next(e for e in events if isinstance(e, ReplyDone))
    assert done.text == "This is a joke, but it is a good one."


@pytest.mark.timeout(30)
def test_the_sentence_cap_ends_a_long_reply(make_manager):
    long = " ".join(f"Sentence number {n} is here." for n in range(1, 9))
    spoken, _, llm, session_id = reply_to(make_manager, long, max_spoken_sentences=3)
    assert spoken == ["Sentence number 1 is here.", "Sentence number 2 is here.", "Sentence number 3 is here."]
    assert session_id in llm.abort_calls


class BusyLLM(WrittenLLM):
    """A written reply from a model that reports ``replies`` other replies in its hands."""

    def __init__(self, text: str, replies: int) -> None:
        super().__init__(text)
        self.replies = replies

    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(replies=self.replies)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("others", "first"), [
    (0, "The tallest mountain"), (2, "The tallest mountain in the world is Mount Everest")])
def test_the_first_piece_waits_one_more_word_while_other_replies_share_the_model(make_manager, others, first):
    """Alone, the first piece ends before a phrase opener after ``first_phrase_words`` (3); beside other replies
    it needs one word more (one phrase opener later here), so the rest of the sentence is not left behind."""
    llm = BusyLLM("The tallest mountain in the world is Mount Everest in Nepal.", others)
    tts = ScriptedTTS(sample_rate=16000)
    manager = make_manager(engines=scripted_engines(llm=llm, tts=tts), output_sample_rate=16000,
                           first_phrase_words=3)
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.send_text("What is the tallest mountain?")
    collector.wait_for(count(ReplyDone), timeout=20)
    assert tts.texts[session.id][0] == first


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("wait_s", "first"), [
    (0.0, "The moon is approximately 2,173.65 miles away"), (0.005, "The moon is")])
def test_a_first_piece_with_no_boundary_in_sight_is_cut_at_its_last_whole_word_once_it_waited(
        make_manager, wait_s, first):
    """A number's digits hold back the first phrase opener ("from"); with ``first_phrase_wait_s`` the first
    piece goes at its last whole word once that long has passed since the first token (each token here comes
    20 ms after the one before it, so any wait under that is up by the second word)."""
    llm = WrittenLLM("The moon is approximately 2,173.65 miles away from Earth.")
    llm.step_s = 0.02
    tts = ScriptedTTS(sample_rate=16000)
    manager = make_manager(engines=scripted_engines(llm=llm, tts=tts), output_sample_rate=16000,
                           first_phrase_words=3, first_phrase_wait_s=wait_s)
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.send_text("How far away is the moon?")
    collector.wait_for(count(ReplyDone), timeout=20)
    assert tts.texts[session.id][0] == first
    assert " ".join(tts.texts[session.id]) == "The moon is approximately 2,173.65 miles away from Earth."
