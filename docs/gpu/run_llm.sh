#!/bin/bash
# On the GPU machine, from the repository root, with .gpu/ carried (lcp.tar.xz or llama.tar.xz, synth/,
# diskcache wheel, vc/, kit/ from prepare.sh; pyx.tar.xz for the stt.device check): llama-cpp-python
# built with CUDA (sm_90), the product's LlamaContext and `bench llm`. Results in $OUT.
export PYTHONUNBUFFERED=1
G=$PWD/.gpu
exec > >(tee $OUT/llm_log.txt) 2>&1
echo "== probe"; date; which nvcc; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
CUDA_LIB=/usr/local/cuda-13.0/targets/x86_64-linux/lib
export LD_LIBRARY_PATH=$CUDA_LIB:${LD_LIBRARY_PATH:-}
mkdir -p /tmp/py
python3 -m zipfile -e $G/diskcache-5.6.3-py3-none-any.whl /tmp/py
[ -f $G/pyx.tar.xz ] && tar xJf $G/pyx.tar.xz -C /tmp/py
export PYTHONPATH=$G/vc:/tmp/py
GPU_OK='import llama_cpp as ll, sys; print("llama_supports_gpu_offload", ll.llama_supports_gpu_offload()); sys.exit(0 if ll.llama_supports_gpu_offload() else 1)'
[ -f $G/llama.tar.xz ] && tar xJf $G/llama.tar.xz -C /tmp/py && ldd /tmp/py/llama_cpp/lib/libggml-cuda.so | grep -E 'not found|cudart|cublas|libcuda|gomp'
if ! python3 -c "$GPU_OK"; then
  echo "== the carried build does not load here: building on the device"; rm -rf /tmp/py/llama_cpp
  mkdir -p /tmp/src && tar xJf $G/lcp.tar.xz -C /tmp/src
  time bash $G/kit/build_llama.sh /tmp/src/lcp /tmp/bld 16 > $OUT/build_log.txt 2>&1 || { tail -40 $OUT/build_log.txt; exit 1; }
  grep -E "cuBLAS from|CUDA Toolkit|CMAKE_CUDA_ARCH|x86 detected|Adding CPU" $OUT/build_log.txt; tail -3 $OUT/build_log.txt
  cp -r /tmp/src/lcp/llama_cpp /tmp/py/
  python3 -c "$GPU_OK" || exit 1
fi
ls -la /tmp/py/llama_cpp/lib
echo "== models (random weights, the real files' tensor shapes and types)"
time python3 $G/kit/synth_gguf.py $G/synth/smollm2.hdr $G/synth/smollm2.json /tmp/smollm2.gguf
time python3 $G/kit/synth_gguf.py $G/synth/qwen1p5b.hdr $G/synth/qwen1p5b.json /tmp/qwen1p5b.gguf
ls -la /tmp/*.gguf
( while true; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | sed "s/^/$(date +%s) /" >> $OUT/gpu_mem.txt; sleep 0.5; done ) &
SAMPLER=$!
echo "== offload (llama.cpp's own log) and GPU/CPU agreement"
timeout 90 python3 $G/kit/offload_check.py /tmp/qwen1p5b.gguf $OUT/offload_qwen1p5b.json 2>&1 | grep -E 'offload|CUDA0|same_leading' | cut -c1-300
if [ -f $G/pyx.tar.xz ]; then
  echo "== stt.device (tiny random Whisper; the H200 machine had no libcublas.so.12)"
  TINY_WHISPER=$PWD/voicechat/models/tiny/assets/tiny-whisper timeout 60 python3 -P - <<'PY'
import logging, os
logging.basicConfig(level=logging.WARNING)
from voicechat.stt.whisper_model import FasterWhisperModel
path = os.environ["TINY_WHISPER"]
m = FasterWhisperModel(path, device="auto", compute_type="auto")
print("auto ->", m.model.model.device, m.model.model.compute_type)
try:
    FasterWhisperModel(path, device="cuda", compute_type="auto")
    print("cuda -> loaded")
except Exception as exc:
    print("cuda ->", type(exc).__name__, str(exc)[:400])
PY
fi
echo "== load probes"
for mode in plain numpyfirst touch info; do timeout 60 python3 -X faulthandler $G/kit/probe_load.py /tmp/smollm2.gguf $mode > /tmp/probe_$mode.txt 2>&1; echo "$mode rc=$? $(grep -E '^probe|Fatal' /tmp/probe_$mode.txt | head -2 | tr '\n' ' ')"; done
grep -B2 -A12 'Fatal' /tmp/probe_numpyfirst.txt | grep -v '^llama_model_loader' | head -30
bench() {  # bench NAME ARGS...: the first start-up order that does not crash
  local name=$1; shift
  for mode in plain early touch info; do
    echo "== bench llm $name (BENCH_MODE=$mode)"
    BENCH_MODE=$mode timeout 150 python3 -X faulthandler $G/kit/bench_llm.py "$@" --json $OUT/bench_$name.json > /tmp/bench_$name.txt 2>&1
    rc=$?; grep -vE '^(llama_|load|print_info|init_tokenizer|sched_|graph_|~llama|ggml_cuda_init|  Device)' /tmp/bench_$name.txt | tail -25
    [ $rc -eq 0 ] && { echo "$name: ok with $mode"; return; }
    echo "$name: rc=$rc with $mode"
  done
}
bench qwen1p5b_gpu --model /tmp/qwen1p5b.gguf --n-gpu-layers -1 --sessions 1,8 --tokens 64 --repeat 2 --turns 6
bench smollm2_gpu --model /tmp/smollm2.gguf --n-gpu-layers -1 --sessions 1,8 --tokens 64 --repeat 2 --turns 6
bench smollm2_cpu --model /tmp/smollm2.gguf --n-gpu-layers 0 --sessions 1,8 --tokens 32 --repeat 1 --turns 4
bench qwen1p5b_cpu --model /tmp/qwen1p5b.gguf --n-gpu-layers 0 --sessions 1 --tokens 16 --repeat 1 --turns 2
kill $SAMPLER
echo "== done"; date
