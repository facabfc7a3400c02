#!/bin/bash
# Build llama-cpp-python's libraries with CUDA (sm_90) from the pruned sdist in $1 into $1/llama_cpp/lib.
# Usage: build_llama.sh SRC_DIR BUILD_DIR JOBS   (ARCHS: CUDA architectures, default 90-real = H100/H200)
set -eu
SRC=$1; BUILD=$2; JOBS=${3:-16}
EXTRA=()
CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc)")")
if ! ls "$CUDA_ROOT"/lib64/libcublas.so "$CUDA_ROOT"/targets/x86_64-linux/lib/libcublas.so >/dev/null 2>&1; then
  # no cuBLAS in the toolkit: use a pip wheel's (nvidia-cublas), given by CUBLAS_DIR or found
  CUB=${CUBLAS_DIR:-$(dirname "$(dirname "$(find / -xdev -name 'libcublas.so.1[0-9]*' -path '*nvidia*' 2>/dev/null | head -1)")")}
  echo "cuBLAS from $CUB"
  mkdir -p "$BUILD/cublas-link"
  ln -sf "$(ls "$CUB"/lib/libcublas.so.1* | head -1)" "$BUILD/cublas-link/libcublas.so"
  ln -sf "$(ls "$CUB"/lib/libcublasLt.so.1* | head -1)" "$BUILD/cublas-link/libcublasLt.so"
  EXTRA+=(-DCUDA_cublas_LIBRARY="$BUILD/cublas-link/libcublas.so" -DCUDA_cublasLt_LIBRARY="$BUILD/cublas-link/libcublasLt.so"
          -DCMAKE_CUDA_FLAGS="-I$CUB/include" -DCMAKE_CXX_FLAGS="-I$CUB/include"
          -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath,$CUB/lib")
fi
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${ARCHS:-90-real} -DGGML_CUDA_NCCL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
  "${EXTRA[@]}" ${CMAKE_EXTRA:-}
if [ "${CONFIGURE_ONLY:-0}" = 1 ]; then exit 0; fi
# libllama and the ggml libraries it loads (CUDA backend included); mtmd (multimodal) is not needed here.
cmake --build "$BUILD" -j "$JOBS" --target llama
mkdir -p "$SRC"/llama_cpp/lib
cp -a "$BUILD"/bin/lib*.so* "$SRC"/llama_cpp/lib/
ls -la "$SRC"/llama_cpp/lib
