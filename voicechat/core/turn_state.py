"""The turn-taking state machine: pure logic, no threads, no I/O.

Inputs are what the recognizer, the LLM/TTS stages and the player observe;
outputs are a new state plus *actions* the owner (SpeechPipelineManager) must
carry out. Keeping this pure makes every barge-in corner case a unit test.

Generation ids: ``generation`` numbers the turn. While a reply is active it
names that reply, the only one allowed to produce output; otherwise it names
the reply the next user input will get. So the user's events of a turn and the
reply that answers them carry the same number. It moves on by one when a reply
ends: played out (``reply_finished``) or interrupted (a barge-in, typed input,
the listener leaving; the interrupted reply becomes stale at once). Starting a
reply does not move it. Generations start at 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voicechat.core.events import TurnState


@dataclass(frozen=True, slots=True)
class StartReply:
    """Generate and speak a reply to ``user_text`` as generation ``generation``."""

    generation: int
    user_text: str


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Barge-in: abort LLM+TTS of ``cancelled``, flush output, tell the client."""

    cancelled: int
    generation: int


@dataclass(frozen=True, slots=True)
class PrepareReply:
    """Start generating a reply to ``user_text`` as ``generation`` but hold all of its output.

    The user is silent mid-turn and may go on: the reply is confirmed (``ConfirmReply``) when the
    turn ends with these words, or dropped (``DiscardReply``) without a trace in the history.
    """

    generation: int
    user_text: str


@dataclass(frozen=True, slots=True)
class ConfirmReply:
    """The turn ended as prepared: ``user_text`` joins the history and the held reply goes out."""

    generation: int
    user_text: str


@dataclass(frozen=True, slots=True)
class DiscardReply:
    """The prepared reply ``generation`` will not be used: stop it; nothing of it was sent."""

    generation: int


Action = StartReply | CancelReply | PrepareReply | ConfirmReply | DiscardReply


@dataclass(frozen=True, slots=True)
class Transition:
    previous: TurnState
    state: TurnState
    generation: int
    actions: tuple[Action, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.previous is not self.state


class TurnStateMachine:
    """Listening -> user speaking -> thinking -> assistant speaking -> listening.

    ``barge_in=False`` gives half-duplex behaviour: speech while the assistant
    talks is ignored (and so is its transcript).

    A reply may be *prepared* while the user is still speaking (silent mid-turn, with a
    transcript made inside the silence): it is not active, the state does not change, and
    only a final transcript with the same words turns it into the active reply.
    """

    def __init__(self, barge_in: bool = True) -> None:
        self.barge_in = barge_in
        self.state = TurnState.LISTENING
        self.generation = 1  # no reply active: the generation of the first reply
        self.reply_active = False
        self._pending_text = ""
        self._ignore_next_final = False
        self.prepared: str | None = None  # the user text of a prepared (held) reply

    # -- inputs ----------------------------------------------------------------
    def speech_started(self) -> Transition:
        prev = self.state
        discarded = self._discard()
        if discarded:
            self.state = TurnState.USER_SPEAKING
            return Transition(prev, self.state, self.generation, discarded)
        if self.reply_active:
            if not self.barge_in:
                self._ignore_next_final = True
                return self._stay(prev)
            cancel = self._cancel()
            self.state = TurnState.USER_SPEAKING
            return Transition(prev, self.state, self.generation, (cancel,))
        self.state = TurnState.USER_SPEAKING
        return Transition(prev, self.state, self.generation)

    def speech_ended(self) -> Transition:
        prev = self.state
        if self.state is TurnState.USER_SPEAKING:
            self.state = TurnState.THINKING
        return Transition(prev, self.state, self.generation)

    def transcript_early(self, text: str) -> Transition:
        """A transcript made inside a pause of the user's turn: the turn may end with these words.

        Prepares a reply to everything the user said this turn, unless a reply is active
        (half-duplex) or the same words are prepared already; other words replace the
        prepared reply.
        """
        prev = self.state
        if self.state is not TurnState.USER_SPEAKING or self.reply_active or self._ignore_next_final:
            return self._stay(prev)
        full = _join(self._pending_text, text)
        if full == self.prepared:
            return self._stay(prev)
        actions: list[Action] = list(self._discard())
        if full:
            self.prepared = full
            actions.append(PrepareReply(self.generation, full))
        return Transition(prev, self.state, self.generation, tuple(actions))

    def speech_resumed(self) -> Transition:
        """The user spoke again after a pause, in the same utterance: a prepared reply is dropped."""
        return Transition(self.state, self.state, self.generation, self._discard())

    def transcript_final(self, text: str) -> Transition:
        """A final transcript arrived (possibly for an utterance that ended earlier)."""
        prev = self.state
        if self._ignore_next_final:
            self._ignore_next_final = False
            return self._settle(prev)
        self._pending_text = _join(self._pending_text, text)
        if self.state is TurnState.USER_SPEAKING or self.reply_active:
            # The user is still talking (or a half-duplex reply plays): keep the
            # text and answer everything together when they stop.
            return self._stay(prev)
        return self._start_or_settle(prev)

    def text_input(self, text: str) -> Transition:
        """Typed input: interrupts any reply and is answered at once."""
        prev = self.state
        actions: list[Action] = list(self._discard())
        if self.reply_active:
            actions.append(self._cancel())
        self._pending_text = _join(self._pending_text, text)
        t = self._start_or_settle(prev)
        return Transition(prev, t.state, t.generation, (*actions, *t.actions))

    def audio_started(self, generation: int) -> Transition:
        prev = self.state
        if generation == self.generation and self.reply_active and self.state is TurnState.THINKING:
            self.state = TurnState.ASSISTANT_SPEAKING
        return Transition(prev, self.state, self.generation)

    def reply_finished(self, generation: int) -> Transition:
        """The reply's audio has finished playing (or it produced none)."""
        prev = self.state
        if generation != self.generation or not self.reply_active:
            return self._stay(prev)
        self.reply_active = False
        self.generation += 1  # the next turn's
        if self._pending_text and self.state is not TurnState.USER_SPEAKING:
            return self._start_or_settle(prev)  # half-duplex: answer what was said meanwhile
        if self.state in (TurnState.THINKING, TurnState.ASSISTANT_SPEAKING):
            self.state = TurnState.LISTENING
        return Transition(prev, self.state, self.generation)

    def listener_left(self) -> Transition:
        """The client went away: a reply nobody can hear ends here, like a barge-in."""
        prev = self.state
        discarded = self._discard()
        if not self.reply_active:
            return Transition(prev, self.state, self.generation, discarded)
        cancel = self._cancel()
        self.state = TurnState.LISTENING
        return Transition(prev, self.state, self.generation, (cancel,))

    # -- helpers ---------------------------------------------------------------
    def _discard(self) -> tuple[Action, ...]:
        """Drop the prepared reply, if any (it had the generation the next reply gets)."""
        if self.prepared is None:
            return ()
        self.prepared = None
        return (DiscardReply(self.generation),)

    def _cancel(self) -> CancelReply:
        cancelled = self.generation
        self.generation += 1
        self.reply_active = False
        return CancelReply(cancelled=cancelled, generation=self.generation)

    def _start_or_settle(self, prev: TurnState) -> Transition:
        """Answer the pending text as ``generation`` (no reply is active: no reply had that number yet):
        with the reply prepared for exactly these words, or a new one (a prepared reply to others is dropped)."""
        if not self._pending_text:
            discarded = self._discard()
            t = self._settle(prev)
            return Transition(prev, t.state, t.generation, discarded)
        assert not self.reply_active
        self.reply_active = True
        text, self._pending_text = self._pending_text, ""
        self.state = TurnState.THINKING
        if text == self.prepared:
            self.prepared = None
            actions: tuple[Action, ...] = (ConfirmReply(self.generation, text),)
        else:
            actions = (*self._discard(), StartReply(self.generation, text))
        return Transition(prev, self.state, self.generation, actions)

    def _settle(self, prev: TurnState) -> Transition:
        """Nothing to answer: go back to listening unless someone is talking."""
        if not self.reply_active and self.state is TurnState.THINKING:
            self.state = TurnState.LISTENING
        return Transition(prev, self.state, self.generation)

    def _stay(self, prev: TurnState) -> Transition:
        return Transition(prev, self.state, self.generation)


def _join(a: str, b: str) -> str:
    b = b.strip()
    if not a:
        return b
    return f"{a} {b}" if b else a
