"""A hung engine call ends its turn with an error; the same session goes on; the thread is accounted for."""

import threading
import time

import pytest
from support.engines import scripted_engines
from support.helpers import SENTENCES, EventCollector, Feeder, back_to_listening, count, utterance

from voicechat.core.events import ErrorEvent, ReplyDone
from voicechat.engines.scripted.base import FaultPlan
from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.engines.stuck_calls import STUCK_CALLS
from voicechat.session.manager import SessionLimits

CALL_TIMEOUT = 1.0
GRACE = 0.3
MARGIN = 2.0  # scheduling on a busy 2-core box


def replies(events) -> list[ReplyDone]:
    return [e for e in events if isinstance(e, ReplyDone)]


@pytest.mark.timeout(90)
def test_hung_llm_call_ends_the_turn_and_the_session_goes_on(make_manager):
    faults = FaultPlan(hang_on_call=1)
    llm = ScriptedLLM(faults=faults)
    manager = make_manager(
        scripted_engines(llm=llm), SessionLimits(join_timeout_s=1.0),
        llm_call_timeout_s=CALL_TIMEOUT, abort_grace_s=GRACE,
    )
    hung, healthy = manager.create("test"), manager.create("test")
    hung_events, healthy_events = EventCollector(hung.pipeline), EventCollector(healthy.pipeline)

    sent = time.monotonic()
    hung.pipeline.send_text("this call hangs")
    assert faults.hung.wait(10), "the scripted hang never started"

    # The other session is answered while the call hangs.
    healthy.pipeline.send_text("are you there?")
    answered = healthy_events.wait_for(count(ReplyDone), timeout=20)
    assert replies(answered)[0].text == scripted_reply("are you there?", 24)

    # The hung turn ends with a timeout error within the call timeout, and the session listens again.
    events = hung_events.wait_for(back_to_listening, timeout=CALL_TIMEOUT + MARGIN + 10)
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert time.monotonic() - sent < CALL_TIMEOUT + MARGIN
    assert (error.code, error.stage) == ("llm_timeout", "llm")
    assert "language model did not answer within 1 s" in error.message
    assert replies(events)[0].text == ""
    assert llm.breaker.stats().failures_total == 1  # a hang counts against the engine

    # The same session's next turn is answered normally.
    hung.pipeline.send_text("second try")
    events = hung_events.wait_for(count(ReplyDone, 2), timeout=20)
    assert replies(events)[-1].text == scripted_reply("second try", 24)
    assert [m.content for m in hung.pipeline.history.messages() if m.role == "user"] == ["second try"]

    # The call thread that ignored its abort is named and counted, not silently left.
    thread = f"llm-call-{hung.id[:8]}-1"
    assert STUCK_CALLS.wait_settled(GRACE + MARGIN)
    assert STUCK_CALLS.stuck_names(hung.id) == [thread]
    report = manager.close(hung.id, "test")
    assert report is not None and report.stuck_threads == [thread]  # the workers themselves stopped
    assert manager.stats.forced_terminations == 1

    # When the engine finally returns, the thread ends and counts as recovered.
    recovered = STUCK_CALLS.stats().recovered_total
    faults.release()
    stuck = next(t for t in threading.enumerate() if t.name == thread)
    stuck.join(10)
    assert not stuck.is_alive()
    assert STUCK_CALLS.stuck_names(hung.id) == []
    assert STUCK_CALLS.stats().recovered_total == recovered + 1

    # The other session keeps completing turns, by voice too.
    Feeder(healthy.pipeline).play(utterance(SENTENCES[4]))
    events = healthy_events.wait_for(count(ReplyDone, 2), timeout=30)
    assert replies(events)[-1].text == scripted_reply(SENTENCES[4], 24)


@pytest.mark.timeout(60)
def test_failing_engine_call_errors_its_turn_only(make_manager):
    llm = ScriptedLLM(faults=FaultPlan(fail_on_call=1))
    manager = make_manager(scripted_engines(llm=llm))
    session = manager.create("test")
    events = EventCollector(session.pipeline)
    session.pipeline.send_text("first")
    ev = events.wait_for(lambda ev: count(ErrorEvent)(ev) and count(ReplyDone)(ev))
    error = next(e for e in ev if isinstance(e, ErrorEvent))
    assert (error.code, error.stage) == ("llm_failed", "llm") and "failed on call 1" in error.message
    events.wait_for(back_to_listening)
    session.pipeline.send_text("second")
    ev = events.wait_for(count(ReplyDone, 2))
    assert replies(ev)[-1].text == scripted_reply("second", 24)
    assert manager.stats.forced_terminations == 0
