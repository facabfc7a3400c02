"""Ten people at once: each transcript and reply derives only from its own audio."""


import pytest
from support.engines import scripted_engines
from support.helpers import SENTENCES, EventCollector, Feeder, count, utterance

from voicechat.core.events import AssistantTextDelta, FinalTranscript, ReplyDone
from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.engines.scripted.tts import ScriptedTTS
from voicechat.session.manager import SessionLimits


@pytest.mark.timeout(120)
def test_ten_concurrent_sessions_stay_isolated(make_manager):
    llm, tts = ScriptedLLM(token_s=0.005), ScriptedTTS(sample_rate=16000)
    manager = make_manager(scripted_engines(llm=llm, tts=tts), SessionLimits(max_sessions=10))
    sessions = [manager.create("test") for _ in SENTENCES[:10]]
    collectors = [EventCollector(s.pipeline) for s in sessions]
    feeders = [Feeder(s.pipeline) for s in sessions]
    threads = [
        f.play_in_background(utterance(text, before_s=0.2 + 0.05 * i))
        for i, (f, text) in enumerate(zip(feeders, SENTENCES[:10], strict=True))
    ]
    for t in threads:
        t.join(60)

    for session, collector, text in zip(sessions, collectors, SENTENCES[:10], strict=True):
        events = collector.wait_for(count(ReplyDone), timeout=60)
        finals = [e.text for e in events if isinstance(e, FinalTranscript)]
        assert finals == [text], f"session {session.id} heard {finals}"
        reply = "".join(e.text for e in events if isinstance(e, AssistantTextDelta))
        assert reply == scripted_reply(text, 24)
        # The shared model saw only this session's words under this session's id...
        prompts = llm.prompts[session.id]
        assert [m.content for m in prompts[-1] if m.role == "user"] == [text]
        # ...and the shared synthesizer spoke only this session's reply (after replies prepared in the user's
        # pauses and dropped when they went on: each to the words so far).
        spoken = " ".join(tts.texts[session.id])
        assert spoken.endswith(reply)
        for dropped in spoken[: len(spoken) - len(reply)].split("You said: ")[1:]:
            assert text.startswith(dropped.strip().rstrip(".")), f"session {session.id} synthesized {dropped!r}"
