"""How each session listens, from Settings: the recognizer factory, the front end's turn rules and the
end-of-turn judges (``vad.*``, ``stt.*``). Part of the composition root (``assembly.py`` builds the rest).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from voicechat.config.loading import Settings
from voicechat.engines.protocols import Recognizer, RecognizerCallbacks, RecognizerFactory, TranscriptionModel

if TYPE_CHECKING:
    from voicechat.stt.batched_recognizer import TurnSignals
    from voicechat.stt.listening import ListeningRules

log = logging.getLogger(__name__)


def recognizer_factory(settings: Settings, transcriber: TranscriptionModel) -> RecognizerFactory:
    """Each session's recognizer on the configured listening front end (``vad.frontend``)."""
    if settings.vad.frontend == "batched":
        from voicechat.stt.batched_recognizer import BatchedRecognizerFactory
        from voicechat.stt.frontend import ListeningFrontEnd

        return BatchedRecognizerFactory(
            transcriber, language=settings.stt.language, backlog_s=settings.audio.capture_queue_s,
            rules=listening_rules(settings), signals=turn_signals(settings),
            frontend=ListeningFrontEnd(batch_interval_s=settings.vad.batch_interval_s),
        )
    from voicechat.stt.realtimestt_recognizer import RealtimeSTTRecognizer
    from voicechat.stt.silero_share import SharedSilero

    stt, vad = settings.stt, settings.vad
    silero = SharedSilero()  # one ONNX session for every recorder of these engines

    def recognizer(session_id: str, callbacks: RecognizerCallbacks) -> Recognizer:
        return RealtimeSTTRecognizer(
            session_id, transcriber, callbacks,
            language=stt.language, partials=stt.partials, partial_interval_s=stt.partial_interval_s,
            silero_sensitivity=vad.silero_sensitivity, webrtc_sensitivity=vad.webrtc_sensitivity,
            post_speech_silence_s=vad.post_speech_silence_s, min_utterance_s=vad.min_utterance_s,
            pre_roll_s=vad.pre_roll_s, log_level=settings.logging.realtimestt_level, silero=silero,
            backlog_s=settings.audio.capture_queue_s,
        )

    return recognizer


def listening_rules(settings: Settings) -> ListeningRules:
    """The turn rules of the batched front end, from ``vad`` and ``stt`` settings."""
    from voicechat.stt.listening import ListeningRules

    stt, vad = settings.stt, settings.vad
    return ListeningRules(
        onset_probability=1.0 - vad.silero_sensitivity, post_speech_silence_s=vad.post_speech_silence_s,
        min_utterance_s=vad.min_utterance_s, pre_roll_s=vad.pre_roll_s, partials=stt.partials,
        partial_interval_s=stt.partial_interval_s, quiet_dbfs=vad.quiet_dbfs,
        pause_s=0.1 if vad.early_transcript else None, probe_onsets=vad.probe_onsets,
        guess_s=vad.pause_guess_s if vad.early_transcript and vad.pause_guess_s > 0 else None,
    )


def turn_signals(settings: Settings) -> TurnSignals:
    """What ends a turn on the batched front end (``vad.end_of_turn``): the words (the language model's
    probability that the message ends there, or rules) and/or the sound (Smart Turn), else the fixed
    silence. Where the rules need Smart Turn and its file is missing, the fixed silence runs and the log
    says so once."""
    from voicechat.stt.batched_recognizer import TurnSignals
    from voicechat.stt.smart_turn import SmartTurnModel, SmartTurnUnavailable
    from voicechat.stt.transcript_end import words_score
    from voicechat.stt.turn_end import Decision, TurnEndRules, decide
    from voicechat.stt.turn_judge import TurnJudge

    vad = settings.vad
    if vad.end_of_turn == "silence":
        return TurnSignals()
    rules = TurnEndRules(
        min_silence_s=vad.min_silence_s, max_silence_s=max(vad.min_silence_s, vad.max_silence_s),
        signal_timeout_s=vad.turn_signal_timeout_s, audio_threshold=vad.turn_audio_threshold,
        words_threshold=vad.turn_words_threshold, combine=vad.turn_combine, mean_threshold=vad.turn_mean_threshold,
    )

    def judge(silence_s: float, audio: float | None, words: float | None) -> bool:
        return decide(rules, silence_s, audio, words).decision is Decision.END

    use_audio, use_words = rules.uses()
    audio = None
    if use_audio:
        try:
            audio = TurnJudge(SmartTurnModel(vad.turn_model or None))
        except SmartTurnUnavailable as exc:
            log.warning("%s; turns end after vad.post_speech_silence_s = %.2f s", exc, vad.post_speech_silence_s)
            return TurnSignals()
    return TurnSignals(judge, audio, words_score if use_words else None, llm_words=vad.turn_words == "llm")
