"""voicechat: a local, multi-user voice assistant."""

import os

__version__ = "0.1.0"

# numpy's OpenBLAS keeps a pool thread per core that spins after every call: a mel
# spectrogram (a small matrix product per partial or final transcript) then cost
# 106 ms of CPU instead of 3.6 ms, taken from the engines. One thread, set before
# numpy is first imported; the user's own setting wins (docs/benchmarks.md, "Real models").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
