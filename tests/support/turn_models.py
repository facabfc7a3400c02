"""Real end-of-turn models for tests: skip cleanly when the file is missing (fail in CI, like tests/real)."""

from __future__ import annotations

from functools import lru_cache

import pytest

from voicechat.models import ensure
from voicechat.stt.smart_turn import SmartTurnModel, default_model_path


def need_real_models() -> None:
    if not ensure.real_models_wanted():
        pytest.skip(f"{ensure.REAL_MODELS_ENV}=0: real-model tests are skipped")


def smart_turn_or_skip() -> SmartTurnModel:
    """The starter set's Smart Turn model (loaded once), or a skip naming the file and the fix."""
    need_real_models()
    path = default_model_path()
    if not path.is_file():
        message = f"{path} is missing; fix: {ensure.FIX_COMMAND}"
        if ensure.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return _loaded()


@lru_cache(maxsize=1)
def _loaded() -> SmartTurnModel:
    return SmartTurnModel()
