"""One Silero ONNX session for every session's recorder.

RealtimeSTT gives each recorder its own ONNX Runtime ``InferenceSession`` for
Silero. The session itself is stateless (``RawSileroOnnxVad`` keeps the
recurrent state and the audio context in numpy arrays of its own, and passes
them in on every call), and ONNX Runtime allows concurrent ``run`` calls on
one session. So the first recorder's model is kept as a template and every
later recorder gets a shallow copy of it: the same session, its own state.
Creating and freeing an ORT session per voice session cost memory per session
and left ~100 MB of fragmented native heap after 1000 sessions came and went
(`bench load --churn`).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from RealtimeSTT.core.silero_vad import RawSileroOnnxVad


class SharedSilero:
    """Owned by the recognizer factory of one set of engines; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._templates: dict[tuple[Any, ...], RawSileroOnnxVad] = {}
        self.created = 0  # ORT sessions actually made
        self.shared = 0  # recorders that got a copy

    def model(self, create: Callable[..., Any], **kwargs: Any) -> Any:
        """What ``create(**kwargs)`` would return, sharing the ORT session when it is the raw ONNX backend."""
        key = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "logger"))
        with self._lock:
            template = self._templates.get(key)
            if template is None:
                model = create(**kwargs)
                self.created += 1
                if isinstance(model, RawSileroOnnxVad):
                    self._templates[key] = model
                    return fresh_copy(model)
                return model  # another backend: nothing to share
            self.shared += 1
        return fresh_copy(template)


def fresh_copy(model: RawSileroOnnxVad) -> RawSileroOnnxVad:
    """Same session and input names; its own zeroed state and context buffer."""
    clone = copy.copy(model)
    clone.input_buffer = np.zeros_like(model.input_buffer)
    clone.state = {name: np.zeros_like(value) for name, value in model.state.items()}
    return clone
