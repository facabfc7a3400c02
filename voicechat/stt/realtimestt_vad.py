"""How our recorders drive RealtimeSTT's voice activity detection.

Two changes to RealtimeSTT's recording loop, both for latency, both limited to
recorders that opt in through ``attach()`` (every recorder we build does):

* **Onset on the same chunk, in the same thread.** RealtimeSTT checks a chunk
  for speech by starting a new thread that runs Silero, and reads the verdict
  when the *next* chunk arrives: 32 ms late, plus a thread start per chunk of
  speech while it listens. Here the check runs in the recording thread from the
  ``on_recorded_chunk`` hook, before the loop asks whether voice is active, so
  the chunk that confirms speech starts the recording (and a barge-in).
* **The end of speech on the audio's clock.** The loop's silence timer starts
  when Silero notices the silence; ``EndOfSpeech`` dates the silence from the
  last voiced frame instead and counts it in samples, and the timer's start is
  moved to match on every chunk (see ``voicechat/stt/endpointing.py``).
* **The end on the 20 ms frame, not the 32 ms chunk.** Once Silero has said
  silence, the feeding thread hands over the partial chunk it holds (RealtimeSTT's
  ``flush_audio_input``) on the frame that completes the silence
  (``flush_if_silence_complete``); that short chunk is judged by the level alone,
  since Silero takes only whole chunks.

RealtimeSTT's ``recording`` module imports these functions by name, so they
are replaced there; recorders without our state attached behave as before.
"""

from __future__ import annotations

import time
from typing import Any

from RealtimeSTT.core import recording as _rt_recording
from RealtimeSTT.core.voice_activity import is_silero_speech, is_webrtc_speech, reset_silero_vad_state

from voicechat.stt.endpointing import SAMPLE_RATE, EndOfSpeech

_ATTR = "voicechat_end_of_speech"
_FLUSHED = "voicechat_flushed_at"
SILERO_CHUNK_BYTES = 1024  # 512 samples: the only size Silero takes at 16 kHz
SILERO_CHUNK_S = SILERO_CHUNK_BYTES // 2 / SAMPLE_RATE  # 32 ms: what the recorder's queue holds per item
_original_check_voice_activity = _rt_recording.check_voice_activity
_original_is_silero_speech = _rt_recording.is_silero_speech


def attach(recorder: Any, end_of_speech: EndOfSpeech) -> None:
    """Opt ``recorder`` in; pass ``on_chunk`` as its ``on_recorded_chunk`` too."""
    setattr(recorder, _ATTR, end_of_speech)


def _attached(recorder: Any) -> EndOfSpeech | None:
    return getattr(recorder, _ATTR, None)


def on_chunk(recorder: Any, data: bytes) -> None:
    """Every chunk, first: while recording, its level; while listening, whether speech starts in it."""
    end_of_speech = _attached(recorder)
    if recorder.is_recording:
        if end_of_speech is not None:
            end_of_speech.hear(data)
        return
    if end_of_speech is not None:
        end_of_speech.pass_over(len(data) // 2)
    if not recorder.start_recording_on_voice_activity or len(data) < SILERO_CHUNK_BYTES:
        return  # a short chunk is the tail of a turn just ended; the next whole one is checked
    was_active = recorder.is_webrtc_speech_active
    is_webrtc_speech(recorder, data)
    if recorder.is_webrtc_speech_active:
        if not was_active:
            reset_silero_vad_state(recorder)  # fresh state for a new burst, as RealtimeSTT does
        is_silero_speech(recorder, data)  # sets recorder.is_silero_speech_active


def speech_started(recorder: Any) -> None:
    """``on_recording_start``: a new utterance, with the pre-roll the recorder still holds as the room's sound."""
    end_of_speech = _attached(recorder)
    if end_of_speech is not None:
        end_of_speech.speech_started(b"".join(recorder.audio_buffer))


def silence_started(recorder: Any) -> None:
    """``on_turn_detection_start``: date the silence just noticed from the end of the sound."""
    end_of_speech = _attached(recorder)
    if end_of_speech is not None:
        _date_silence(recorder, end_of_speech.silence_s)


def flush_if_silence_complete(recorder: Any, fed_samples: int, post_speech_silence_s: float) -> bool:
    """From the feeding thread, after each frame: pass on the partial chunk if it completes the silence.

    ``fed_samples`` counts every sample fed since the recorder started. At
    most one flush per decision of the recording thread, so a run of short
    chunks never replaces Silero while it has not judged the newer audio.
    """
    end_of_speech = _attached(recorder)
    if end_of_speech is None or not recorder.is_recording or not getattr(recorder, "buffer", None):
        return False
    silence, decided_at = end_of_speech.silence_at(fed_samples)
    if silence is None or silence < post_speech_silence_s or getattr(recorder, _FLUSHED, -1) == decided_at:
        return False
    setattr(recorder, _FLUSHED, decided_at)
    return bool(recorder.flush_audio_input())


def _check_voice_activity(recorder: Any, data: bytes, thread_factory: Any = None) -> None:
    if _attached(recorder) is None:
        _original_check_voice_activity(recorder, data, thread_factory)
    # else: on_chunk already checked this chunk


def _deactivity_check(recorder: Any, data: bytes, *args: Any, **kwargs: Any) -> bool:
    end_of_speech = _attached(recorder)
    if end_of_speech is None:
        return bool(_original_is_silero_speech(recorder, data, *args, **kwargs))
    if len(data) < SILERO_CHUNK_BYTES:  # flushed by flush_if_silence_complete; on_chunk has heard it
        silence = end_of_speech.decide_without_model(len(data) // 2)
        is_speech = silence is None
    else:
        is_speech = bool(_original_is_silero_speech(recorder, data, *args, **kwargs))
        silence = end_of_speech.decide(is_speech, len(data) // 2)  # on_chunk has heard it
    _date_silence(recorder, silence)
    return is_speech


def _date_silence(recorder: Any, silence: float | None) -> None:
    """Move the loop's silence timer to ``silence`` seconds ago; the loop compares time.time() - start
    with the silence setting right after. Only while the timer runs (it starts on the first silent chunk)."""
    if silence is not None and recorder.speech_end_silence_start:
        recorder.speech_end_silence_start = time.time() - silence


_rt_recording.check_voice_activity = _check_voice_activity
_rt_recording.is_silero_speech = _deactivity_check
