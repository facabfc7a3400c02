#!/bin/bash
# On the GPU machine, from the repository root, with .gpu/ carried (pyx.tar.xz, wtiny8.tar.xz, audio.npz,
# vc/, kit/ from prepare.sh): faster-whisper (CTranslate2 4.8.5 wheel) on CPU and CUDA. Results in $OUT.
export PYTHONUNBUFFERED=1
G=$PWD/.gpu
exec > >(tee $OUT/stt_log.txt) 2>&1
echo "== probe"; date; nproc; grep -m1 'model name' /proc/cpuinfo; head -2 /etc/os-release; python3 -V; which python3
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
nvcc --version | tail -2
ldconfig -p | grep -E 'libcublas|libcudnn|libcudart' | head
timeout 60 find /usr /opt -xdev \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libcudnn.so*' -o -name 'libcudart.so*' \) 2>/dev/null | head -40
python3 -c "import tokenizers, huggingface_hub, onnxruntime, tqdm, psutil, jinja2; print('deps ok', tokenizers.__version__, huggingface_hub.__version__, onnxruntime.__version__)"
echo "== unpack"; mkdir -p /tmp/py && tar xJf $G/pyx.tar.xz -C /tmp/py && tar xJf $G/wtiny8.tar.xz -C /tmp && ls /tmp/py /tmp/wtiny8
export PYTHONPATH=$G/vc:/tmp/py
echo "== A: as shipped (no LD_LIBRARY_PATH changes)"
timeout 150 python3 $G/kit/stt_gpu.py /tmp/wtiny8 $G/audio.npz $OUT/stt_A.json cpu:auto auto:auto cuda:auto cuda:float16 cuda:int8_float16
if grep -q '"ct2_device": "cuda"' $OUT/stt_A.json; then echo "A ran on CUDA: no B needed"; exit 0; fi
echo "== B: libcublas.so.12 -> the CUDA 13 cuBLAS (not a supported setup: a measurement aid)"
C13=$(timeout 60 find /usr /opt -xdev -name 'libcublas.so.13*' 2>/dev/null | head -1)
L13=$(timeout 60 find /usr /opt -xdev -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
echo "cuBLAS 13: $C13 $L13"
mkdir -p /tmp/cub12 && ln -sf $C13 /tmp/cub12/libcublas.so.12 && ln -sf $L13 /tmp/cub12/libcublasLt.so.12
export LD_LIBRARY_PATH=/tmp/cub12:$(dirname $C13):${LD_LIBRARY_PATH:-}
timeout 150 python3 $G/kit/stt_gpu.py /tmp/wtiny8 $G/audio.npz $OUT/stt_B.json auto:auto cuda:auto cuda:float16 cuda:int8_float16 cuda:int8
python3 -c "from voicechat.server.health import gpu_memory; print('health gpu', gpu_memory())"
nvidia-smi --query-gpu=memory.used --format=csv
