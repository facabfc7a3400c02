"""Programs the remote layout's tests start themselves (redis-server, haproxy): found, or why not.

Without them a test skips, saying what to install; with ``VOICECHAT_SERVICE_TESTS=1`` (CI, whose
bootstrap installs them) a missing program fails the test instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED = os.environ.get("VOICECHAT_SERVICE_TESTS") == "1"


def need(program: str, package: str | None = None) -> str:
    """The path of ``program``; skips (or fails where required) when it is not installed."""
    path = shutil.which(program)
    if path is None:
        why = f"{program} is not installed (apt-get install {package or program})"
        if REQUIRED:
            pytest.fail(f"VOICECHAT_SERVICE_TESTS=1 but {why}")
        pytest.skip(f"{why}; set VOICECHAT_SERVICE_TESTS=1 to make this a failure")
    return path
