"""The pure turn-taking state machine."""

from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.core.events import TurnState as S
from voicechat.core.turn_state import CancelReply, StartReply, TurnStateMachine


def spoken_turn(m: TurnStateMachine, text: str = "hi") -> StartReply:
    m.speech_started()
    m.speech_ended()
    t = m.transcript_final(text)
    (action,) = t.actions
    assert isinstance(action, StartReply)
    return action


def test_full_turn():
    m = TurnStateMachine()
    assert m.speech_started().state is S.USER_SPEAKING
    assert m.speech_ended().state is S.THINKING
    t = m.transcript_final("hello")
    assert t.actions == (StartReply(1, "hello"),) and t.state is S.THINKING
    assert m.audio_started(1).state is S.ASSISTANT_SPEAKING
    t = m.reply_finished(1)
    assert t.state is S.LISTENING and t.changed and not m.reply_active


def test_empty_transcript_returns_to_listening():
    m = TurnStateMachine()
    m.speech_started()
    m.speech_ended()
    t = m.transcript_final("")
    assert t.state is S.LISTENING and t.actions == ()


def test_barge_in_while_speaking_cancels_and_bumps_generation():
    m = TurnStateMachine()
    start = spoken_turn(m)
    m.audio_started(start.generation)
    t = m.speech_started()
    assert t.actions == (CancelReply(cancelled=1, generation=2),)
    assert t.state is S.USER_SPEAKING and m.generation == 2
    # leftovers of the cancelled reply are ignored
    assert m.audio_started(1).state is S.USER_SPEAKING
    assert m.reply_finished(1).state is S.USER_SPEAKING


def test_barge_in_while_thinking_also_cancels():
    m = TurnStateMachine()
    spoken_turn(m)
    t = m.speech_started()
    assert isinstance(t.actions[0], CancelReply)


def test_half_duplex_ignores_speech_and_its_transcript():
    m = TurnStateMachine(barge_in=False)
    start = spoken_turn(m)
    m.audio_started(start.generation)
    t = m.speech_started()
    assert t.actions == () and t.state is S.ASSISTANT_SPEAKING
    m.speech_ended()
    assert m.transcript_final("echo of the assistant").actions == ()
    assert m.reply_finished(start.generation).state is S.LISTENING


def test_late_final_of_an_earlier_utterance_is_merged_into_the_next_reply():
    m = TurnStateMachine()
    m.speech_started()
    m.speech_ended()
    m.speech_started()  # user goes on before the first final arrived
    assert m.transcript_final("tell me").actions == ()
    m.speech_ended()
    t = m.transcript_final("a story")
    assert t.actions == (StartReply(1, "tell me a story"),)


def test_typed_input_interrupts_and_answers():
    m = TurnStateMachine()
    start = spoken_turn(m)
    m.audio_started(start.generation)
    t = m.text_input("stop, what time is it?")
    assert t.actions == (CancelReply(cancelled=1, generation=2), StartReply(2, "stop, what time is it?"))
    assert m.generation == 2 and t.generation == 2, "the typed turn's number is its reply's"
    assert t.state is S.THINKING


def test_a_turn_and_its_reply_share_one_generation():
    """The user's events of a turn carry ``generation`` as it is while they speak: the reply's number."""
    m = TurnStateMachine()
    assert m.speech_started().generation == 1
    assert m.speech_ended().generation == 1
    assert m.transcript_final("hi").actions == (StartReply(1, "hi"),)
    m.audio_started(1)
    done = m.reply_finished(1)
    assert done.state is S.LISTENING and done.generation == m.generation == 2, "listening: the next turn's"
    # The next turn speaks as 2 and is answered as 2.
    assert m.speech_started().generation == 2
    m.speech_ended()
    assert m.transcript_final("again").actions == (StartReply(2, "again"),)
    # A barge-in cancels 2; the interrupting turn is 3, and so is its reply (no number is skipped).
    m.audio_started(2)
    t = m.speech_started()
    assert t.actions == (CancelReply(cancelled=2, generation=3),) and t.generation == 3
    m.speech_ended()
    assert m.transcript_final("stop").actions == (StartReply(3, "stop"),)


def test_an_utterance_without_words_leaves_its_number_to_the_next():
    m = TurnStateMachine()
    m.speech_started()
    m.speech_ended()
    assert m.transcript_final("").generation == 1
    m.speech_started()
    m.speech_ended()
    assert m.transcript_final("now").actions == (StartReply(1, "now"),)


def test_listener_leaving_cancels_the_reply_and_listens():
    m = TurnStateMachine()
    start = spoken_turn(m)
    m.audio_started(start.generation)
    t = m.listener_left()
    assert [type(a) for a in t.actions] == [CancelReply]
    assert t.actions[0].cancelled == start.generation and t.state is S.LISTENING and not m.reply_active
    assert not m.listener_left().actions  # nothing playing: nothing to cancel


inputs = st.lists(
    st.sampled_from(["start", "end", "final", "empty", "text", "audio", "finished", "stale", "left"]), max_size=50
)


@settings(max_examples=400, deadline=None)
@given(steps=inputs, barge_in=st.booleans())
def test_invariants_hold_for_any_input_sequence(steps, barge_in):
    m = TurnStateMachine(barge_in=barge_in)
    last_gen = 0
    started: set[int] = set()
    for step in steps:
        t = {
            "start": m.speech_started, "end": m.speech_ended,
            "final": lambda: m.transcript_final("words"), "empty": lambda: m.transcript_final(""),
            "text": lambda: m.text_input("typed"), "audio": lambda: m.audio_started(m.generation),
            "finished": lambda: m.reply_finished(m.generation), "stale": lambda: m.reply_finished(m.generation - 1),
            "left": m.listener_left,
        }[step]()
        assert m.generation >= last_gen  # generations never go back
        assert t.generation == m.generation  # a transition reports the generation after it
        for a in t.actions:
            if isinstance(a, CancelReply):
                assert barge_in or step in ("text", "left")
                assert a.generation == a.cancelled + 1 and a.generation > last_gen
        starts = [a for a in t.actions if isinstance(a, StartReply)]
        assert len(starts) <= 1
        if starts:
            assert m.reply_active and starts[0].generation == m.generation
            assert starts[0].generation not in started, "every reply gets a number no reply had"
            started.add(starts[0].generation)
        if not m.reply_active:
            assert m.generation not in started, "while idle, generation names the next reply"
        if m.state is S.ASSISTANT_SPEAKING:
            assert m.reply_active
        if m.state is S.LISTENING:
            assert not m.reply_active
        last_gen = m.generation
