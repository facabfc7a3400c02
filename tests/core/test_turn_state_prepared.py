"""Replies prepared inside a pause of the user's turn (pure turn-taking rules)."""

from voicechat.core.events import TurnState as S
from voicechat.core.turn_state import (
    CancelReply,
    ConfirmReply,
    DiscardReply,
    PrepareReply,
    StartReply,
    TurnStateMachine,
)


def paused(m: TurnStateMachine, text: str) -> PrepareReply:
    m.speech_started()
    t = m.transcript_early(text)
    (action,) = t.actions
    assert isinstance(action, PrepareReply) and not t.changed and t.state is S.USER_SPEAKING
    return action


def test_a_turn_that_ends_with_the_prepared_words_confirms_the_reply():
    m = TurnStateMachine()
    assert paused(m, "what time is it?") == PrepareReply(1, "what time is it?")
    assert not m.reply_active
    m.speech_ended()
    t = m.transcript_final("what time is it?")
    assert t.actions == (ConfirmReply(1, "what time is it?"),) and t.state is S.THINKING
    assert m.reply_active and m.prepared is None
    assert m.audio_started(1).state is S.ASSISTANT_SPEAKING
    assert m.reply_finished(1).state is S.LISTENING and m.generation == 2


def test_speech_after_the_pause_discards_and_the_generation_stays():
    m = TurnStateMachine()
    paused(m, "I would like to")
    t = m.speech_resumed()
    assert t.actions == (DiscardReply(1),) and t.state is S.USER_SPEAKING and m.generation == 1
    m.speech_ended()
    t = m.transcript_final("I would like to order a pizza.")
    assert t.actions == (StartReply(1, "I would like to order a pizza."),)


def test_other_final_words_discard_then_start_a_fresh_reply():
    m = TurnStateMachine()
    paused(m, "I would like to")
    m.speech_ended()
    t = m.transcript_final("I would like two")
    assert t.actions == (DiscardReply(1), StartReply(1, "I would like two"))
    assert m.reply_active and m.prepared is None


def test_new_pause_words_replace_the_prepared_reply_and_same_words_do_nothing():
    m = TurnStateMachine()
    paused(m, "tell me")
    assert m.transcript_early("tell me").actions == ()
    t = m.transcript_early("tell me a joke")
    assert t.actions == (DiscardReply(1), PrepareReply(1, "tell me a joke"))
    assert m.transcript_early("").actions == (DiscardReply(1),) and m.prepared is None


def test_a_new_utterance_discards_a_prepared_reply():
    m = TurnStateMachine()
    paused(m, "hello")
    t = m.speech_started()
    assert t.actions == (DiscardReply(1),) and t.state is S.USER_SPEAKING


def test_typed_input_and_a_leaving_listener_discard_it():
    m = TurnStateMachine()
    paused(m, "hello")
    t = m.text_input("typed")
    assert t.actions == (DiscardReply(1), StartReply(1, "typed"))
    m2 = TurnStateMachine()
    paused(m2, "hello")
    assert m2.listener_left().actions == (DiscardReply(1),)


def test_nothing_is_prepared_while_a_reply_is_active_or_outside_the_users_turn():
    m = TurnStateMachine()
    assert m.transcript_early("too early").actions == ()  # listening: no turn in progress
    m.speech_started()
    m.speech_ended()
    m.transcript_final("first")
    assert m.transcript_early("thinking").actions == ()
    half = TurnStateMachine(barge_in=False)
    half.speech_started()
    half.speech_ended()
    half.transcript_final("first")
    half.speech_started()  # ignored: the reply plays
    assert half.transcript_early("over the reply").actions == ()


def test_a_prepared_reply_follows_earlier_utterances_of_the_same_turn():
    m = TurnStateMachine()
    m.speech_started()
    m.speech_ended()
    m.speech_started()  # the user went on before the first utterance's transcript
    assert m.transcript_final("I want").actions == ()
    t = m.transcript_early("a pizza")
    assert t.actions == (PrepareReply(1, "I want a pizza"),)
    m.speech_ended()
    assert m.transcript_final("a pizza").actions == (ConfirmReply(1, "I want a pizza"),)


def test_barge_in_still_cancels_after_a_confirmed_reply():
    m = TurnStateMachine()
    paused(m, "hi")
    m.speech_ended()
    m.transcript_final("hi")
    t = m.speech_started()
    assert t.actions == (CancelReply(1, 2),)
