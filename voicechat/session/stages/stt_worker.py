"""STT stage: waits for the recognizer's final transcripts and hands them on.

The recognizer does VAD, endpointing and (through the shared model)
transcription on its own threads; this worker only blocks on
``next_final`` so that a slow transcription never stalls audio capture.
A failed transcription (an error, a timeout, an open circuit) is reported and
counts as an empty transcript, so the turn settles back to listening.
"""

from __future__ import annotations

from collections.abc import Callable

from voicechat.engines.protocols import Recognizer
from voicechat.session.stages.base import StageHost, Worker


class SttWorker(Worker):
    stage = "stt"

    def __init__(self, host: StageHost, recognizer: Recognizer, on_final: Callable[[str], None]) -> None:
        super().__init__(host)
        self.recognizer = recognizer
        self.on_final = on_final

    def stop(self) -> None:
        super().stop()
        self.recognizer.close()  # unblocks next_final()

    def run_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                text = self.recognizer.next_final()
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                self.host.report_error(self.stage, exc)
                self.on_final("")
                continue
            if text is None:
                return
            if not self.stop_event.is_set():
                self.on_final(text)
