"""A hung engine call: its session is force-closed; the others go on."""

import time

import pytest
from conftest import scripted_engines
from helpers import SENTENCES, EventCollector, Feeder, back_to_listening, count, utterance

from voicechat.engines.scripted_base import FaultPlan
from voicechat.engines.scripted_llm import ScriptedLLM, scripted_reply
from voicechat.events import ReplyDone
from voicechat.session_manager import SessionLimits

JOIN_TIMEOUT = 1.0
MARGIN = 2.0  # RealtimeSTT's own shutdown plus scheduling on a busy 2-core box


@pytest.mark.timeout(90)
def test_hung_llm_call_is_abandoned_and_reported(make_manager):
    faults = FaultPlan(hang_on_call=1)
    llm = ScriptedLLM(faults=faults)
    manager = make_manager(scripted_engines(llm=llm), SessionLimits(join_timeout_s=JOIN_TIMEOUT))
    stuck, healthy = manager.create("test"), manager.create("test")
    healthy_events = EventCollector(healthy.pipeline)

    stuck.pipeline.send_text("this call hangs")
    assert faults.hung.wait(10), "the scripted hang never started"

    healthy.pipeline.send_text("are you there?")
    healthy_events.wait_for(count(ReplyDone), timeout=20)

    started = time.monotonic()
    report = manager.close(stuck.id, "test")
    elapsed = time.monotonic() - started
    assert elapsed < JOIN_TIMEOUT + MARGIN
    assert report is not None and report.stuck_threads == [f"llm-{stuck.id[:8]}"]
    assert manager.stats.forced_terminations == 1
    assert manager.get(stuck.id) is None

    # The other session keeps completing turns, by voice too.
    Feeder(healthy.pipeline).play(utterance(SENTENCES[4]))
    events = healthy_events.wait_for(count(ReplyDone, 2), timeout=30)
    assert [e for e in events if isinstance(e, ReplyDone)][-1].text == scripted_reply(SENTENCES[4], 24)


@pytest.mark.timeout(60)
def test_failing_engine_call_errors_its_turn_only(make_manager):
    from voicechat.events import ErrorEvent

    llm = ScriptedLLM(faults=FaultPlan(fail_on_call=1))
    manager = make_manager(scripted_engines(llm=llm))
    session = manager.create("test")
    events = EventCollector(session.pipeline)
    session.pipeline.send_text("first")
    ev = events.wait_for(lambda ev: count(ErrorEvent)(ev) and count(ReplyDone)(ev))
    error = next(e for e in ev if isinstance(e, ErrorEvent))
    assert error.stage == "llm" and "failed on call 1" in error.message
    events.wait_for(back_to_listening)
    session.pipeline.send_text("second")
    ev = events.wait_for(count(ReplyDone, 2))
    assert [e for e in ev if isinstance(e, ReplyDone)][-1].text == scripted_reply("second", 24)
