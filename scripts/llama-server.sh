#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp that llama-cpp-python vendors (the same version Parley
# runs in process), then run it on the bundled model, for the side-by-side benchmark:
#
#   scripts/llama-server.sh &            # builds once (about 8 min on 2 cores), then serves on 127.0.0.1:8081
#   .venv/bin/python -m bench --openai-url http://127.0.0.1:8081/v1
#
# Settings (environment):
#   LLAMA_SERVER_DIR  where the source and build live (.cache/llama-server)
#   PORT              port to listen on (8081)
#   PARALLEL          slots served with continuous batching (8)
#   THREADS           threads (2; keep the bot's PARLEY_ENGINE__THREADS the same)
#   CTX               whole context, shared by the slots (16384: 2048 per slot, as Parley's default)
#   MODEL             GGUF to serve (the bundled SmolLM2-135M-Instruct)
# Extra arguments are passed to llama-server.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
DIR=${LLAMA_SERVER_DIR:-.cache/llama-server}
VERSION=$($PY -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
BIN="$SRC/build/bin/llama-server"

if [ ! -x "$BIN" ]; then
    mkdir -p "$DIR"
    if [ ! -d "$SRC" ]; then
        $PY -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR"
        tar -xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
    fi
    # The same portable flags as the Makefile's CMAKE_ARGS; no curl or OpenSSL (the model is a local file).
    cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \
        -DGGML_F16C=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >/dev/null
    cmake --build "$SRC/build" --target llama-server -j"$(nproc)" >/dev/null
fi

MODEL=${MODEL:-$($PY -c 'from bot.bundled import bundled_model_path; print(bundled_model_path())')}
exec "$BIN" -m "$MODEL" --host 127.0.0.1 --port "${PORT:-8081}" --parallel "${PARALLEL:-8}" \
    --threads "${THREADS:-2}" --ctx-size "${CTX:-16384}" "$@"
