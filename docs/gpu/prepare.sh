#!/bin/bash
# Prepare the device check of docs/benchmarks.md "GPU (one H200)" on a machine without a GPU.
# Everything lands in .gpu/ (list it in .git/info/exclude), which run_stt.sh and run_llm.sh read
# on the GPU machine. Each call carries .gpu with only what its script reads (64 MiB in all, the tree
# included): run_stt.sh pyx, wtiny8, audio.npz; run_llm.sh lcp (or llama), synth, the diskcache wheel. The GPU machine used had no network and took 64 MiB of files per call, hence
# the small forms: models with int8 weights or random weights, wheels unpacked and xz-compressed.
#
# Needs: the project's .venv (ctranslate2, gguf, piper), nvcc 13 and cmake here (for the llama.cpp
# build), the starter models in models/. Run from the repository root: bash docs/gpu/prepare.sh
set -euo pipefail
ROOT=$PWD; G=$ROOT/.gpu; T=${TMPDIR:-/tmp}/voicechat-gpu; PY=$ROOT/.venv/bin/python
mkdir -p "$G/kit" "$T"
cp docs/gpu/*.py docs/gpu/*.sh "$G/kit/"
VERSION=$($PY -c "import llama_cpp; print(llama_cpp.__version__)")

# 1. llama-cpp-python's sdist (76 MB), pruned of what a CUDA build of libllama does not read.
$ROOT/.venv/bin/pip download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$T"
rm -rf "$T/lcp" && mkdir "$T/lcp" && tar xzf "$T/llama_cpp_python-$VERSION.tar.gz" -C "$T/lcp" --strip-components=1
( cd "$T/lcp" && rm -rf .git .github docs examples tests docker scripts
  cd vendor/llama.cpp && rm -rf models docs media benches tests examples gguf-py conversion scripts pocs app skills \
     ci requirements grammars ./*.py build-xcframework.sh tools/ui tools/server
  cd ggml/src && rm -rf ggml-cann ggml-et ggml-hexagon ggml-metal ggml-musa ggml-opencl ggml-openvino ggml-sycl \
     ggml-virtgpu ggml-vulkan ggml-webgpu ggml-zdnn ggml-zendnn ggml-hip )
tar cJf "$G/lcp.tar.xz" -C "$T" lcp   # 4 MB: run_llm.sh builds from it if the carried build does not load

# 2. Optional (LOCAL_BUILD=1): build it here for sm_90, about an hour on 2 cores; without it run_llm.sh
#    builds on the GPU machine (3 min 45 s on 16 cores). No cuBLAS and no driver here: the pip cuBLAS
#    wheel and a libcuda.so.1 stub stand in for linking (it builds; its output was not tried on a GPU).
if [ "${LOCAL_BUILD:-0}" = 1 ]; then
$ROOT/.venv/bin/pip download --no-deps --only-binary :all: 'nvidia-cublas<13.1' -d "$T/cublas"
( cd "$T/cublas" && unzip -q -o nvidia_cublas-*.whl )
echo 'void cu_stub(void){}' > "$T/stub.c" && gcc -shared -Wl,-soname,libcuda.so.1 -o "$T/libcuda.so" "$T/stub.c"
CUBLAS_DIR=$T/cublas/nvidia/cu13 \
  CMAKE_EXTRA="-DCUDA_cuda_driver_LIBRARY=$T/libcuda.so -Wno-dev -DGGML_NATIVE=OFF -DGGML_CCACHE=OFF" \
  nice -n 19 bash docs/gpu/build_llama.sh "$T/lcp" "$T/bld" "$(nproc)"
tar cJf "$G/llama.tar.xz" -C "$T/lcp" llama_cpp
fi

# 3. Python packages the GPU machine's image lacks (it has Python 3.12): CTranslate2 (debug info
#    stripped), faster-whisper, diskcache; av is a stub (audio is passed as arrays).
$ROOT/.venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$T/whl" ctranslate2==4.8.5 faster-whisper==1.2.1 diskcache==5.6.3
rm -rf "$T/pyx" && mkdir "$T/pyx" && ( cd "$T/pyx" && unzip -q ../whl/ctranslate2-*.whl && unzip -q ../whl/faster_whisper-*.whl \
  && strip --strip-debug ctranslate2/_ext*.so && mkdir av && echo '"""stub"""' > av/__init__.py )
tar cJf "$G/pyx.tar.xz" -C "$T/pyx" .
cp "$T"/whl/diskcache-*.whl "$G/"

# 4. Models: Whisper tiny.en with int8 weights (39 MB, 28 MB compressed); speech; GGUF headers that
#    the GPU machine fills with random weights (same tensor shapes and types as the real files).
$PY docs/gpu/ct2_int8.py models/faster-whisper-tiny.en "$T/wtiny8"
tar cJf "$G/wtiny8.tar.xz" -C "$T" wtiny8
$PY docs/gpu/make_audio.py "$G/audio.npz"
$PY docs/gpu/make_synth_headers.py models/SmolLM2-135M-Instruct.Q4_1.gguf "$G/synth"

# 5. This checkout's voicechat package (the bench flags and fixes under test), without its assets.
rm -rf "$G/vc" && mkdir "$G/vc" && tar cf - --exclude=voicechat/models/tiny/assets --exclude=voicechat/web \
  --exclude=__pycache__ voicechat | tar xf - -C "$G/vc"
du -sh "$G"/*
