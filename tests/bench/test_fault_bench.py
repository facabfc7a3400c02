"""`bench faults` in miniature: counts add up, the faulting session recovers, the others are served."""

from __future__ import annotations

import pytest

from voicechat.bench.faults import Delays, run_mode
from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k, with_silence


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mode", "code"), [("none", None), ("stt-hang", "stt_timeout"), ("tts-fail", "tts_failed")])
def test_fault_bench_mode(mode: str, code: str | None) -> None:
    audio = [with_silence(speech_16k(t), 0.3, 0.8) for t in SAMPLE_SENTENCES[:3]]
    result = run_mode(mode, sessions=3, rounds=2, timeout_s=1.0, delays=Delays(llm_token_s=0.01), audio=audio)
    if code is None:
        assert result.faults_injected == 0 and result.fault_errors == {} and result.faulty_turns_ok == 2
    else:
        assert result.faults_injected == 1 and result.fault_errors == {code: 1}
        assert result.faulty_turns_ok == 1  # the turn after the fault went normally
    assert result.other_turns_ok == result.other_turns == 4
    assert len(result.v2v_s) == 4 and all(0 < s < 5 for s in result.v2v_s)
