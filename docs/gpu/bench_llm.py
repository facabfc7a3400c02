"""`run.py bench llm` as a script. BENCH_MODE: plain (voicechat imports first, as run.py does),
early (llama_cpp imported first), touch (also a backend-registry call first), info (logger at INFO)."""
import logging
import os
import sys

mode = os.environ.get("BENCH_MODE", "plain")
if mode in ("early", "touch", "info"):
    import llama_cpp as ll

    if mode == "touch":
        ll.llama_supports_gpu_offload()
    if mode == "info":
        logging.getLogger("llama-cpp-python").setLevel(logging.INFO)
from voicechat.bench.llm import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
