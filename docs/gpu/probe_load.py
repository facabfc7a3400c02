"""Which start-up order loads a GGUF in this process? Usage: python probe_load.py MODEL MODE
MODE: plain (import llama_cpp, llama_backend_init, load: the product's calls), numpyfirst (numpy and
jinja2 imported before llama_cpp, as `bench llm` does), touch (a backend-registry call before
llama_backend_init), info (llama-cpp-python's logger at INFO)."""
import logging
import sys

model, mode = sys.argv[1], sys.argv[2]
if mode == "numpyfirst":
    import jinja2  # noqa: F401
    import numpy  # noqa: F401
import llama_cpp as ll

logging.getLogger("llama-cpp-python").setLevel(logging.INFO if mode == "info" else logging.ERROR)
if mode == "touch":
    print("supports_gpu_offload", ll.llama_supports_gpu_offload(), flush=True)
ll.llama_backend_init()
params = ll.llama_model_default_params()
params.n_gpu_layers = 2**31 - 1
m = ll.llama_model_load_from_file(model.encode(), params)
print("probe", mode, "loaded", bool(m), flush=True)
