"""The scripted engines: deterministic, content-derived, abortable, faultable."""

import threading

import numpy as np
import pytest
from support.helpers import SENTENCES, speech

from voicechat.core.history import ChatMessage
from voicechat.engines.protocols import EngineError, GenerationParams, VoiceSettings
from voicechat.engines.scripted.base import FaultPlan
from voicechat.engines.scripted.llm import ScriptedLLM, scripted_reply
from voicechat.engines.scripted.stt import ScriptedTranscriber
from voicechat.engines.scripted.tts import ScriptedTTS


@pytest.fixture(scope="module")
def transcriber() -> ScriptedTranscriber:
    return ScriptedTranscriber({t: speech(t) for t in SENTENCES[:5]})


def test_transcript_is_derived_from_the_audio(transcriber):
    for text in SENTENCES[:5]:
        padded = np.concatenate([np.zeros(5000, np.int16), speech(text), np.zeros(9000, np.int16)])
        assert transcriber.transcribe(padded, session_id="s", final=True) == text


def test_partial_audio_gives_the_words_spoken_so_far(transcriber):
    audio = speech(SENTENCES[1])
    words = transcriber.transcribe(audio[: len(audio) // 2], session_id="s", final=False).split()
    full = SENTENCES[1].split()
    assert 0 < len(words) < len(full) and words == full[: len(words)]


def test_unknown_audio_gets_a_stable_fingerprint(transcriber):
    unknown = speech(SENTENCES[7])
    a = transcriber.transcribe(unknown, session_id="s", final=True)
    assert a.startswith("unrecognised speech ")
    assert transcriber.transcribe(unknown, session_id="t", final=True) == a
    assert transcriber.transcribe(speech(SENTENCES[8]), session_id="s", final=True) != a
    assert transcriber.transcribe(np.zeros(16000, np.int16), session_id="s", final=True) == ""


def test_llm_streams_the_scripted_reply_and_aborts_at_once():
    llm = ScriptedLLM(token_s=10.0)  # a token every 10 s: only abort can end it quickly
    msgs = [ChatMessage("user", "hello")]
    stream = llm.stream("s1", msgs, GenerationParams())
    assert next(stream) == "You"
    threading.Timer(0.05, llm.abort, args=("s1",)).start()
    assert list(stream) == []  # ended by the abort, long before the next token
    assert llm.abort_calls == ["s1"]
    assert "".join(ScriptedLLM().stream("s2", msgs, GenerationParams())) == scripted_reply("hello", 24)


def test_llm_discard_ends_the_stream_and_is_recorded_apart_from_aborts():
    llm = ScriptedLLM(token_s=10.0)
    stream = llm.stream("s1", [ChatMessage("user", "hello")], GenerationParams())
    assert next(stream) == "You"
    threading.Timer(0.05, llm.discard, args=("s1",)).start()
    assert list(stream) == []
    llm.discard("idle")  # nothing running: recorded, harmless
    assert llm.discard_calls == ["s1", "idle"] and llm.abort_calls == []


def test_llm_respects_max_tokens_and_fails_on_the_chosen_call():
    llm = ScriptedLLM(faults=FaultPlan(fail_on_call=2))
    msgs = [ChatMessage("user", "hi")]
    assert len(list(llm.stream("a", msgs, GenerationParams(max_tokens=5)))) == 5
    with pytest.raises(EngineError, match="call 2"):
        list(llm.stream("b", msgs, GenerationParams()))
    assert len(list(llm.stream("c", msgs, GenerationParams()))) == 24


def test_tts_is_deterministic_and_abort_stops_within_one_chunk():
    tts = ScriptedTTS(sample_rate=16000, chunk_s=10.0, seconds_per_word=1.0)
    first = b"".join(ScriptedTTS(sample_rate=16000).synthesize("x", "same words", VoiceSettings()))
    again = b"".join(ScriptedTTS(sample_rate=16000).synthesize("y", "same words", VoiceSettings()))
    assert first == again and len(first) > 0
    chunks = tts.synthesize("s", "one two three four", VoiceSettings())
    assert len(next(chunks)) == 2 * tts.chunk_samples
    threading.Timer(0.05, tts.abort, args=("s",)).start()
    assert list(chunks) == []


def test_hang_blocks_until_released():
    faults = FaultPlan(hang_on_call=1)
    llm = ScriptedLLM(faults=faults)
    done = threading.Event()
    t = threading.Thread(target=lambda: (list(llm.stream("s", [], GenerationParams())), done.set()))
    t.start()
    assert faults.hung.wait(5)
    llm.abort("s")  # a hang ignores abort, like a stuck native call
    assert not done.wait(0.2)
    faults.release()
    assert done.wait(5)
    t.join(5)


def test_a_long_scripted_run_keeps_bounded_records_and_a_closed_session_no_lead():
    from voicechat.engines.scripted.base import KEPT_SESSIONS

    llm = ScriptedLLM(reply_words=4)
    params = GenerationParams(max_tokens=8)
    for i in range(KEPT_SESSIONS + 10):
        list(llm.stream(f"s{i}", [ChatMessage("user", "hi")], params, lead=lambda: 0.0))
        llm.release(f"s{i}")
    assert len(llm.prompts) == KEPT_SESSIONS and "s0" not in llm.prompts and f"s{KEPT_SESSIONS + 9}" in llm.prompts
    assert llm.leads == {}  # a lead holds its session's objects: released with the session
    list(llm.stream("open", [ChatMessage("user", "hi")], params, lead=lambda: 1.5))
    assert llm.leads["open"]() == 1.5
