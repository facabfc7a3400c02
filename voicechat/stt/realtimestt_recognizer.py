"""Per-session recognizer over RealtimeSTT's AudioToTextRecorder.

RealtimeSTT gives real voice activity detection (WebRTC + Silero) and
endpointing. Its final-transcription executor is injected, so the recorder
loads no model of its own: every session's audio goes to the one shared STT
scheduler. Partials do not use RealtimeSTT's realtime worker (a polling loop
that costs about a third of a session's CPU and calls the model synchronously):
the audio fed here drives them, through ``UtteranceBuffer``, as fire-and-forget
requests that the scheduler may replace with newer ones.
Facts this relies on (measured, see docs/design.md):

* ``feed_audio(bytes)`` is not resampled: bytes must be 16 kHz mono PCM16.
* Executors must return ``TranscriptionResult``; a plain str breaks its worker.
* Every recorder adds a StreamHandler to the ``realtimestt`` logger and sets
  it to DEBUG; we remove the handler and restore the level right away, or
  handlers leak one per session and debug records cost CPU.
* Never pass ``silero_use_onnx``: either value switches to torch.hub, which
  downloads at run time. The default backend uses the bundled ONNX file.
* The recording worker only calls ``get``/``get_nowait``/``qsize`` on
  ``audio_queue`` (and ``put`` through ``feed_audio``/``flush_audio_input``),
  so a bounded LRU queue can stand in for it.
* ``audio_buffer_metadata`` is read only by pre-roll trimming (off by default);
  with ``None`` there the worker skips it, and trimming would recompute it.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import numpy as np
from RealtimeSTT import AudioToTextRecorder
from RealtimeSTT.core import initialization as _rt_initialization
from RealtimeSTT.core import shutdown as _rt_shutdown
from RealtimeSTT.core import transcription_api as _rt_transcription_api
from RealtimeSTT.core.recording import _AudioDrainMarker
from RealtimeSTT.transcription_engines.base import TranscriptionResult

from voicechat.engines import thread_names
from voicechat.engines.protocols import RecognizerCallbacks, TranscriptionModel
from voicechat.session.bounded_queue import BoundedLRUQueue
from voicechat.stt import realtimestt_vad
from voicechat.stt.endpointing import EndOfSpeech
from voicechat.stt.silero_share import SharedSilero
from voicechat.stt.utterance_buffer import UtteranceBuffer

REALTIMESTT_LOGGER = "realtimestt"


# The realtimestt logger is process-wide, so creating recorders (which touch
# it) is serialised to know exactly which handler each one added.
_LOGGER_LOCK = threading.Lock()


def _prints_to_log(*args: object, **_: object) -> None:
    logging.getLogger(REALTIMESTT_LOGGER).debug(" ".join(str(a) for a in args))


# RealtimeSTT prints to stdout in two modules (for example "RealtimeSTT shutting down"
# at every recorder close), which would tear the terminal UI's screen. A module-level
# ``print`` shadows the builtin for those modules only: the lines go to its logger.
for _module in (_rt_shutdown, _rt_transcription_api):
    _module.print = _prints_to_log  # type: ignore[attr-defined]

# Recorders get their Silero model through the SharedSilero of the recognizer being
# built (set while _LOGGER_LOCK is held, so one recorder is built at a time).
_create_silero = _rt_initialization.create_silero_vad_model
_building_with: SharedSilero | None = None


def _silero_for_recorder(**kwargs: Any) -> Any:
    share = _building_with
    return _create_silero(**kwargs) if share is None else share.model(_create_silero, **kwargs)


_rt_initialization.create_silero_vad_model = _silero_for_recorder


class _RecorderBacklog(BoundedLRUQueue[Any]):
    """The recorder's audio queue: bounded, evicting the oldest chunk, and without a 10 ms poll.

    This is the one queue between the audio's arrival and the voice activity
    detection (the capture stage feeds it from the receiving thread). RealtimeSTT's
    own queue is unbounded and, more than 100 chunks behind, silently discards
    old audio; here the bound is ``backlog_s`` and every evicted chunk is counted
    (as the "capture" queue's evictions, the `dropped_frames` of `bench load`).
    RealtimeSTT's worker waits with ``get(timeout=0.01)`` only to notice shutdown
    between chunks, so every session woke about 100 times a second with nothing
    to do; here the wait is longer, and ``close()`` wakes the worker itself.
    The queue.Queue methods the recorder calls are mapped onto the LRU queue.
    """

    WAIT_S = 0.5

    def get(self, block: bool = True, timeout: float | None = None) -> Any:  # type: ignore[override]
        if not block:
            timeout = 0.0
        elif timeout is not None:
            timeout = max(timeout, self.WAIT_S)
        try:
            return super().get(timeout)
        except TimeoutError:
            raise queue.Empty from None

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def qsize(self) -> int:
        return len(self)

    def empty(self) -> bool:
        return len(self) == 0


class _PatientEvent(threading.Event):
    """A recorder event whose waits are not a 20 ms poll.

    ``text()`` waits for recording to start or stop with ``wait(timeout=0.02)``
    in a loop, only to notice ``abort()`` between waits: 50 idle wake-ups a
    second per session. Here the waits are longer and ``nudge()`` (called by
    ``close()`` before it aborts) wakes the waiter to see the abort at once.
    Relies on ``threading.Event``'s ``_cond`` and ``_flag`` (CPython).
    """

    WAIT_S = 0.5

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            timeout = max(timeout, self.WAIT_S)
        with self._cond:  # type: ignore[attr-defined]
            if not self._flag:  # type: ignore[attr-defined]
                self._cond.wait(timeout)  # type: ignore[attr-defined]
            return bool(self._flag)  # type: ignore[attr-defined]

    def nudge(self) -> None:
        with self._cond:  # type: ignore[attr-defined]
            self._cond.notify_all()  # type: ignore[attr-defined]


def _patient(event: threading.Event) -> _PatientEvent:
    patient = _PatientEvent()
    if event.is_set():
        patient.set()
    return patient


class RealtimeSTTRecognizer:
    """One session's VAD/endpointer; transcription goes to the shared model."""

    def __init__(
        self,
        session_id: str,
        model: TranscriptionModel,
        callbacks: RecognizerCallbacks,
        *,
        language: str = "en",
        partials: bool = True,
        silero_sensitivity: float = 0.4,
        webrtc_sensitivity: int = 3,
        post_speech_silence_s: float = 0.6,
        min_utterance_s: float = 0.3,
        pre_roll_s: float = 1.0,
        log_level: str = "WARNING",
        partial_interval_s: float = 0.3,
        silero: SharedSilero | None = None,
        backlog_s: float = 2.0,
    ) -> None:
        self.session_id = session_id
        self._model = model
        self._callbacks = callbacks
        self._language = language or None
        self._closed = threading.Event()
        self._post_speech_silence_s = post_speech_silence_s
        self._fed_samples = 0  # by feed(), in the capture thread only
        self._final_error: BaseException | None = None
        self._lock = threading.Lock()
        self._partials = (
            UtteranceBuffer(pre_roll_s=min(pre_roll_s, 0.5), interval_s=partial_interval_s) if partials else None
        )
        options: dict[str, Any] = dict(
            use_microphone=False,
            spinner=False,
            no_log_file=True,
            language=language,
            level=getattr(logging, log_level),
            transcription_executor=self._final_executor,
            enable_realtime_transcription=False,
            on_recording_start=self._speech_started,
            on_recording_stop=self._speech_ended,
            # Onset checked on the chunk that shows it, end of speech dated from the last sound
            # (engines/realtimestt_vad.py); both run in the recording thread.
            on_recorded_chunk=self._chunk_arrived,
            on_turn_detection_start=self._silence_started,
            silero_sensitivity=silero_sensitivity,
            webrtc_sensitivity=webrtc_sensitivity,
            # The end of speech is decided by Silero, started at once, and dated from the last voiced
            # frame (EndOfSpeech). RealtimeSTT's default (WebRTC, then 0.16 s of "confirmation") called
            # silence 0.3-0.5 s late: WebRTC's hangover flags near-silent samples as speech for about
            # 0.3 s (docs/benchmarks.md).
            silero_deactivity_detection=True,
            # One ONNX Runtime thread per session's Silero: with RealtimeSTT's default of two, each
            # session gets a pool thread that spin-waits after every 32 ms chunk, which burned most
            # of the CPU of a loaded server (docs/benchmarks.md, "bench load").
            silero_onnx_threads=1,
            deactivity_silence_confirmation_duration=0.0,
            post_speech_silence_duration=post_speech_silence_s,
            min_length_of_recording=min_utterance_s,
            min_gap_between_recordings=0.0,
            handle_buffer_overflow=False,  # the backlog bounds and counts instead (_RecorderBacklog)
            pre_recording_buffer_duration=pre_roll_s,
            ensure_sentence_starting_uppercase=False,
            ensure_sentence_ends_with_period=False,
        )
        self._recorder = _create_recorder(options, log_level, silero)
        self._end_of_speech = EndOfSpeech()
        realtimestt_vad.attach(self._recorder, self._end_of_speech)
        # Before any audio: feed_audio puts here, in Silero's chunks. RealtimeSTT's own overflow check is off.
        self.backlog = _RecorderBacklog(max(1, round(backlog_s / realtimestt_vad.SILERO_CHUNK_S)), "capture")
        self._recorder.audio_queue = self.backlog
        # Per chunk, RealtimeSTT computes an RMS and allocates a metadata record for the pre-roll, which only its
        # pre-roll trimming reads (off unless `pre_recording_buffer_trim_config` enables it; without the records
        # it recomputes them). That was a third of the recording thread's busy time at 30 sessions.
        self._recorder.audio_buffer_metadata = None
        self._recorder.start_recording_event = _patient(self._recorder.start_recording_event)
        self._recorder.stop_recording_event = _patient(self._recorder.stop_recording_event)

    # -- called from RealtimeSTT's threads ----------------------------------------
    def _final_executor(self, audio: np.ndarray, language: str | None = None, **_: Any) -> TranscriptionResult:
        try:
            text = self._model.transcribe(audio, session_id=self.session_id, final=True, language=language)
        except Exception as error:
            # RealtimeSTT passes only the message on (as a bare Exception); next_final raises this
            # one, so the turn's error keeps its kind (timeout, circuit open, failure).
            self._final_error = error
            raise
        return TranscriptionResult(text=text)

    def _chunk_arrived(self, data: bytes) -> None:
        recorder = getattr(self, "_recorder", None)  # None only while the constructor runs
        if recorder is not None:
            realtimestt_vad.on_chunk(recorder, data)

    def _silence_started(self) -> None:
        realtimestt_vad.silence_started(self._recorder)

    def _speech_started(self) -> None:
        realtimestt_vad.speech_started(self._recorder)
        if self._partials is not None:
            with self._lock:
                self._partials.start()
        self._callbacks.on_speech_start()

    def _speech_ended(self) -> None:
        if self._partials is not None:
            with self._lock:
                self._partials.stop()
            self._model.cancel(self.session_id, partials_only=True)
        self._callbacks.on_speech_end(None)

    # -- partials --------------------------------------------------------------
    def _request_partial(self, audio: np.ndarray, utterance: int) -> None:
        def deliver(text: str) -> None:
            with self._lock:
                current = self._partials is not None and self._partials.active and self._partials.utterance == utterance
            if current and text and not self._closed.is_set():
                self._callbacks.on_partial(text)

        self._model.request_partial(self.session_id, audio, deliver, self._language)

    # -- Recognizer protocol ---------------------------------------------------
    def feed(self, pcm16: bytes) -> None:
        if self._closed.is_set():
            return
        self._recorder.feed_audio(pcm16)
        self._fed_samples += len(pcm16) // 2
        realtimestt_vad.flush_if_silence_complete(self._recorder, self._fed_samples, self._post_speech_silence_s)
        if self._partials is not None:
            silent = self._end_of_speech.silence_at(self._fed_samples)[0] is not None  # the turn may be ending
            with self._lock:
                due = self._partials.add(pcm16, silent)
                utterance = self._partials.utterance
            if due is not None:
                self._request_partial(due, utterance)

    def next_final(self) -> str | None:
        """Block in RealtimeSTT until an utterance ends and is transcribed."""
        if self._closed.is_set():
            return None
        try:
            text = self._recorder.text()
        except Exception:
            error, self._final_error = self._final_error, None
            if error is not None:
                raise error from None
            raise
        if self._closed.is_set():
            return None
        return (text or "").strip()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._model.cancel(self.session_id)
        recorder = self._recorder
        recorder.interrupt_stop_event.set()  # what abort() sets first; then wake text() to see it
        recorder.start_recording_event.nudge()
        recorder.stop_recording_event.nudge()
        recorder.abort()
        # Wake the recording worker out of its (long) wait so that it sees it must stop.
        recorder.is_running = False
        recorder.audio_queue.put(_AudioDrainMarker(threading.Event()))
        recorder.shutdown()


def _create_recorder(options: dict[str, Any], log_level: str, silero: SharedSilero | None) -> AudioToTextRecorder:
    global _building_with
    logger = logging.getLogger(REALTIMESTT_LOGGER)
    with _LOGGER_LOCK:
        before = set(logger.handlers)
        _building_with = silero
        try:
            with thread_names.named_while(thread_names.SESSION_VAD):  # its recording thread inherits the name
                return AudioToTextRecorder(**options)
        finally:
            _building_with = None
            for handler in [h for h in logger.handlers if h not in before]:
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(getattr(logging, log_level))


def realtimestt_handler_count() -> int:
    """Handlers on RealtimeSTT's logger (a leak check in tests and /health)."""
    return len(logging.getLogger(REALTIMESTT_LOGGER).handlers)
