"""What the session tells the LLM about a reply's lead: the speech of the sentences written for it,
less what its listener has heard (the client's playback reports), nothing once the reply is over."""

from __future__ import annotations

import pytest
from support.engines import scripted_engines
from support.helpers import EventCollector, count, wait_until

from voicechat.core.events import ReplyDone
from voicechat.core.reply_tracker import DEFAULT_WORDS_PER_SECOND
from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.tts import ScriptedTTS

RATE = 16000


def test_the_llm_hears_how_far_the_reply_is_ahead_of_its_listener(make_manager):
    llm, tts = ScriptedLLM(reply_words=20), ScriptedTTS(sample_rate=RATE)
    manager = make_manager(scripted_engines(llm=llm, tts=tts), output_sample_rate=RATE, playback_reports=True)
    session = manager.create("test")
    collector = EventCollector(session.pipeline)
    session.pipeline.send_text("Tell me something.")
    done = next(e for e in collector.wait_for(count(ReplyDone), timeout=20) if isinstance(e, ReplyDone))
    lead = llm.leads[session.id]
    written_s = len(done.text.split()) / DEFAULT_WORDS_PER_SECOND
    assert written_s > 3.0
    assert lead() == pytest.approx(written_s)  # nothing heard yet
    session.pipeline.report_playback(done.generation, 2 * RATE)
    assert lead() == pytest.approx(written_s - 2.0)
    session.pipeline.report_playback(done.generation, done.total_samples, finished=True)
    wait_until(lambda: lead() == 0.0, 10, "the lead to drop")  # the reply is over: nothing is ahead
