"""Programs the tests start themselves (redis-server and haproxy for the remote layout, chromium for the
page): found, or why not.

Without them a test skips, saying what to install; with the flag set (``VOICECHAT_SERVICE_TESTS=1``,
``VOICECHAT_BROWSER_TESTS=1``: CI, whose bootstrap installs them) a missing program fails the test instead.
"""

from __future__ import annotations

import os
import shutil

import pytest


def need(program: str, package: str | None = None, flag: str = "VOICECHAT_SERVICE_TESTS") -> str:
    """The path of ``program``; skips (or fails when ``flag`` is set to 1) when it is not installed."""
    path = shutil.which(program)
    if path is None:
        why = f"{program} is not installed (apt-get install {package or program})"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{flag}=1 but {why}")
        pytest.skip(f"{why}; set {flag}=1 to make this a failure")
    return path
