"""numpy's BLAS runs in the calling thread: no spinning pool thread competes with the engines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_voicechat_first_keeps_numpy_to_one_blas_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    code = "import voicechat, numpy, os; print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    threads, setting = out.stdout.split()
    assert setting == "1"
    if sys.platform.startswith("linux"):
        assert threads == "1"  # the main thread only: no BLAS pool
